"""`vtg_jax.plan`: slice names, the abstract shapes against the host functions the loop runs, and plans of
the tiny recipes on fake CPU devices (and on a TPU topology when libtpu is installed)."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from vtg_jax.plan.hardware import CHIPS, Chip, Target, parse_target
from vtg_jax.plan.planner import parse_oom

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "run"))
from loop_helpers import load_recipe  # noqa: E402


@pytest.mark.parametrize("name,chips,topology", [
    ("v5p-8", 4, "v5p:2x2x1"), ("v5p-16", 8, "v5p:2x2x2"), ("v5p-128", 64, "v5p:4x4x4"),  # v5p counts cores
    ("v5e-16", 16, "v5e:4x4"), ("v5litepod-32", 32, "v5e:4x8"), ("v6e-8", 8, "v6e:2x4"),
    ("v5p:2x2x2", 8, "v5p:2x2x2"), ("cpu:8", 8, None)])
def test_slice_names(name, chips, topology):
    t = parse_target(name)
    assert (t.num_chips, t.topology) == (chips, topology)
    assert t.platform == ("cpu" if topology is None else "tpu")


@pytest.mark.parametrize("name,match", [("v5p-6", "no standard v5p slice"), ("v5p-7", "2 TensorCores per chip"),
                                        ("v4-8", "unknown topology"), ("tpu", "unknown topology")])
def test_bad_slice_names_say_what_exists(name, match):
    with pytest.raises(ValueError, match=match):
        parse_target(name)


def test_chip_figures_are_the_spec_sheets():
    assert (CHIPS["v5p"].peak_flops, CHIPS["v5p"].hbm_bandwidth) == (459e12, 2765e9)
    assert (CHIPS["v5e"].peak_flops, CHIPS["v5e"].hbm_bandwidth) == (197e12, 819e9)
    assert (CHIPS["v6e"].peak_flops, CHIPS["v6e"].hbm_bandwidth) == (918e12, 1640e9)


def test_compiler_out_of_memory_message_is_parsed():
    msg = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
           "(134.12G) exceeds available HBM (15.75G).")
    asked, available = parse_oom(msg)
    assert asked == int(134.12 * 1024**3) and available == int(15.75 * 1024**3)
    assert parse_oom("INVALID_ARGUMENT: something else") is None


# ------------------------------------------------------------------------- shapes vs the host functions
def _abstract(tree):
    return jax.tree.map(lambda x: (tuple(np.shape(x)), jax.dtypes.canonicalize_dtype(np.asarray(x).dtype)), tree)


def _plan_shapes(tree):
    return jax.tree.map(lambda s: (tuple(s.shape), s.dtype), tree)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_abstract_batches_match_what_the_loop_builds(tmp_path, family):
    """sampler prompts, SFT batch and RL batch of `plan.shapes` == the real host functions' outputs (shapes
    and dtypes) on a real processed batch of the same geometry."""
    from tokenizers import Tokenizer

    from vtg_jax.data.loader import collate, qwen_vl_buckets
    from vtg_jax.data.processor import QwenVLProcessor, build_tiny_tokenizer
    from vtg_jax.models.qwen_vl import get_preset
    from vtg_jax.plan.shapes import VideoGeometry, rl_batch, sampler_prompts, sft_batch
    from vtg_jax.sampling.host import prepare_prompts
    from vtg_jax.train import prepare_batch
    from vtg_jax.rollout.prompts import prompt_only
    from vtg_jax.rollout.packing import build_rl_batch, sampler_inputs

    cfg = get_preset("qwen2.5-vl-tiny" if family == "qwen2_5_vl" else "qwen3-vl-tiny")
    side = 56 if family == "qwen2_5_vl" else 64
    tok = Tokenizer.from_file(build_tiny_tokenizer(str(tmp_path), family) + "/tokenizer.json")
    proc = QwenVLProcessor(cfg, tok)  # Qwen3 interleaves timestamps between temporal groups
    rng = np.random.default_rng(0)
    frames, batch, micro, g, n = 6, 4, 2, 3, 20
    exs = [proc(rng.integers(0, 255, (frames, side, side, 3), np.uint8), np.arange(frames) / 2.0, "a red circle",
                answer="1.5 to 2.0") for _ in range(batch)]
    length, patches = len(exs[0]["input_ids"]), len(exs[0]["pixel_values_videos"])
    grids = exs[0]["video_grid_thw"].reshape(-1, 3)  # one row per video, or per group when interleaved
    grid = (int(grids[:, 0].sum()), int(grids[0, 1]), int(grids[0, 2]))
    loader = collate(exs, qwen_vl_buckets(tokens=(length,), patches=(patches,), groups=(8,)))
    answer = int(exs[0]["loss_mask"].sum())
    geo = VideoGeometry(seconds=3.0, frames=frames, height=side, width=side, groups=int(grid[0]),
                        grid_h=int(grid[1]), grid_w=int(grid[2]), video_tokens=patches // 4,
                        prompt_tokens=length - answer, answer_tokens=answer)

    assert _plan_shapes(sft_batch(cfg, geo, batch, micro)) == _abstract(prepare_batch(cfg, loader, micro))
    assert (_plan_shapes(sft_batch(cfg, geo, batch, 1, vision_shards=2))
            == _abstract(prepare_batch(cfg, loader, 1, vision_shards=2)))
    prompts = prompt_only(loader)
    tokens = np.ones((batch, g, n), np.int32)
    real = build_rl_batch(cfg, prompts, tokens, np.full((batch, g), 5), np.zeros((batch, g, n), np.float32),
                          np.zeros((batch, g), np.float32), ref_logp=np.zeros((batch, g, n)), num_micro=micro,
                          max_new_tokens=n)
    assert _plan_shapes(rl_batch(cfg, geo, batch, g, n, micro, ref_logp=True)) == _abstract(real)
    p = prepare_prompts(cfg, sampler_inputs(prompts))
    real_prompts = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}
    planned, plen = sampler_prompts(cfg, geo, batch)
    assert plen == p.length
    assert _plan_shapes(planned) == _abstract(real_prompts)
    p2 = prepare_prompts(cfg, sampler_inputs(prompts), vision_shards=2)  # videos packed per data shard
    assert (_plan_shapes(sampler_prompts(cfg, geo, batch, vision_shards=2)[0])
            == _abstract({f.name: getattr(p2, f.name) for f in dataclasses.fields(p2)}))


# ------------------------------------------------------------------------------------- whole plans
def _tiny_sft():
    c = load_recipe("sft")
    with c.unlocked():
        c.model.preset, c.model.init_from = "qwen2.5-vl-tiny", ""
        c.batch_size, c.micro_batches = 8, 2
        c.eval.batch_size = 4
        c.mesh.data, c.mesh.fsdp = 1, -1
    return c


def test_attention_flops_are_the_attention_terms_of_the_model_flops():
    from vtg_jax.models.qwen_vl.presets import get_preset
    from vtg_jax.plan import flops

    cfg = get_preset("qwen3-vl-8b")
    pairs = flops.causal_pairs(8192)
    assert flops.text_attention(cfg.text, pairs) == (flops.text_forward(cfg.text, 8192, pairs, 0)
                                                     - flops.text_forward(cfg.text, 8192, 0, 0))
    v = cfg.vision  # Qwen3: every block attends whole frame groups
    assert flops.vision_full_attention(cfg, 4, 16, 30) == v.depth * 4 * v.hidden_size * (4 * 16 * 30) * (16 * 30)
    q25 = get_preset("qwen2.5-vl-7b")  # Qwen2.5: only the full-attention blocks (windows stay in XLA)
    assert flops.vision_full_attention(q25, 2, 8, 8) == len(q25.vision.fullatt_block_indexes) * 4 * 1280 * 128 * 64


def test_shared_prefix_update_flops_run_each_prompt_once():
    """The shared-prefix update's model FLOPs: the repeated layout's minus the G - 1 extra prompt passes
    of every prompt (forward + backward), exactly."""
    from vtg_jax.models.qwen_vl.presets import get_preset
    from vtg_jax.plan import flops

    cfg = get_preset("qwen2.5-vl-7b")
    prompts, rows, plen, new, vision = 2, 16, 4000, 2048, 1e12
    repeated = flops.train_step(cfg, prompts, rows, plen, new, vision, True)
    shared = flops.train_step(cfg, prompts, rows, plen, new, vision, True, shared_prefix=True)
    prompt_pass = flops.text_forward(cfg.text, plen, flops.causal_pairs(plen), 0)
    assert repeated - shared == pytest.approx(3 * (rows - prompts) * prompt_pass, rel=1e-12)


def test_plan_of_a_shared_prefix_grpo_update_on_cpu_devices():
    """The GRPO update with `grpo.shared_prefix` compiles in the planner (cpu:4) and reports the shared
    layout's model FLOPs."""
    from vtg_jax.plan.planner import plan

    c = load_recipe("grpo")
    with c.unlocked():
        c.model.preset, c.model.init_from = "qwen2.5-vl-tiny", ""
        c.batch_size, c.micro_batches = 4, 2
        c.mesh.data, c.mesh.fsdp = 1, -1
    reports = {}
    for shared in (False, True):
        with c.unlocked():
            c.grpo.shared_prefix = shared
        reports[shared] = plan(c, parse_target("cpu:4"), only=("train_step",), log=lambda m: None)
    steps = {k: next(p for p in r.programs if p.name == "train_step") for k, r in reports.items()}
    assert not steps[True].error and steps[True].temp_bytes > 0
    assert 0 < steps[True].model_flops < steps[False].model_flops


def test_plan_of_an_update_split_along_the_sequence():
    """Context parallelism in the planner: the tiny GRPO update with a long video (2,000-token prompts) on
    fsdp 2 x sequence 4 (cpu:8) needs less temporary memory per chip than on fsdp 2 alone (cpu:2), the
    same batch rows per chip, each chip holding a quarter of every sequence."""
    from vtg_jax.plan.planner import plan

    c = load_recipe("grpo")
    with c.unlocked():
        c.model.preset, c.model.init_from = "qwen2.5-vl-tiny", ""
        c.batch_size, c.micro_batches = 2, 1
        c.rollout.num_samples = 2
        c.plan.video_seconds = 240.0
        c.mesh.data, c.mesh.fsdp = 1, 2
    temps = {}
    for sequence, chips in ((1, 2), (4, 8)):
        with c.unlocked():
            c.mesh.sequence = sequence
        report = plan(c, parse_target(f"cpu:{chips}"), only=("train_step",), log=lambda m: None)
        assert report.mesh["sequence"] == sequence and report.geometry["prompt_tokens"] > 2000
        step = report.programs[0]
        assert not step.error and step.model_flops > 0
        temps[sequence] = step.temp_bytes
    assert temps[4] < 0.6 * temps[1], temps


def test_plan_of_the_tiny_sft_recipe_on_eight_cpu_devices():
    """Every program compiles on cpu:8 with its memory and cost; a chip with too little HBM makes each
    program that exceeds it a named refusal with its shortfall (the CLI exits 1 on those)."""
    from vtg_jax.plan.planner import plan
    from vtg_jax.plan.report import format_table

    config = _tiny_sft()
    report = plan(config, parse_target("cpu:8"), log=lambda m: None)
    names = [p.name for p in report.programs]
    assert names == ["train_step", "eval_prefill", "eval_decode"]
    assert report.mesh == {"data": 1, "fsdp": 8, "sequence": 1, "tensor": 1}
    train = report.programs[0]
    assert train.calls == 2 and train.temp_bytes > 0 and train.flops > 0 and train.model_flops > 0
    # resident during the eval decode: the optimizer state it does not take as an argument
    decode = report.programs[2]
    assert decode.calls == config.eval.max_new_tokens and decode.resident_bytes == report.resident["opt_state"]
    # Adam's two float32 moments (+ its step counters, a few scalars)
    assert 0 <= report.resident["opt_state"] - 2 * report.resident["params"] < 64
    assert all(p.fits is None for p in report.programs) and report.totals()["fits"]
    assert "train_step" in format_table(report)
    small = Target("cpu:8", Chip("small", peak_flops=1e12, hbm_bandwidth=1e11, hbm_bytes=train.peak_bytes - 1), None, 8)
    tight = plan(config, small, log=lambda m: None)
    refused = {p.name: p.shortfall_bytes for p in tight.not_fitting()}
    assert refused["train_step"] == 1 and not tight.totals()["fits"]
    assert tight.totals()["roofline_s"] > 0 and 0 < tight.totals()["roofline_mfu"] < 1
    assert "DOES NOT FIT: train_step" in format_table(tight)


def test_plan_cli_writes_plan_json(tmp_path):
    out = tmp_path / "plan.json"
    cmd = [sys.executable, "-m", "vtg_jax.plan", "--config=configs/eval.py", "--topology=cpu:4",
           "--config.model.preset=qwen2.5-vl-tiny", "--config.eval.batch_size=4", f"--out={out}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads(out.read_text())
    assert plan["chips"] == 4 and [p["name"] for p in plan["programs"]] == ["eval_prefill", "eval_decode"]
    assert "eval_decode" in proc.stdout and plan["iteration"]["fits"]


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs the tpu extra (libtpu)")
def test_plan_of_the_tiny_recipe_on_a_tpu_topology(tmp_path):
    """With libtpu, the same programs compile for a v5e slice and report HBM fit and roofline figures."""
    out = tmp_path / "plan.json"
    cmd = [sys.executable, "-m", "vtg_jax.plan", "--config=configs/eval.py", "--topology=v5e-4",
           "--config.model.preset=qwen2.5-vl-tiny", "--config.eval.batch_size=4", f"--out={out}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads(out.read_text())
    assert plan["tpu_topology"] == "v5e:2x2" and plan["iteration"]["fits"]
    assert all(p["fits"] and p["roofline_s"] > 0 for p in plan["programs"])
    # "auto" attention is the splash kernel on a TPU: its FLOPs are added to XLA's count (prefill only;
    # a decode step attends the cache in XLA)
    kernel = {p["name"]: p["kernel_flops"] for p in plan["programs"]}
    assert kernel["eval_prefill"] > 0 and kernel["eval_decode"] == 0
