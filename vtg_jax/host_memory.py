"""Host allocator setting for runs on XLA:CPU: transparent huge pages for glibc malloc.

Why: XLA:CPU allocates each execution's temporaries as one buffer from malloc (2.2 GB for a
forward+backward step of `bench/model_forward.py`'s medium model) and frees it afterwards. glibc
serves a request that large with a fresh `mmap`, so every step faults all of it in again in 4 KiB
pages: about 530k page faults per step there, which cost ~0.9 s of a 3.3 s step on a 2-core machine.
With the glibc tunable `glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc marks its mappings
MADV_HUGEPAGE, the kernel backs them with 2 MiB pages when transparent huge pages are in `madvise`
mode, and the faults drop ~12x (measured: 4.4M -> 0.35M for 8 steps; the step to 2.4-2.6 s). Numerics
are untouched.

glibc reads tunables once at process start, so the only way to apply one from Python is to re-execute
the process with it in the environment: `reexec_with_hugepages()` does that (same interpreter, same
`sys.orig_argv`), once, and only where it helps (Linux, glibc >= 2.35, THP mode `madvise`; with
`always` the kernel already does it, with `never` nothing can). `python -m vtg_jax.main` and the
`bench/` scripts call it first thing; set VTG_JAX_DEFAULT_MALLOC=1 to opt out.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Mapping, Optional

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "VTG_JAX_DEFAULT_MALLOC"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = THP_SETTING) -> Optional[str]:
    """The kernel's transparent-huge-page mode ("always", "madvise", "never"), None if unknown."""
    try:
        with open(path) as f:
            found = re.search(r"\[(\w+)\]", f.read())
    except OSError:
        return None
    return found.group(1) if found else None


def glibc_version() -> Optional[tuple[int, int]]:
    """(major, minor) of the C library when it is glibc, else None (musl, macOS, Windows)."""
    try:
        name = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        return None
    found = re.fullmatch(r"glibc (\d+)\.(\d+).*", name)
    return (int(found.group(1)), int(found.group(2))) if found else None


def hugepage_env(environ: Mapping[str, str], thp: Optional[str], glibc: Optional[tuple[int, int]]
                 ) -> Optional[dict[str, str]]:
    """The environment to re-execute with, or None when the tunable would not change anything
    (already set, opted out, not glibc >= 2.35, or THP not in `madvise` mode)."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if environ.get(OPT_OUT) or thp != "madvise" or glibc is None or glibc < (2, 35):
        return None
    if "glibc.malloc.hugetlb=" in tunables:
        return None  # set by the user (any value) or by our own earlier re-exec
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return env


def hugepages_active(environ: Mapping[str, str] = os.environ) -> bool:
    return TUNABLE in environ.get("GLIBC_TUNABLES", "").split(":")


def allocator_label(environ: Mapping[str, str] = os.environ) -> str:
    """What the benches print about the host allocator this process runs with."""
    return f"huge pages ({TUNABLE})" if hugepages_active(environ) else "glibc default"


def reexec_with_hugepages() -> None:
    """Re-execute this process with `glibc.malloc.hugetlb=1` when that helps (see the module
    docstring); returns normally when nothing is to be done. Call it before starting threads or
    importing jax/torch: the process image is replaced."""
    env = hugepage_env(os.environ, thp_mode(), glibc_version())
    if env is None or not sys.executable or not getattr(sys, "orig_argv", None):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
