"""Run-config helpers: reward specs from strings, the optimizer config, the end-of-run table."""
import pytest

from vtg_jax.rewards import IOU_ONLY, TVG_R1
from vtg_jax.rollout.rewards import reward_spec
from vtg_jax.rollout.samples import rollout_seed
from vtg_jax.run.report import metrics_table
from vtg_jax.run.config import base_config, optim_config


def test_reward_spec_presets_and_weighted_terms():
    assert reward_spec("iou_only") is IOU_ONLY and reward_spec("tvg_r1") is TVG_R1
    assert reward_spec("iou:0.9, format_tvg:0.1").terms == (("iou", 0.9), ("format_tvg", 0.1))
    with pytest.raises(ValueError, match="unknown reward terms"):
        reward_spec("no_such_term:1")
    with pytest.raises(ValueError, match="term:weight"):
        reward_spec("iou:heavy")
    with pytest.raises(ValueError, match="must be one of"):
        reward_spec("tvg")


def test_optim_config_from_config_and_checkpoint_json():
    c = base_config("sft")
    c.steps, c.optim.warmup_steps, c.optim.lr = 10, 50, 2e-3
    o = optim_config(c)
    assert (o.lr, o.total_steps, o.warmup_steps) == (2e-3, 10, 10)  # warmup clamped to the run
    assert optim_config(c.to_dict()) == o  # what a checkpoint's saved config gives back


def test_rollout_seed_depends_on_base_and_step():
    seeds = {rollout_seed(b, s) for b in (0, 1) for s in range(1, 50)}
    assert len(seeds) == 98 and all(0 <= x < 2**31 for x in seeds)


def test_metrics_table_rows_and_baselines():
    m = {"eval/R@0.3": 0.5, "eval/R@0.5": 0.25, "eval/R@0.7": 0.125, "eval/mIoU": 0.3, "eval/n": 8}
    base = {"a": {"R@0.3": 0.1, "R@0.5": 0.0, "R@0.7": 0.0, "mIoU": 0.2},
            "b": {"R@0.3": 0.2, "R@0.5": 0.1, "R@0.7": 0.0, "mIoU": 0.1}}
    table = metrics_table([("teacher", m, "eval/"), ("missing", None, "eval/")], base, title="val").splitlines()
    assert table[2] == "| teacher | 0.500 | 0.250 | 0.125 | 0.300 | 8 |"
    assert table[3].startswith("| baseline: a | 0.100") and table[4].startswith("| baseline: b") and len(table) == 5
