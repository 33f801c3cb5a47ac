"""Every recipe:arg runs the values it ran before recipes were composed of additive blocks, restricted to
the sections its algorithm has, with None where 0 meant off. recipe_values_before.json holds
`get_config(arg).to_dict()` of each recipe (pipelines: of each stage) as the code before that change made
them, flattened; a config saved then (every section, 0 for off) reads as today's (`upgrade_saved_config`)."""
import json
import pathlib

import pytest

from loop_helpers import load_recipe
from vtg_jax.run.config import ASSETS, OFF, base_config, run_config, sections_of
from vtg_jax.run.resume import _flatten, config_changes, upgrade_saved_config

BEFORE = json.loads((pathlib.Path(__file__).with_name("recipe_values_before.json")).read_text())
# the knobs whose "off" was 0 and is None now
ZERO_TO_NONE = ("grpo.kl_clamp", "grpo.dual_clip", "opd.eps_low", "opd.eps_high", "fkd.top_k", "rollout.top_k",
                "eval.num", "eval.every", "checkpoint.keep", "select.pool", "data.nframes", "data.min_pixels",
                "data.max_pixels", "data.total_pixels", "plan.text_tokens")


def _flat(c) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in _flatten(c.to_dict()).items()}


# keys added since the snapshot, with the value that keeps what the code did then
ADDED = {"grpo.shared_prefix": False, "opd.shared_prefix": False, "mesh.sequence": 1}


def _kept(before: dict, prefix: str = "") -> dict:
    """`before` (one run config, flattened) without the sections its algorithm has not, 0 -> None, plus
    the keys ADDED since."""
    sections = sections_of(before[f"{prefix}algorithm"])
    out = {f"{prefix}{k}": v for k, v in ADDED.items() if k.split(".")[0] in sections}
    for key, value in before.items():
        if key.startswith(prefix) and key[len(prefix):].split(".")[0] in sections:
            off = key[len(prefix):] in ZERO_TO_NONE and value == 0
            out[key] = None if off else value.replace("$ASSETS", ASSETS) if isinstance(value, str) else value
    return out


def _expected(name: str, before: dict) -> dict:
    if not name.startswith("pipeline:"):
        return _kept(before)
    stages = {k.split(".")[1] for k in before if k.startswith("stages.")}
    out = {k: v.replace("$ASSETS", ASSETS) if isinstance(v, str) else v
           for k, v in before.items() if not k.startswith("stages.")}
    for s in stages:
        out.update(_kept(before, f"stages.{s}."))
    return out


def test_zero_to_none_are_off_knobs():
    assert set(ZERO_TO_NONE) <= set(OFF)


@pytest.mark.parametrize("key", sorted(BEFORE))
def test_recipe_values_are_unchanged(key):
    name, _, arg = key.partition(":")
    before = BEFORE[key]
    assert _flat(load_recipe(name, arg)) == _expected(key, before)


@pytest.mark.parametrize("key", sorted(k for k in BEFORE if not k.startswith("pipeline:")))
def test_a_config_saved_before_reads_as_today(key):
    """A run_config.json / checkpoint config of the previous version (every section, 0 for off): no change
    on resume, and `upgrade_saved_config` gives exactly today's config."""
    name, _, arg = key.partition(":")
    saved, nested = {k: v.replace("$ASSETS", ASSETS) if isinstance(v, str) else v for k, v in BEFORE[key].items()}, {}
    for k, v in saved.items():
        *parents, leaf = k.split(".")
        target = nested
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = v
    current = load_recipe(name, arg).to_dict()
    assert config_changes(nested, json.loads(json.dumps(current))) == {}
    assert _flatten(upgrade_saved_config(nested)) == _flatten(json.loads(json.dumps(current)))


def test_sections_are_the_algorithms_own():
    assert "grpo" not in load_recipe("opd") and "teacher" not in load_recipe("sft")
    assert "optim" not in load_recipe("eval") and "reward" not in load_recipe("op_rkd")
    for algorithm in ("sft", "grpo", "opd", "op_rkd", "op_fkd", "tempsamp", "eval", "select"):
        assert tuple(sorted(base_config(algorithm))) == tuple(sorted(sections_of(algorithm)))


def test_a_block_only_adds():
    with pytest.raises(ValueError, match=r"optim\.lr is set by block 0 and again by block 1"):
        run_config("sft", {"optim.lr": 1e-3}, {"optim.lr": 1e-4})
    with pytest.raises(KeyError, match=r"no config key optim\.lrr \(valid: b1, b2, clip_norm"):
        run_config("sft", {"optim.lrr": 1e-3})
    c = run_config("sft", {"teacher.preset": "x", "optim.lr": 1e-4})  # a shared block's teacher: not an sft section
    assert "teacher" not in c and c.optim.lr == 1e-4
