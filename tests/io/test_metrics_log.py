"""MetricsLogger: exact jsonl, TensorBoard tags, valid PNGs, resume semantics, multi-host silence, run comparison."""
from __future__ import annotations

import glob
import io
import json
import math
import os
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib import image as mpimg
from tensorboardX.proto import event_pb2

from vtg_jax.io.metrics_jsonl import read_jsonl
from vtg_jax.io.metrics_log import MetricsLogger, tb_tag, to_host_floats
from vtg_jax.io.plots import moving_average, plot_from_jsonl, series_by_key, two_panel_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FakeClock:
    """Monotone clock the test advances by hand, so wall_time in the jsonl is exact."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def synthetic_metrics(step: int) -> dict:
    """Device arrays, numpy and Python floats mixed, as a real step + eval would produce; eval every 10 steps."""
    m = {"loss/total": jnp.float32(1.0 / step), "loss/pg": np.float32(0.5 / step),
         "reward/iou": jnp.asarray(step / 50.0, jnp.float32), "reward/format": 1.0,
         "rl/kl_ref": jnp.float32(0.01 * step), "train/skipped_nonfinite": jnp.int32(step == 7),
         "train/skipped_nonfinite_total": jnp.int32(step >= 7), "data/skipped": 0}
    if step == 7:
        m["loss/total"] = jnp.float32(jnp.nan)
    if step == 8:
        m["rl/kl_ref"] = jnp.float32(jnp.inf)
    if step % 10 == 0:
        m.update({"eval/mIoU": np.float64(step / 100.0), "eval/R@0.5": jnp.float32(step / 80.0)})
    return m


def expected_record(step: int, wall: float) -> dict:
    """What metrics.jsonl must hold for `synthetic_metrics(step)`: float32 values widened, non-finite → null."""
    rec = {"step": step, "wall_time": wall}
    for key, value in synthetic_metrics(step).items():
        x = float(np.asarray(value, dtype=np.float64))
        rec[key] = x if math.isfinite(x) else None
    return rec


def run_steps(logger: MetricsLogger, clock: FakeClock, steps: range) -> None:
    for step in steps:
        clock.t += 2.0
        logger.log(step, synthetic_metrics(step))


def read_events(tb_dir: str) -> list[event_pb2.Event]:
    """Parse TFRecord framing (u64 length, u32 crc, data, u32 crc) of every event file under tb_dir."""
    events = []
    for path in sorted(glob.glob(os.path.join(tb_dir, "events.out.tfevents.*"))):
        data = open(path, "rb").read()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            events.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + length]))
            pos += 12 + length + 4
    return events


def scalars(events: list[event_pb2.Event]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for ev in events:
        for v in ev.summary.value:
            out.setdefault(v.tag, {})[ev.step] = v.simple_value
    return out


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A finished 50-step run with plain-line console output captured (shared: the tests only read it)."""
    clock, stream = FakeClock(), io.StringIO()
    logger = MetricsLogger(tmp_path_factory.mktemp("logged") / "run", total_steps=50, progress=False,
                           stream=stream, clock=clock, print_every_steps=10, print_every_s=1e9)
    run_steps(logger, clock, range(1, 51))
    paths = logger.finish()
    return Path(logger.workdir), paths, stream.getvalue()


def test_metrics_log_jsonl_exact(logged_run):
    workdir, _, _ = logged_run
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 50
    for step, line in enumerate(lines, start=1):
        rec = json.loads(line)  # strict JSON: no NaN/Infinity literals
        assert rec == expected_record(step, 2.0 * step)
        assert list(rec) == list(expected_record(step, 0.0))  # key order preserved
    assert "NaN" not in lines[6] and json.loads(lines[6])["loss/total"] is None
    assert json.loads(lines[7])["rl/kl_ref"] is None  # inf is logged as NaN too
    back = read_jsonl(workdir / "metrics.jsonl")
    assert math.isnan(back[6]["loss/total"]) and back[9]["eval/mIoU"] == 0.1


def test_metrics_log_plain_lines(logged_run):
    _, _, out = logged_run
    lines = out.splitlines()
    assert [ln.split()[1] for ln in lines] == ["1/50", "11/50", "21/50", "31/50", "41/50", "50/50"]
    assert lines[-1].startswith("step 50/50 (100%) | 0:01:40 elapsed, ETA 0:00:00 | loss/total=0.02")
    assert "eval/mIoU=0.5" in lines[-1] and "train/skipped_nonfinite=" not in lines[-1]
    assert "skipped" not in lines[0]
    assert lines[1].endswith("train/skipped_nonfinite_total=1")  # nonzero skip counters are shown


def test_metrics_log_tensorboard_scalars(logged_run):
    workdir, _, _ = logged_run
    tags = scalars(read_events(str(workdir / "tb")))
    expected_tags = {tb_tag(k) for k in synthetic_metrics(10)}
    assert set(tags) == expected_tags and "eval/R_0.5" in tags
    assert sorted(tags["loss/total"]) == list(range(1, 51)) and sorted(tags["eval/mIoU"]) == [10, 20, 30, 40, 50]
    assert math.isnan(tags["loss/total"][7]) and math.isnan(tags["rl/kl_ref"][8])
    assert tags["reward/iou"][25] == pytest.approx(0.5)


def test_metrics_log_pngs_valid(logged_run):
    workdir, paths, _ = logged_run
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["eval.png", "loss.png", "reward.png", "rl_kl.png", "skipped.png"]
    for p in paths:
        assert os.path.dirname(p) == str(workdir / "plots")
        assert open(p, "rb").read(8) == PNG_MAGIC
        assert mpimg.imread(p).shape[:2] == (450, 1200)


def test_metrics_log_one_host_transfer(tmp_path, monkeypatch):
    calls = []
    real = jax.device_get
    monkeypatch.setattr(jax, "device_get", lambda x: (calls.append(1), real(x))[1])
    logger = MetricsLogger(tmp_path, total_steps=3, tensorboard=False, progress=False, stream=io.StringIO())
    for step in (1, 2, 3):
        logger.log(step, synthetic_metrics(step))
    assert len(calls) == 3
    logger.finish(plot=False)


def test_metrics_log_resume_drops_killed_lines(tmp_path):
    clock = FakeClock()
    first = MetricsLogger(tmp_path, total_steps=50, progress=False, stream=io.StringIO(), clock=clock)
    run_steps(first, clock, range(1, 31))  # checkpoint at 20, killed at 30 ...
    first._jsonl.write('{"step": 31, "wall_ti')  # ... mid-write: a torn line
    first._jsonl.flush()
    first._tb._writer.flush()
    clock2 = FakeClock()
    second = MetricsLogger(tmp_path, total_steps=50, start_step=20, progress=False, stream=io.StringIO(),
                           clock=clock2)
    run_steps(second, clock2, range(21, 51))
    second.finish(plot=False)
    recs = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, 51))
    # wall_time continues from the checkpoint's (40 s), not from the killed run's last line (60 s)
    assert [r["wall_time"] for r in recs] == [2.0 * s for s in range(1, 51)]
    assert recs == [expected_record(s, 2.0 * s) for s in range(1, 51)]
    purge = [e for e in read_events(str(tmp_path / "tb")) if e.HasField("session_log")]
    assert [e.step for e in purge] == [1, 21]  # TensorBoard hides the killed run's steps >= 21


def test_metrics_log_read_jsonl_supersedes(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [(1, 1.0), (2, 2.0), (3, 3.0), (3, 3.5), (4, 4.0), (2, 9.0), (3, 10.0), (3, 10.5)]
    path.write_text("".join(json.dumps({"step": s, "wall_time": w, "x/y": w}) + "\n" for s, w in rows)
                    + "garbage\n")
    recs = read_jsonl(path)
    assert [(r["step"], r["x/y"]) for r in recs] == [(1, 1.0), (2, 9.0), (3, 10.0), (3, 10.5)]


def test_metrics_log_non_main_writes_nothing(tmp_path):
    stream = io.StringIO()
    workdir = tmp_path / "host1"
    logger = MetricsLogger(workdir, total_steps=5, is_main_process=False, progress=True, stream=stream)
    out = logger.log(1, synthetic_metrics(1))
    assert out["loss/total"] == 1.0 and logger.finish() == []
    assert not workdir.exists() and list(tmp_path.iterdir()) == [] and stream.getvalue() == ""


def test_metrics_log_values_never_crash(tmp_path):
    with pytest.warns(UserWarning, match="not numeric"):
        out = to_host_floats({"a/vec": jnp.arange(4.0), "a/bool": True, "a/str": "oops", "a/none": None,
                              "a/empty": np.zeros(0), "a/neg_inf": -np.inf})
    assert out["a/vec"] == 1.5 and out["a/bool"] == 1.0 and "a/str" not in out and "a/none" not in out
    assert math.isnan(out["a/empty"]) and math.isnan(out["a/neg_inf"])
    with pytest.raises(ValueError, match="reserved"):
        to_host_floats({"step": 1})


def test_metrics_log_tqdm_bar(tmp_path):
    stream = io.StringIO()
    with MetricsLogger(tmp_path, total_steps=20, progress=True, stream=stream, tensorboard=False) as logger:
        for step in range(1, 21):
            logger.log(step, synthetic_metrics(step))
    out = stream.getvalue()
    assert "20/20" in out and "loss/total=0.05" in out and "eval/mIoU=0.2" in out
    assert os.path.exists(tmp_path / "plots" / "loss.png")


def test_metrics_log_plot_from_jsonl_two_runs(tmp_path):
    for name, scale in (("grpo", 1.0), ("opd", 2.0)):
        clock = FakeClock()
        logger = MetricsLogger(tmp_path / name, total_steps=50, progress=False, stream=io.StringIO(),
                               tensorboard=False, clock=clock)
        for step in range(1, 51):
            clock.t += 60.0 * scale  # minutes per step: the wall-clock axis switches unit
            logger.log(step, synthetic_metrics(step))
        logger.finish(plot=False)
    runs = [tmp_path / "grpo" / "metrics.jsonl", tmp_path / "opd" / "metrics.jsonl"]
    paths = plot_from_jsonl(runs, tmp_path / "report", labels=["GRPO", "OPD"])
    names = sorted(os.path.basename(p) for p in paths)
    assert names == sorted(["compare_eval_R_0.5.png", "compare_eval_mIoU.png", "compare_loss_pg.png",
                            "compare_loss_total.png", "compare_reward_format.png", "compare_reward_iou.png",
                            "compare_rl_kl_ref.png", "compare_train_skipped_nonfinite.png",
                            "compare_train_skipped_nonfinite_total.png",
                            "compare_data_skipped.png"])
    for p in paths:
        assert open(p, "rb").read(8) == PNG_MAGIC and mpimg.imread(p).shape[:2] == (450, 1200)
    # the figure a person reads: title, axis labels with units, one labelled line per run
    series = [series_by_key(read_jsonl(r))["reward/iou"] for r in runs]
    fig = two_panel_figure("reward/iou — 2 runs", [("GRPO", series[0]), ("OPD", series[1])], "reward/iou")
    ax_step, ax_wall = fig.axes
    assert [t.get_text() for t in ax_step.get_legend().get_texts()] == ["GRPO", "OPD"]
    assert ax_step.get_xlabel() == "step" and ax_step.get_ylabel() == "reward/iou"
    assert ax_wall.get_xlabel() == "wall-clock time since start (min)"
    assert fig.get_suptitle() == "reward/iou — 2 runs"
    single = plot_from_jsonl(runs[0], tmp_path / "single")
    assert sorted(os.path.basename(p) for p in single) == ["eval.png", "loss.png", "reward.png", "rl_kl.png",
                                                            "skipped.png"]


def test_metrics_log_moving_average_ignores_nan():
    out = moving_average([1.0, 2.0, float("nan"), 4.0, 5.0], 3)
    np.testing.assert_allclose(out, [1.5, 1.5, 3.0, 4.5, 4.5])
