"""`python -m vtg_jax.plan --config=configs/<recipe>.py[:arg] --topology=<slice> [--config.k=v ...]`

Compiles every program of one iteration of the recipe for the slice, without weights or a TPU, prints
the table (see `vtg_jax.plan`), writes `--out` (plan.json) and exits 1 naming each program that does
not fit. Planning for a TPU slice needs libtpu: `pip install -e ".[tpu]"`.
"""
import json
import os
import sys

from vtg_jax.plan.hardware import parse_target, prepare_host


def _flag_arg(argv: list[str], name: str, default: str) -> str:
    """A flag's value read before absl parses the command line."""
    for i, a in enumerate(argv):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return default


# Before jax starts: fake CPU devices or no TPU metadata query; compiling for a TPU needs no TPU backend.
try:
    prepare_host(parse_target(_flag_arg(sys.argv, "topology", "cpu:1")))
except ValueError as e:
    sys.exit(f"error: {e}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vtg_jax.run.cli import set_none, take_config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "a recipe file in configs/, e.g. configs/opd.py:paper",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", "cpu:1", "v5e-16, v5p-32, v6e-8, a libtpu topology (v5p:2x2x2) or cpu:N")
_OUT = flags.DEFINE_string("out", "plan.json", "where to write the plan as JSON ('' = nowhere)")
_PROGRAMS = flags.DEFINE_list("programs", [], "compile only these programs (and the prefills they need)")
_NONE_KEYS: list[str] = []  # --config.<key>=None (vtg_jax.run.cli)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. --config=configs/opd.py:paper")
    from vtg_jax.plan.planner import plan
    from vtg_jax.plan.report import format_table

    set_none(_CONFIG.value, _NONE_KEYS)
    target = parse_target(_TOPOLOGY.value)
    recipe = os.path.basename(_flag_arg(sys.argv, "config", ""))
    report = plan(_CONFIG.value, target, only=tuple(_PROGRAMS.value), recipe=recipe, log=lambda m: print(m, flush=True))
    print(format_table(report))
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(report.to_json(), f, indent=1)
    bad = report.not_fitting()
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    try:
        sys.argv, none_keys = take_config_flags(sys.argv)
    except ValueError as e:
        sys.exit(f"error: {e}")
    _NONE_KEYS.extend(none_keys)
    app.run(main)
