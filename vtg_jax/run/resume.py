"""What a resumed run may change against the config its checkpoint saved, and how a config saved by an
older vtg_jax reads today (`upgrade_saved_config`): the keys added since hold what that code did, the
sections its algorithm no longer has are gone, and a 0 that meant "off" is None.
"""
from __future__ import annotations

import copy
from typing import Any

from vtg_jax.run.config import COMMON_SECTIONS, COMPUTE_KEYS, OFF, SECTIONS, sections_of

# What a resumed run may change without --config.resume_changed_config: how long it runs, how it logs,
# evaluates, checkpoints, lays out devices and reads data, and how the models compute (remat, attention
# kernel, the shared-prefix update's layout: same loss and gradients) — never what it learns from or how
# (optimizer, data, rewards, losses, seed, models). Note:
# `steps` is also the length of the learning-rate schedule, which is recomputed for the new total.
# `random_init` only permits what a preset without init_from does anyway (the weights are restored).
RESUMABLE_CHANGES = ("steps", "resume_changed_config", "log.*", "eval.*", "checkpoint.*", "mesh.*", "plan.*",
                     "distributed.*", "data.read_threads", "data.worker_count", "model.remat",
                     "model.attention_impl", "model.random_init", "teacher.remat", "teacher.attention_impl",
                     "teacher.random_init", "reference.remat", "reference.attention_impl", "grpo.shared_prefix",
                     "opd.shared_prefix")
# The teacher as build_model computed it before its section had these keys.
_OLD_TEACHER = (("random_init", False), ("param_dtype", "float32"), ("remat", "none"), ("attention_impl", "auto"),
                ("rope_index_rule", "original"))


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a.b": leaf} of a nested dict (an empty dict is a leaf)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def upgrade_saved_config(saved: dict) -> dict:
    """A run config saved (JSON) by an older vtg_jax as today's code reads it:

    * the sections its algorithm does not have are dropped (every config held every section before);
    * the keys added since hold what that code did without them: no `random_init` (a preset was
      random-initialised), a teacher computing as build_model's old defaults (float32 parameters, no remat,
      attention "auto", the original rope rule), a GRPO reference computing as `model` (it was built
      from that section), the update repeating each prompt in its G rows (no `shared_prefix`), and no
      context parallelism (`mesh.sequence` 1);
    * a knob of `run.config.OFF` saved as 0 (which meant off) is None.
    Keys present are kept otherwise."""
    out = copy.deepcopy(saved)
    kept = sections_of(out["algorithm"])
    for name in [k for k in out if k not in kept and (k in SECTIONS or k in COMMON_SECTIONS)]:
        del out[name]
    model = out["model"]
    model.setdefault("random_init", False)
    if "reference" in kept:
        out.setdefault("reference", {k: model[k] for k in COMPUTE_KEYS if k in model})
    if "teacher" in kept:
        for key, old_default in _OLD_TEACHER:
            out["teacher"].setdefault(key, old_default)
    for section in ("grpo", "opd"):
        if isinstance(out.get(section), dict):
            out[section].setdefault("shared_prefix", False)
    if isinstance(out.get("mesh"), dict):
        out["mesh"].setdefault("sequence", 1)
    for key in OFF:
        section, leaf = key.split(".")
        values = out.get(section) if section in kept else None
        if isinstance(values, dict) and leaf in values and values[leaf] == 0 and values[leaf] is not False:
            values[leaf] = None
    return out


def config_changes(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (saved value, current value)} of the keys of two JSON run configs that differ,
    outside RESUMABLE_CHANGES ("(absent)" for a key only one of them has). A config saved by older code
    reads as `upgrade_saved_config` says (what that code did; no section its algorithm does not have)."""
    old, new = _flatten(upgrade_saved_config(saved)), _flatten(current)
    allowed = lambda key: any(key == p or (p.endswith(".*") and key.startswith(p[:-1]))  # noqa: E731
                              for p in RESUMABLE_CHANGES)
    return {k: (old.get(k, "(absent)"), new.get(k, "(absent)")) for k in sorted(set(old) | set(new))
            if not allowed(k) and old.get(k, "(absent)") != new.get(k, "(absent)")}
