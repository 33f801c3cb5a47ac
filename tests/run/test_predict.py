"""`python -m vtg_jax.predict`: a shipped checkpoint grounds a query in a synthetic video with a known event
(through the command line, with its plot and jsonl), several samples report their spread, and bad input (a
broken video, a too-long one, a bad queries line, an unknown template) gives a message, not a traceback."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from loop_helpers import load_recipe
from vtg_jax.data.synthetic import PRESETS, make_split, render, write_mp4
from vtg_jax.io.span_plot import GT_COLOR, PRED_COLOR
from vtg_jax.run import predict as P
from vtg_jax.run.config import DEMO_TEACHER

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The synthetic benchmark's CPU default (vtg_jax/run/config.py), the setting the shipped teacher was trained on;
# video 3 of this seed's test split: "the blue circle shows up" at 9-11 s of 16 s.
BENCHMARK = dataclasses.replace(PRESETS["default"], min_duration=12, max_duration=16, min_span=1.0, max_span=2.0,
                                grid=1.0, plain_background=True, object_scale=3.0)


@pytest.fixture(scope="module")
def event_video(tmp_path_factory):
    rec, scene = make_split("test", 4, level=1, seed=7, cfg=BENCHMARK)[3]
    path = str(tmp_path_factory.mktemp("videos") / f"{rec.video_id}.mp4")
    write_mp4(render(scene, BENCHMARK), path, BENCHMARK.fps)
    return path, rec


@pytest.fixture(scope="module")
def predictor():
    return P.load_predictor(DEMO_TEACHER)


def _colour_share(png: str, hex_colour: str) -> float:
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    want = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return float((np.abs(img - want).sum(-1) < 30).mean())


def test_command_line_grounds_the_event_and_plots_it(event_video, tmp_path):
    path, rec = event_video
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"query": rec.query, "gt": list(rec.span), "qid": rec.qid}) + "\n")
    png, out = tmp_path / "plot.png", tmp_path / "answers.jsonl"
    run = subprocess.run([sys.executable, "-m", "vtg_jax.predict", f"--checkpoint={DEMO_TEACHER}", f"--video={path}",
                          f"--query={rec.query}", f"--queries={queries}", f"--plot={png}", f"--out={out}"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "span: 9.00 to 11.00 s" in run.stdout and 'answer: "9.0 to 11.0"' in run.stdout
    assert "ground truth: 9.00 to 11.00 s    IoU 1.00" in run.stdout
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["query"] for x in lines] == [rec.query] * 2 and lines[1]["qid"] == rec.qid
    assert all(x["pred"] == [9.0, 11.0] for x in lines) and lines[1]["gt"] == [9.0, 11.0] and lines[1]["iou"] == 1.0
    # the PNG: frames over the axis, the predicted span (orange) and the ground truth (green) drawn
    assert Image.open(png).size[0] > 800
    assert _colour_share(str(png), PRED_COLOR) > 0.003 and _colour_share(str(png), GT_COLOR) > 0.002


def test_several_samples_report_their_spread(predictor, event_video):
    path, rec = event_video
    _, (result,) = P.predict(predictor, path, [P.Query(rec.query, rec.span)], num_samples=6, temperature=1.0)
    assert len(result.answers) == len(result.spans) == 6
    parsed = np.array([s for s in result.spans if s is not None])
    spread = result.spread
    assert spread["samples"] == 6 and spread["parsed"] == len(parsed) > 0
    assert result.span == (np.median(parsed[:, 0]), np.median(parsed[:, 1]))
    assert spread["start_std"] == pytest.approx(parsed[:, 0].std()) and spread["end_max"] == parsed[:, 1].max()
    assert result.iou > 0


def test_sample_spread_and_unparsable_answers():
    s = P.sample_spread([(1.0, 3.0), None, (1.0, 5.0), (2.0, 3.0)])
    assert s["samples"] == 4 and s["parsed"] == 3 and s["reversed"] == 0
    assert P.sample_spread([(8.0, 2.0), (8.0, 9.0)])["reversed"] == 1
    assert (s["start_median"], s["end_median"], s["start_min"], s["end_max"]) == (1.0, 3.0, 1.0, 5.0)
    assert s["pairwise_iou"] == pytest.approx((0.5 + 0.5 + 0.25) / 3)  # (1-3,1-5) (1-3,2-3) (1-5,2-3)
    assert P.sample_spread([None, None]) == {"samples": 2, "parsed": 0, "reversed": 0}
    result = P.QueryResult(P.Query("q", (1.0, 2.0)), ["I cannot tell"], [None], None, None, 0.0)
    assert result.as_json("v.mp4")["pred"] is None


def test_bad_video_is_a_message_not_a_traceback(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    run = subprocess.run([sys.executable, "-m", "vtg_jax.predict", f"--checkpoint={DEMO_TEACHER}",
                          f"--video={broken}", "--query=a red circle appears"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {broken}: ")


def test_bad_inputs_name_the_problem(predictor, event_video, tmp_path):
    path, rec = event_video
    with pytest.raises(P.PredictError, match=r"is too long: its prompt is \d+ tokens \(32 frames of 16.0 s\)"):
        P.predict(predictor, path, [P.Query(rec.query)], max_prompt_tokens=64)
    with pytest.raises(P.PredictError, match="missing file"):
        P.predict(predictor, str(tmp_path / "nope.mp4"), [P.Query(rec.query)])
    with pytest.raises(P.PredictError, match="several samples need a temperature"):
        P.predict(predictor, path, [P.Query(rec.query)], num_samples=4)
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"query": "fine"}\n\n{"query": "x", "gt": [5, 2]}\n')
    with pytest.raises(P.PredictError, match=r"q.jsonl:3: the ground truth \[5.0, 2.0\] is not a span"):
        P.read_queries(str(bad))
    bad.write_text('{"query": "fine"}\nnot json\n')
    with pytest.raises(P.PredictError, match=r"q.jsonl:2: not JSON"):
        P.read_queries(str(bad))
    with pytest.raises(P.PredictError, match="--template: unknown prompt template 'nope'"):
        P.predictor_settings(DEMO_TEACHER, template="nope")


def test_settings_follow_the_checkpoint(tmp_path):
    data, section, source = P.predictor_settings(DEMO_TEACHER)
    assert (data.sampling, data.template, data.max_pixels, data.tokenizer) == ("transformers", "synthetic_short", 3136, "")
    assert section["init_from"] == DEMO_TEACHER and "embedded default" in source
    # a released model's HF directory (it has its own tokenizer): qwen-vl-utils' frames, the default prompt
    hf = tmp_path / "hf"
    hf.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (hf / name).write_text("{}")
    data, _, source = P.predictor_settings(str(hf), template="video_opd")
    assert (data.sampling, data.template, data.tokenizer) == ("qwen_vl_utils", "video_opd", str(hf))
    # a recipe's frames and prompt (TVG-R1's 64 frames), the model's own tokenizer
    data, _, source = P.predictor_settings(str(hf), config=load_recipe("grpo", "tvg_r1"))
    assert (data.nframes, data.template, data.tokenizer, source) == (64, "tvg_r1", str(hf), "the given --config")
    # a run workdir (and one of its checkpoints): the run's own frames and prompt
    run = tmp_path / "run"
    (run / "checkpoints" / "100").mkdir(parents=True)
    from vtg_jax.run.config import base_config

    saved = base_config("sft").to_dict()
    saved["data"]["template"], saved["model"]["dtype"] = "tvg_r1", "bfloat16"
    (run / "run_config.json").write_text(json.dumps(saved))
    for ckpt in (run, run / "checkpoints" / "100"):
        data, section, source = P.predictor_settings(str(ckpt))
        assert data.template == "tvg_r1" and section["dtype"] == "bfloat16" and "run config" in source
