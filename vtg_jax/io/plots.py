"""PNG plots from metrics.jsonl: one figure per metric family for a run, one per metric to compare runs.

    plot_from_jsonl("runs/grpo/metrics.jsonl", "runs/grpo/plots")               # families of one run
    plot_from_jsonl(["runs/a/metrics.jsonl", "runs/b/metrics.jsonl"], "report",  # one figure per metric,
                    labels=["GRPO", "OPD"])                                      # one line per run

Every figure has two panels, against step and against wall-clock, because "which recipe learns more per
step" and "which learns more per hour" are different questions (OPD scores one rollout, GRPO G of them).
Figures are built with matplotlib's object API on an Agg canvas, never pyplot, so plotting works on a
headless host and never changes the caller's global matplotlib backend. matplotlib is imported lazily so
importing the training loop does not pay for it.
"""
from __future__ import annotations

import fnmatch
import math
import os
import re
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from vtg_jax.io.metrics_jsonl import read_jsonl


class Family(NamedTuple):
    """Metrics drawn in one figure: keys matching any glob in `patterns` (a key may be in several)."""
    stem: str
    title: str
    ylabel: str
    patterns: tuple[str, ...]


FAMILIES: tuple[Family, ...] = (
    Family("loss", "Losses (loss/*)", "loss", ("loss/*",)),
    Family("reward", "Rewards (reward/*)", "mean reward per sample", ("reward/*",)),
    Family("rl_kl", "KL terms (rl/kl*, rl/*_kl)", "KL estimate", ("rl/kl*", "rl/*_kl")),
    Family("eval", "Evaluation (eval/mIoU, eval/R@m)", "fraction of queries / mean IoU", ("eval/mIoU", "eval/R@*")),
    Family("skipped", "Skipped batches (*skipped*)", "count", ("*skipped*",)),
)
SMOOTH_MIN_POINTS = 50  # longer series get a light raw line plus a bold moving average

Series = tuple[list[float], list[float], list[float]]  # steps, wall_time (s), values


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def series_by_key(records: list[dict[str, Any]]) -> dict[str, Series]:
    """Per metric key, the (step, wall_time, value) of the records that contain it (eval keys are sparse)."""
    out: dict[str, Series] = {}
    for rec in records:
        for key, value in rec.items():
            if key in ("step", "wall_time") or not isinstance(value, (int, float)):
                continue
            steps, walls, values = out.setdefault(key, ([], [], []))
            steps.append(rec["step"])
            walls.append(float(rec.get("wall_time", math.nan)))
            values.append(float(value))
    return out


def _time_unit(max_seconds: float) -> tuple[float, str]:
    """Seconds, minutes or hours, whichever keeps the axis numbers short."""
    if max_seconds < 120:
        return 1.0, "s"
    return (60.0, "min") if max_seconds < 7200 else (3600.0, "h")


def _label(name: str, values: list[float]) -> str:
    """Legend entry; says how many points were NaN, since matplotlib draws them as silent gaps."""
    n_nan = sum(1 for v in values if not math.isfinite(v))
    if n_nan == len(values):
        return f"{name} (all NaN)"
    return f"{name} ({n_nan} NaN, marked ×)" if n_nan else name


def two_panel_figure(title: str, lines: list[tuple[str, Series]], ylabel: str) -> Any:
    """A matplotlib Figure (Agg canvas) of `lines` against step (left) and wall-clock (right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    max_wall = max((w for _, (_, walls, _) in lines for w in walls if math.isfinite(w)), default=0.0)
    scale, unit = _time_unit(max_wall)
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_step, ax_wall = fig.subplots(1, 2, sharey=True)
    for i, (name, (steps, walls, values)) in enumerate(lines):
        color = f"C{i % 10}"
        _draw(ax_step, steps, values, color, _label(name, values))
        _draw(ax_wall, [w / scale for w in walls], values, color, None)
    ax_step.set(title="against training step", xlabel="step", ylabel=ylabel)
    ax_wall.set(title="against wall-clock time", xlabel=f"wall-clock time since start ({unit})")
    for ax in (ax_step, ax_wall):
        ax.grid(True, alpha=0.3)
    ax_step.legend(loc="best", fontsize="small")
    fig.suptitle(title, fontsize="large", fontweight="bold")
    return fig


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Centred NaN-ignoring moving average, so one NaN step leaves no hole in the smoothed curve."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    kernel = np.ones(window)
    num = np.convolve(np.where(ok, v, 0.0), kernel, mode="same")
    den = np.convolve(ok.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def _draw(ax: Any, x: Sequence[float], values: Sequence[float], color: str, label: Optional[str]) -> None:
    """Few points: markers. Many: faint raw line + bold moving average. NaN steps: an × on the x axis."""
    if len(values) <= 25:
        ax.plot(x, values, color=color, label=label, linewidth=1.5, marker="o", markersize=3)
    elif len(values) < SMOOTH_MIN_POINTS:
        ax.plot(x, values, color=color, label=label, linewidth=1.5)
    else:
        ax.plot(x, values, color=color, linewidth=1.0, alpha=0.3)
        ax.plot(x, moving_average(values, max(3, len(values) // 25)), color=color, label=label, linewidth=1.8)
    nan_x = [xi for xi, v in zip(x, values) if not math.isfinite(v)]
    if nan_x:
        ax.plot(nan_x, [0.0] * len(nan_x), linestyle="none", marker="x", color=color, markersize=7,
                clip_on=False, transform=ax.get_xaxis_transform())


def _save_figure(title: str, lines: list[tuple[str, Series]], ylabel: str, path: str) -> str:
    """Build the two-panel figure and write it as a PNG; returns `path`."""
    fig = two_panel_figure(title, lines, ylabel)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_run(jsonl_path: str | os.PathLike, out_dir: str | os.PathLike, *, label: Optional[str] = None,
             families: Sequence[Family] = FAMILIES) -> list[str]:
    """One figure per family that has data (`<out_dir>/<stem>.png`), lines = that family's metrics."""
    series = series_by_key(read_jsonl(jsonl_path))
    label = label or _default_labels([jsonl_path])[0]
    paths = []
    for fam in families:
        lines = [(k, s) for k, s in sorted(series.items()) if _matches(k, fam.patterns)]
        if lines:
            path = os.path.join(os.fspath(out_dir), f"{fam.stem}.png")
            paths.append(_save_figure(f"{fam.title} — {label}", lines, fam.ylabel, path))
    return paths


def plot_runs(jsonl_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
              labels: Optional[Sequence[str]] = None, metrics: Optional[Sequence[str]] = None) -> list[str]:
    """One figure per metric (`<out_dir>/compare_<key>.png`), one labelled line per run.

    `metrics` are glob patterns over keys; by default every key of the families in FAMILIES. Long noisy
    series are smoothed the same way for every run, so the comparison stays fair.
    """
    labels = list(labels) if labels is not None else _default_labels(jsonl_paths)
    if len(labels) != len(jsonl_paths):
        raise ValueError(f"{len(labels)} labels for {len(jsonl_paths)} runs")
    patterns = tuple(metrics) if metrics is not None else tuple(p for fam in FAMILIES for p in fam.patterns)
    runs = [series_by_key(read_jsonl(p)) for p in jsonl_paths]
    keys = sorted({k for run in runs for k in run if _matches(k, patterns)})
    paths = []
    for key in keys:
        lines = [(lab, run[key]) for lab, run in zip(labels, runs) if key in run]
        path = os.path.join(os.fspath(out_dir), f"compare_{safe_filename(key)}.png")
        paths.append(_save_figure(f"{key} — {len(lines)} runs", lines, key, path))
    return paths


def plot_from_jsonl(path: str | os.PathLike | Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                    labels: Optional[Sequence[str]] = None) -> list[str]:
    """After-the-fact plotting: one path → `plot_run` (families); a list of paths → `plot_runs` (comparison)."""
    if isinstance(path, (str, os.PathLike)):
        return plot_run(path, out_dir, label=labels[0] if labels else None)
    return plot_runs(list(path), out_dir, labels=labels)


def safe_filename(key: str) -> str:
    """`eval/R@0.5` → `eval_R_0.5`: metric keys contain '/' and '@'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")


def _default_labels(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Each run's directory name (the workdir); numbered if two runs share a name."""
    names = [os.path.basename(os.path.dirname(os.path.abspath(p))) or os.fspath(p) for p in paths]
    return [f"{n} #{i + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]
