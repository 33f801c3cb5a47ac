"""vtg_jax.host_memory: when the process is re-executed with glibc's huge-page tunable, and that it is."""
import os
import subprocess
import sys

import pytest

from vtg_jax import host_memory as hm

GLIBC = (2, 36)


def test_env_gets_the_tunable_only_where_it_helps():
    env = hm.hugepage_env({"PATH": "/bin"}, "madvise", GLIBC)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    # other tunables are kept, ours appended
    env = hm.hugepage_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", GLIBC)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert hm.hugepages_active(env)
    assert hm.allocator_label(env) == "huge pages (glibc.malloc.hugetlb=1)"
    assert hm.allocator_label({}) == "glibc default"
    assert hm.hugepage_env({}, "always", GLIBC) is None  # the kernel already backs malloc with huge pages
    assert hm.hugepage_env({}, "never", GLIBC) is None  # nothing can
    assert hm.hugepage_env({}, None, GLIBC) is None  # not Linux / unreadable
    assert hm.hugepage_env({}, "madvise", (2, 34)) is None  # tunable added in glibc 2.35
    assert hm.hugepage_env({}, "madvise", None) is None  # musl, macOS
    assert hm.hugepage_env({hm.OPT_OUT: "1"}, "madvise", GLIBC) is None
    # a user's own value (even 0) wins, and our own re-exec never loops
    assert hm.hugepage_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", GLIBC) is None
    assert hm.hugepage_env({"GLIBC_TUNABLES": hm.TUNABLE}, "madvise", GLIBC) is None


def test_thp_mode_reads_the_bracketed_word(tmp_path):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert hm.thp_mode(str(f)) == "madvise"
    assert hm.thp_mode(str(tmp_path / "missing")) is None


def _child(extra_env: dict[str, str]) -> str:
    code = ("from vtg_jax.host_memory import reexec_with_hugepages; reexec_with_hugepages(); "
            "import os; print(os.environ.get('GLIBC_TUNABLES', ''))")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hm.OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", code], env={**env, **extra_env}, capture_output=True, text=True,
                         check=True, timeout=60)
    return out.stdout.strip()


def test_reexec_puts_the_tunable_in_a_real_process():
    helps = hm.hugepage_env({}, hm.thp_mode(), hm.glibc_version()) is not None
    if not helps:
        pytest.skip(f"no re-exec on this machine (THP {hm.thp_mode()}, glibc {hm.glibc_version()})")
    assert _child({}) == hm.TUNABLE
    assert _child({hm.OPT_OUT: "1"}) == ""
