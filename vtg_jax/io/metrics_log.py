"""Training-loop logging a person can read: progress bar, plain lines, TensorBoard, metrics.jsonl, PNG plots.

    logger = MetricsLogger(workdir, total_steps=cfg.steps, start_step=restored_step,
                           is_main_process=jax.process_index() == 0)
    for step in range(restored_step + 1, cfg.steps + 1):
        state, metrics = train_step(state, frozen, batch)
        logger.log(step, metrics)        # one jax.device_get for the whole dict
    paths = logger.finish()              # workdir/plots/*.png

Why one host transfer per call: every `float(x)` on a device array is a blocking round trip; fetching
the whole flat dict with one `jax.device_get` costs one sync per logged step, however many metrics.

metrics.jsonl format: one JSON object per `log` call, `{"step": int, "wall_time": float, "<key>": value…}`,
keys in the order given. Non-finite values (NaN, ±inf) become NaN in TensorBoard and `null` in the jsonl
(strict JSON that jq / pandas / any language reads; `read_jsonl` turns null back into NaN).

Resume semantics (defined here, tested in tests/io/test_metrics_log.py). `start_step` is the step of
the restored checkpoint: the run has completed `start_step` updates and its next `log` call is for a
later step. On construction the main process rewrites metrics.jsonl keeping only lines with
`step <= start_step` (lines a killed run wrote past its last checkpoint are dropped, as is a torn last
line), then appends. `wall_time` continues from the largest kept wall_time, so the wall-clock axis
of the plots stays monotone across restarts. TensorBoard gets `purge_step = start_step + 1`, which makes
TensorBoard hide the killed run's events at those steps. `start_step=0` is a fresh run: old lines with
step > 0 are dropped. `read_jsonl` additionally supersedes: if the step goes backwards inside a file
(a resume that did not truncate), the earlier lines at steps >= the new step are discarded.

Multi-host: every process converts (so `log` returns the same host dict everywhere) but only the main
process creates directories, writes files or prints.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import warnings
from typing import Any, Callable, Iterable, Mapping, Optional, TextIO

import jax
import numpy as np

from vtg_jax.io.metrics_jsonl import json_value, truncate_jsonl

DEFAULT_KEY_METRICS = ("loss/total", "reward/iou", "rl/kl_ref", "eval/mIoU")
_RESERVED = ("step", "wall_time")
_TB_INVALID = re.compile(r"[^-/\w.]")


def tb_tag(key: str) -> str:
    """The TensorBoard tag for a metric key: tensorboardX only accepts [-/\\w.], so `eval/R@0.5` → `eval/R_0.5`."""
    return _TB_INVALID.sub("_", key).lstrip("/")


def to_host_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    """One `jax.device_get` of the whole dict, then Python floats; NaN for non-finite, mean for non-scalars.

    Never raises on a value: a non-numeric one (string, None) is skipped with a warning, because a
    logging hiccup must not kill a long run.
    """
    host = jax.device_get(dict(metrics))  # flattening sorts the keys; iterate in the caller's order
    out: dict[str, float] = {}
    for key in metrics:
        value = host[key]
        if key in _RESERVED:
            raise ValueError(f"metric key {key!r} is reserved for the jsonl record; use a '/'-scoped name")
        try:
            if value is None:
                raise TypeError
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            warnings.warn(f"metric {key!r} is not numeric ({type(value).__name__}); not logged", stacklevel=3)
            continue
        x = float(arr.reshape(())) if arr.size == 1 else (float(np.mean(arr)) if arr.size else math.nan)
        out[key] = x if math.isfinite(x) else math.nan
    return out


def _fmt_duration(seconds: float) -> str:
    """H:MM:SS, the format tqdm uses, so bar and plain lines read the same."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressReporter:
    """tqdm bar on a TTY; otherwise a plain line every `every_steps` steps or `every_s` seconds.

    Why both: a bar is the most readable thing in a terminal, but in a CI log or a redirected file it
    becomes thousands of carriage-return fragments; there a line per N steps is what a person can read.
    The postfix shows the last value of each key metric (eval metrics appear only every few steps) and any
    nonzero `*skipped*` counter, since skipped batches are what a person most needs to notice.
    """

    def __init__(self, *, total_steps: int, start_step: int, key_metrics: tuple[str, ...], stream: TextIO,
                 use_bar: Optional[bool], every_steps: int, every_s: float, clock: Callable[[], float]) -> None:
        self.total, self.start, self.keys = total_steps, start_step, key_metrics
        self.stream, self.every_steps, self.every_s, self.clock = stream, max(1, every_steps), every_s, clock
        self.last: dict[str, float] = {}
        self.t0 = clock()
        self.last_print_step, self.last_print_t = None, self.t0
        if use_bar is None:
            use_bar = bool(getattr(stream, "isatty", lambda: False)())
        self.bar = None
        if use_bar:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total_steps, initial=start_step, file=stream, dynamic_ncols=True,
                            desc="train", unit="step")

    def postfix(self) -> dict[str, str]:
        """Key metrics seen so far, then nonzero skip counters, each as 4 significant digits."""
        shown = {k: self.last[k] for k in self.keys if k in self.last}
        shown.update({k: v for k, v in self.last.items() if "skipped" in k and v != 0 and k not in shown})
        return {k: f"{v:.4g}" for k, v in shown.items()}

    def update(self, step: int, values: dict[str, float], wall: float) -> None:
        """Advance the bar to `step` or print a line if one is due (always on the first and the last step)."""
        self.last.update(values)
        if self.bar is not None:
            self.bar.set_postfix(self.postfix(), refresh=False)  # shown by the update's refresh
            self.bar.update(max(0, step - self.bar.n))
            return
        now = self.clock()
        due = (self.last_print_step is None or step - self.last_print_step >= self.every_steps
               or now - self.last_print_t >= self.every_s or step >= self.total)
        if due:
            self.last_print_step, self.last_print_t = step, now
            print(self.line(step, now - self.t0, wall), file=self.stream, flush=True)

    def line(self, step: int, elapsed: float, wall: float) -> str:
        """`step 20/50 (40%) | 0:00:10 elapsed, ETA 0:00:15 | loss/total=0.4321 reward/iou=0.5`."""
        done = step - self.start
        eta = elapsed / done * (self.total - step) if done > 0 and step < self.total else 0.0
        pct = 100.0 * step / self.total if self.total else 100.0
        metrics = " ".join(f"{k}={v}" for k, v in self.postfix().items())
        return (f"step {step}/{self.total} ({pct:.0f}%) | {_fmt_duration(wall)} elapsed, "
                f"ETA {_fmt_duration(eta)} | {metrics}").rstrip(" |")

    def close(self) -> None:
        """Close the bar so the shell prompt starts on a fresh line."""
        if self.bar is not None:
            self.bar.close()


class MetricsLogger:
    """Writes every `log(step, metrics)` to the console, TensorBoard and metrics.jsonl; `finish()` plots."""

    def __init__(self, workdir: str | os.PathLike, *, total_steps: int, start_step: int = 0,
                 is_main_process: bool = True, key_metrics: Iterable[str] = DEFAULT_KEY_METRICS,
                 tensorboard: bool = True, progress: Optional[bool] = None, print_every_steps: int = 10,
                 print_every_s: float = 60.0, stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`progress=None` shows a tqdm bar only on a TTY; otherwise a plain line every N steps or S seconds.

        `clock` is injectable so tests can pin wall_time; it must be monotone (not time.time, which jumps).
        """
        self.workdir = os.fspath(workdir)
        self.total_steps, self.start_step = int(total_steps), int(start_step)
        self.is_main = bool(is_main_process)
        self.jsonl_path = os.path.join(self.workdir, "metrics.jsonl")
        self.plots_dir = os.path.join(self.workdir, "plots")
        self.tb_dir = os.path.join(self.workdir, "tb")
        self._clock = clock
        self._t0 = clock()
        self._closed = False
        self._jsonl: Optional[TextIO] = None
        self._tb = None
        self._wall_offset = 0.0
        self._progress: Optional[ProgressReporter] = None
        self.last_logged: dict[str, float] = {}  # the last record kept from before a resume (main process)
        if not self.is_main:
            return
        os.makedirs(self.workdir, exist_ok=True)
        self._wall_offset, last = truncate_jsonl(self.jsonl_path, self.start_step)
        if self.start_step > 0:  # what a resumed run logged last
            self.last_logged = {k: v for k, v in last.items() if k not in _RESERVED}
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        if tensorboard:
            self._tb = _open_tensorboard(self.tb_dir, self.start_step + 1)
        self._progress = ProgressReporter(
            total_steps=self.total_steps, start_step=self.start_step, key_metrics=tuple(key_metrics),
            stream=stream if stream is not None else sys.stderr, use_bar=progress,
            every_steps=print_every_steps, every_s=print_every_s, clock=clock)

    def wall_time(self) -> float:
        """Seconds since this run started, plus the wall_time the resumed-from run had already spent."""
        return self._wall_offset + (self._clock() - self._t0)

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Record one step's metrics everywhere; returns the host floats (same on every process)."""
        if self._closed:
            raise RuntimeError("MetricsLogger.log called after finish()")
        values = to_host_floats(metrics)
        if not self.is_main:
            return values
        step, wall = int(step), self.wall_time()
        record = {"step": step, "wall_time": round(wall, 6), **{k: json_value(v) for k, v in values.items()}}
        self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.write(step, values)
        self._progress.update(step, values, wall)
        return values

    def finish(self, plot: bool = True) -> list[str]:
        """Close the bar and files, then (main process) write one PNG per metric family; returns their paths."""
        if self._closed:
            return []
        self._closed = True
        if not self.is_main:
            return []
        self._progress.close()
        if self._tb is not None:
            self._tb.close()
        self._jsonl.close()
        if not plot:
            return []
        from vtg_jax.io.plots import plot_run
        try:
            return plot_run(self.jsonl_path, self.plots_dir)
        except ImportError as e:  # no matplotlib: the jsonl is safe, plot later with plot_from_jsonl
            warnings.warn(f"no plots ({e}); metrics are in {self.jsonl_path}", stacklevel=2)
            return []

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.finish()


class _TensorBoard:
    """All scalars of one `log` call as one event, via tensorboardX's FileWriter.

    Why not SummaryWriter.add_scalar: it writes one event per scalar and logs a warning for every NaN,
    which would flood the console of a run whose KL went NaN; NaN here is data, already counted.
    """

    def __init__(self, tb_dir: str, purge_step: int) -> None:
        from tensorboardX import FileWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary

        self._summary = Summary
        # The suffix keeps a restart within the same second from reusing (and truncating) a file name.
        self._writer = FileWriter(tb_dir, flush_secs=30, filename_suffix=f".from{purge_step - 1}")
        # What SummaryWriter(purge_step=...) writes: TensorBoard then hides earlier events at step >= it.
        self._writer.add_event(Event(step=purge_step, file_version="brain.Event:2"))
        self._writer.add_event(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))

    def write(self, step: int, values: dict[str, float]) -> None:
        values_pb = [self._summary.Value(tag=tb_tag(k), simple_value=v) for k, v in values.items()]
        self._writer.add_summary(self._summary(value=values_pb), global_step=step)

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()


def _open_tensorboard(tb_dir: str, purge_step: int) -> Optional[_TensorBoard]:
    """A TensorBoard writer, or None (with a warning) if tensorboardX is not installed."""
    try:
        return _TensorBoard(tb_dir, purge_step)
    except ImportError:
        warnings.warn("tensorboardX is not installed; TensorBoard logging disabled", stacklevel=3)
        return None
