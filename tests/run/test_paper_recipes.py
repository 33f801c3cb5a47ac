"""One update of every paper recipe with its paper-scale knobs on the tiny presets.

The paper configs (`configs/<recipe>.py:<paper arg>`) set what a pod run computes with: remat "full" on the
policy, a frozen vision tower, bfloat16 activations, bfloat16 frozen models (teacher / reference), the
paper's prompt template, answer format, reward, KL and group size. Those stay; only what a CPU cannot
afford is shrunk (tiny presets of the recipe's family, random init, synthetic videos of a few tokens
per frame, short answers, one step). Remat combined with a frozen tower once failed to trace in every
recipe (flax TraceContextError in the tower's rematerialised block); this runs each recipe's iteration:
rollout, scoring, update.
"""
from __future__ import annotations

import numpy as np
import pytest

from loop_helpers import load_recipe, shrink

# (recipe, paper arg, metric only that objective logs)
PAPER_RECIPES = [
    ("sft", "tvg_r1", "loss/nll"),
    ("grpo", "video_opd", "loss/pg"),
    ("grpo", "tvg_r1", "loss/pg"),
    ("grpo", "time_r1", "rl/kl_ref"),
    ("tempsamp", "paper", "rl/off_policy_ratio"),
    ("longvtg", "paper", "rl/kl_ref"),
    ("opd", "paper", "rl/reverse_kl"),
    ("op_rkd", "paper", "rl/reverse_kl"),
    ("op_fkd", "paper", "rl/forward_kl"),
]
TINY = {"qwen2_5_vl": "qwen2.5-vl-tiny", "qwen3_vl": "qwen3-vl-tiny"}
FRAME_PIXELS = {"qwen2_5_vl": 56 * 56, "qwen3_vl": 64 * 64}  # 4 patches per frame (one merge unit)


def paper_recipe_on_tiny_models(name: str, arg: str, cache_dir: str):
    """configs/<name>.py:<arg> with every compute knob kept, on the tiny preset of its model family."""
    from vtg_jax.models.qwen_vl.presets import get_preset

    c = load_recipe(name, arg)
    family = get_preset(c.model.preset).family
    knobs = {k: c.model[k] for k in ("remat", "freeze_vision", "dtype", "param_dtype")}
    frozen = {s: {k: c[s][k] for k in ("dtype", "param_dtype")} for s in ("teacher", "reference") if s in c}
    short = {"rollout__max_new_tokens": 16} if "rollout" in c else {}  # SFT samples nothing
    c = shrink(c, cache_dir, tiny_models=True, steps=1, **short)
    with c.unlocked():
        c.model.preset = TINY[family]
        if "teacher" in c:
            c.teacher.preset = TINY[family]
        c.data.synthetic.enabled = True
        c.data.min_pixels = c.data.max_pixels = FRAME_PIXELS[family]
        c.data.total_pixels = None
        c.data.nframes = None if c.data.nframes is None else min(int(c.data.nframes), 8)
        c.batch_size = 2 * int(c.micro_batches)
        c.checkpoint.export_hf = False
        c.checkpoint.async_save = False
        c.eval.splits = ()
    assert {k: c.model[k] for k in knobs} == knobs  # the paper's compute knobs survive the shrinking
    assert {s: {k: c[s][k] for k in ("dtype", "param_dtype")} for s in frozen} == frozen
    return c


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("paper_cache"))


@pytest.mark.parametrize("name,arg,metric", PAPER_RECIPES, ids=[f"{n}:{a}" for n, a, _ in PAPER_RECIPES])
def test_paper_recipe_takes_a_step_with_its_paper_knobs(tmp_path, cache, name, arg, metric):
    from vtg_jax.run.loop import train

    c = paper_recipe_on_tiny_models(name, arg, cache)
    assert c.model.remat == "full" and c.model.freeze_vision and c.model.dtype == "bfloat16"
    s = train(c, str(tmp_path / "run"))
    m = s["last_metrics"]
    assert s["finished"] and s["steps"] == 1, s
    assert np.isfinite(m["loss/total"]) and m["train/skipped_nonfinite_total"] == 0, m
    assert metric in m, sorted(m)
    if name == "tempsamp":  # the ground-truth row's ratio is 1 by construction (TempSamp-R1 §3.2)
        assert m["rl/off_policy_ratio"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name,arg,section", [("longvtg", "paper", "grpo"), ("opd", "paper", "opd")],
                         ids=["longvtg:paper", "opd:paper"])
def test_shared_prefix_update_with_the_paper_knobs(tmp_path, cache, name, arg, section):
    """The shared-prefix update under the paper knobs (bfloat16 activations, remat, frozen tower; LongVTG-R1's
    token-aware KL to a bfloat16 reference, Video-OPD's bfloat16 teacher): the step's loss equals the
    repeated layout's (same rollouts: the sampler does not change) to bfloat16 precision."""
    from vtg_jax.run.loop import train

    losses = {}
    for shared in (False, True):
        c = paper_recipe_on_tiny_models(name, arg, cache)
        with c.unlocked():
            c[section].shared_prefix = shared
        s = train(c, str(tmp_path / f"run_{shared}"))
        m = s["last_metrics"]
        assert s["finished"] and m["train/skipped_nonfinite_total"] == 0, m
        losses[shared] = m["loss/total"]
    assert np.isfinite(losses[True]) and losses[True] == pytest.approx(losses[False], rel=1e-2, abs=0)
