"""The training loop end to end on the synthetic benchmark with the tiny preset: every recipe runs,
SFT's loss falls and GRPO's reward rises, evaluation / predictions / HF export, resume after SIGKILL is
bitwise, and bad videos are skipped and counted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from loop_helpers import REPO, load_recipe, read_metrics, tiny

RECIPES = ("sft", "grpo", "opd", "op_rkd", "op_fkd", "tempsamp", "longvtg", "eval", "select")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One synthetic dataset (generated and extracted once) shared by the module's runs."""
    from vtg_jax.run.data_setup import prepare_synthetic

    path = str(tmp_path_factory.mktemp("cache"))
    c = tiny("sft", path)
    prepare_synthetic(c.data, "qwen2_5_vl", path, progress=False)
    return path


def _mean(rows, key, sl):
    vals = [r[key] for r in rows if r.get(key) is not None][sl]
    return float(np.mean(vals))


# ------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_defaults_and_lock(name):
    c = load_recipe(name)
    assert c.data.synthetic.enabled and c.data.fps == 2.0
    with pytest.raises((AttributeError, KeyError)):
        c.optim.lrr = 1.0  # locked: a typo fails loudly
    with pytest.raises(ValueError, match="unknown"):
        load_recipe(name, "no_such_arg")


@pytest.mark.parametrize("name,arg", [("opd", "paper"), ("op_rkd", "paper"), ("op_fkd", "paper"),
                                      ("grpo", "video_opd"), ("grpo", "tvg_r1"), ("grpo", "time_r1"),
                                      ("tempsamp", "paper"), ("longvtg", "paper"), ("sft", "tvg_r1")])
def test_paper_presets_carry_paper_hyperparameters(name, arg):
    c = load_recipe(name, arg)
    assert c.optim.lr == 1e-6 and not c.data.synthetic.enabled and c.data.fps == 2.0
    assert c.model.init_from == ""  # the user's checkpoints, never the tiny demo's
    assert "teacher" not in c or c.teacher.init_from == ""
    assert c.model.preset.startswith(("qwen2.5-vl-7b", "qwen3-vl-8b"))
    if name in ("opd", "op_rkd", "op_fkd"):  # Video-OPD §4.1
        assert (c.model.preset, c.teacher.preset, c.batch_size) == ("qwen3-vl-8b", "qwen3-vl-32b", 32)
        assert c.data.max_frames == 768
    if (name, arg) == ("grpo", "video_opd"):  # App. D.1: batch 32, 8 rollouts
        assert (c.batch_size, c.rollout.num_samples, c.reward) == (32, 8, "iou_only")
    if (name, arg) == ("grpo", "tvg_r1"):  # §4.1: beta 0, 0.9 tIoU + 0.1 format, 64 frames, 600 steps
        assert (c.grpo.beta, c.grpo.kl, c.reward, c.data.nframes, c.steps) == (0.0, "none", "tvg_r1", 64, 600)
    if name == "longvtg":  # §3.2: beta_text 0.04, beta_time 0; CenDist reward
        assert (c.grpo.kl, c.grpo.beta_text, c.grpo.beta_time, c.reward) == ("token_aware", 0.04, 0.0, "longvtg_r1")
    if name == "tempsamp":  # §4: G = 3 on-policy + 1 off-policy; App. B: 1 x 4 GPUs x 2 accumulation
        assert (c.rollout.num_samples, c.batch_size, c.micro_batches, c.tempsamp.mode) == (4, 8, 2, "shaping")
    if (name, arg) == ("sft", "tvg_r1"):  # App. B: batch 8
        assert c.batch_size == 8


def test_cli_rejects_misspelled_key(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vtg_jax.main", "--config=configs/sft.py", f"--workdir={tmp_path}",
                          "--config.optim.lrr=1e-3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "lrr" in out.stderr


# ------------------------------------------------------------------------------------- objectives
def test_sft_loss_falls_and_run_outputs(tmp_path, cache):
    from vtg_jax.run.loop import train

    wd = str(tmp_path / "sft")
    s = train(tiny("sft", cache, steps=40, optim__lr=1e-2, optim__warmup_steps=5, eval__every=20,
                   eval__at_start=True, log__plots=True), wd)
    rows = [r for r in read_metrics(wd) if "loss/total" in r]
    assert len(rows) == 40 and _mean(rows, "loss/total", slice(-5, None)) < 0.7 * _mean(rows, "loss/total", slice(0, 5))
    assert s["finished"] and s["steps"] == 40 and s["skipped_updates"] == 0
    for key in ("R@0.3", "R@0.5", "R@0.7", "mIoU"):
        assert 0.0 <= s["eval"][f"eval/{key}"] <= 1.0
    assert sorted(os.listdir(os.path.join(wd, "predictions"))) == [f"val_step{s}.{ext}" for s in (0, 20, 40)
                                                                     for ext in ("html", "jsonl")]
    preds = [json.loads(x) for x in open(os.path.join(wd, "predictions", "val_step40.jsonl"))]
    assert len(preds) == 4 and {"qid", "answer", "pred", "iou", "gt"} <= set(preds[0])
    assert os.path.isfile(os.path.join(wd, "hf", "config.json")) and s["plots"]
    assert any(p.endswith("loss.png") for p in s["plots"]) and os.listdir(os.path.join(wd, "tb"))


def test_eval_recipe_reads_run_dir_and_hf_export(tmp_path, cache):
    """configs/eval.py on one of our run workdirs (its latest checkpoint) and on its HF export agree."""
    from vtg_jax.run.evaluate import evaluate_checkpoint
    from vtg_jax.run.loop import train

    wd = str(tmp_path / "run")
    train(tiny("sft", cache, steps=6, optim__lr=1e-2), wd)
    got = {}
    for kind, path in (("run", wd), ("hf", os.path.join(wd, "hf"))):
        c = tiny("eval", cache, eval__checkpoint=path, eval__splits=("val", "test"))
        got[kind] = evaluate_checkpoint(c, str(tmp_path / f"eval_{kind}"))
    assert got["run"]["val"]["model"] == got["hf"]["val"]["model"]
    assert got["run"]["test"]["model"]["n"] == 4 and "best_constant" in got["run"]["val"]["baselines"]
    assert os.path.isfile(tmp_path / "eval_hf" / "predictions" / "test_eval.jsonl")
    # next to each jsonl its page: one row per query, with frames from the run's store
    preds = [json.loads(x) for x in open(tmp_path / "eval_hf" / "predictions" / "test_eval.jsonl")]
    page = (tmp_path / "eval_hf" / "predictions" / "test_eval.html").read_text()
    assert page.count('<tr class="row') == len(preds) == 4 and all(p["qid"] in page for p in preds)
    assert page.count('src="data:image/jpeg;base64,') == 4 * 4 and "R@0.5" in page


def test_eval_recipe_picks_a_checkpoint_step_and_exports_it(tmp_path, cache):
    """`eval.checkpoint=<run>/checkpoints/<step>` loads that kept step, not the latest, and `eval.export_hf`
    writes it as an HF directory that loads back to the same parameters; a step not kept is a clear error."""
    from flax import nnx

    from vtg_jax.run.evaluate import evaluate_checkpoint
    from vtg_jax.run.loop import train
    from vtg_jax.run.model_setup import build_model
    from vtg_jax.run.config import base_config

    wd = str(tmp_path / "run")
    train(tiny("sft", cache, steps=6, optim__lr=1e-2, checkpoint__every=3, checkpoint__keep=3), wd)
    step3 = os.path.join(wd, "checkpoints", "3")
    c = tiny("eval", cache, eval__checkpoint=step3, eval__splits=("val",), eval__export_hf=True)
    out = evaluate_checkpoint(c, str(tmp_path / "eval"))
    assert out["hf_export"] == str(tmp_path / "eval" / "hf") and out["val"]["model"]["n"] == 4

    def section(path):
        return dict(base_config("eval").model.to_dict(), init_from=path)

    def params(path):
        return jax.tree.leaves(nnx.state(build_model(section(path), seed=0), nnx.Param))

    exported, at3, latest = params(out["hf_export"]), params(step3), params(wd)
    assert all(np.array_equal(a, b) for a, b in zip(exported, at3))
    assert not all(np.array_equal(a, b) for a, b in zip(at3, latest))  # 3 more updates at lr 1e-2 moved it
    with pytest.raises(FileNotFoundError, match="no checkpoint 4: kept"):
        build_model(section(os.path.join(wd, "checkpoints", "4")), seed=0)


def _toy_reward_term():
    """Reward: fraction of the completion's characters that are the digit '1' (a target a few GRPO
    steps can move from random init, unlike IoU, which is 0 for every random answer)."""
    from vtg_jax.rewards import TERMS, register_term

    if "test_ones" not in TERMS:
        register_term("test_ones", lambda b: np.asarray([c.count("1") / max(len(c), 1) for c in b.completions]))


def test_grpo_raises_mean_reward(tmp_path, cache):
    from vtg_jax.run.loop import train

    _toy_reward_term()
    wd = str(tmp_path / "grpo")
    train(tiny("grpo", cache, steps=16, batch_size=4, rollout__num_samples=4, reward="test_ones:1",
               optim__lr=2e-2, optim__warmup_steps=0, eval__splits=()), wd)
    rows = read_metrics(wd)
    first, last = _mean(rows, "reward/total", slice(0, 4)), _mean(rows, "reward/total", slice(-4, None))
    assert last > first + 0.05, (first, last)


# OPD's target (reverse KL to the teacher) is checked at the step level (tests/train/test_rl_distill.py,
# exact KL, 16 samples per prompt); in this loop (one rollout per video, Adam, random tiny models) it is
# noise-dominated over a test's few steps, so here OPD is checked to run end to end.
# Slow: every algorithm runs one paper-knob step in the default suite (tests/run/test_paper_recipes.py).
@pytest.mark.slow
@pytest.mark.parametrize("name", ["opd", "op_rkd", "op_fkd", "tempsamp", "longvtg"])
def test_other_recipes_run_end_to_end(tmp_path, cache, name):
    from vtg_jax.run.loop import train

    s = train(tiny(name, cache, steps=2), str(tmp_path / name))
    m = s["last_metrics"]
    assert s["finished"] and np.isfinite(m["loss/total"]) and m["train/skipped_nonfinite_total"] == 0
    assert {"opd": "rl/reverse_kl", "op_rkd": "rl/reverse_kl", "op_fkd": "rl/forward_kl", "tempsamp": "rl/off_policy_ratio",
            "longvtg": "rl/kl_ref"}[name] in m
    if name == "tempsamp":
        assert m["rl/off_policy_ratio"] == pytest.approx(1.0, abs=1e-6)


def test_a_run_with_context_parallelism(tmp_path, cache):
    """LongVTG-R1's recipe (GRPO, token-aware KL to a reference, shared-prefix update) through the loop on
    fsdp 2 x sequence 2 x tensor 2 (8 fake devices): rollout, reference scoring, update, checkpoint and
    evaluation run with every sequence split over 2 chips; the update's first-step log-probs equal the
    rollout's (old_logp comes from the same weights), as on one device."""
    from vtg_jax.run.loop import train

    s = train(tiny("longvtg", cache, steps=2, mesh__data=1, mesh__fsdp=2, mesh__sequence=2, mesh__tensor=2,
                   grpo__shared_prefix=True), str(tmp_path / "cp"))
    m = s["last_metrics"]
    assert s["finished"] and np.isfinite(m["loss/total"]) and m["train/skipped_nonfinite_total"] == 0
    assert np.isfinite(m["rl/kl_ref"])
    first = read_metrics(str(tmp_path / "cp"))[0]
    assert first["pg/ratio_mean"] == pytest.approx(1.0, abs=1e-4)


# ----------------------------------------------------------------------------------- robustness
def _cli(workdir: str, cache: str, steps: int) -> list[str]:
    return [sys.executable, "-m", "vtg_jax.main", "--config=configs/grpo.py", f"--workdir={workdir}",
            "--config.model.preset=qwen2.5-vl-tiny", f"--config.data.cache_dir={cache}",
            "--config.data.synthetic.preset=short", "--config.data.synthetic.num_train=16",
            "--config.data.synthetic.min_duration=6", "--config.data.synthetic.max_duration=8",
            "--config.data.synthetic.min_span=1.0", "--config.data.synthetic.max_span=2.0",
            "--config.data.synthetic.num_val=8", "--config.data.synthetic.num_test=4", f"--config.steps={steps}",
            "--config.batch_size=4", "--config.rollout.num_samples=2", "--config.rollout.max_new_tokens=8",
            "--config.eval.splits=()", "--config.checkpoint.every=2", "--config.checkpoint.async_save=False",
            "--config.log.progress=False", "--config.log.plots=False", "--config.optim.lr=1e-2",
            "--config.reward=iou:1.0,format_tvg:0.5"]


@pytest.mark.slow  # ~4 min; bitwise resume after a fallback is in the default suite (test_reliability.py)
def test_resume_after_sigkill_is_bitwise(tmp_path, cache):
    """8 GRPO steps uninterrupted vs SIGKILL after step 5 then the same command again: every logged
    metric (loss, rewards, KL, grad norm, the batch's record crc) is identical at every step."""
    steps = 8
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(_cli(full, cache, steps), cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(_cli(killed, cache, steps), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(os.path.join(killed, "metrics.jsonl")) and any(
                r["step"] >= 5 for r in read_metrics(killed)):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    subprocess.run(_cli(killed, cache, steps), cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    a, b = read_metrics(full), read_metrics(killed)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, steps + 1))
    for ra, rb in zip(a, b):
        for key in ra:
            if key.startswith("time/") or key in ("wall_time", "data/batches"):
                continue
            assert ra[key] == rb[key], (ra["step"], key, ra[key], rb[key])


def test_corrupt_and_missing_videos_train_to_end(tmp_path, cache):
    """Records whose video is corrupt (extraction error) or missing (no file) are skipped and counted
    by the loader; the run finishes and reports them."""
    from vtg_jax.data.extract import extract
    from vtg_jax.data.records import GroundingRecord, read_jsonl, write_jsonl
    from vtg_jax.run.data_setup import _cache_key
    from vtg_jax.run.loop import train

    c = tiny("sft", cache)
    src = os.path.join(cache, _cache_key(c.data.synthetic, "qwen2_5_vl", c.data))
    videos = tmp_path / "videos"
    videos.mkdir()
    train_recs = list(read_jsonl(os.path.join(src, "train.jsonl")))[:8]
    for r in train_recs:
        os.symlink(os.path.join(src, "videos", r.video_id + ".mp4"), videos / (r.video_id + ".mp4"))
    (videos / "corrupt.mp4").write_bytes(os.urandom(4096))
    stats = extract(str(videos), str(tmp_path / "store"), family="qwen2_5_vl", sampling="transformers",
                    min_pixels=3136, max_pixels=3136, progress=False)
    assert stats["errors"] == 1
    bad = [GroundingRecord(video_id=v, duration=14.0, query="a red circle appears", spans=((2.0, 3.0),),
                           qid=f"bad_{v}", source="test") for v in ("corrupt", "missing")]
    write_jsonl(train_recs + bad, str(tmp_path / "train.jsonl"))
    write_jsonl(train_recs[:4], str(tmp_path / "val.jsonl"))
    cfg = tiny("sft", cache, steps=6, batch_size=4, data__synthetic__enabled=False,
               data__train=str(tmp_path / "train.jsonl"), data__val=str(tmp_path / "val.jsonl"),
               data__frame_store=str(tmp_path / "store"))
    s = train(cfg, str(tmp_path / "run"))
    assert s["finished"] and s["steps"] == 6
    # 6 batches of 4 good examples = 24 good reads = 3 epochs of 8, each epoch meeting both bad records.
    assert s["data"]["data/skipped"] >= 4 and s["data"]["data/skipped/transform_error"] == s["data"]["data/skipped"]
    assert s["last_metrics"]["data/skipped"] == s["data"]["data/skipped"]
