"""What every launcher shares: the one command each worker runs and how env vars prefix it.

Launchers only differ in how they reach the workers; the worker command is identical everywhere so
a run that works on one host works on a pod (the process's role comes from env vars that
`vtg_jax.parallel.distributed.maybe_initialize_distributed` reads).
"""
from __future__ import annotations

import shlex
from typing import Mapping, Sequence

MODULE = "vtg_jax.main"


def worker_argv(config: str, workdir: str, overrides: Sequence[str] = (), python: str = "python") -> list[str]:
    """`python -m vtg_jax.main --config=... --workdir=... [--config.key=value ...]`."""
    return [python, "-m", MODULE, f"--config={config}", f"--workdir={workdir}", *overrides]


def env_prefix(env: Mapping[str, str]) -> str:
    """`K=V K2=V2` (shell-quoted, in the given order) to put before a command."""
    return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())


def shell_command(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """One shell line: optional `cd`, env assignments, the quoted argv."""
    parts = []
    if cwd:  # Keep a leading `~/` unquoted so the remote shell expands it.
        home, rest = ("~/", cwd[2:]) if cwd.startswith("~/") else ("", cwd)
        parts.append(f"cd {home}{shlex.quote(rest)} &&")
    if env:
        parts.append(env_prefix(env))
    parts.append(shlex.join(argv))
    return " ".join(parts)


def flag_overrides(items: Sequence[str]) -> list[str]:
    """`config.seed=1` or `--config.seed=1` → `--config.seed=1` (extra flags for vtg_jax.main)."""
    return [item if item.startswith("--") else f"--{item}" for item in items]
