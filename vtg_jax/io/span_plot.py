"""A PNG of one video's predictions (`python -m vtg_jax.predict --plot`): its sampled frames as a strip
along the time axis, and under it one lane per query with the predicted span (and every sample's span
when several were drawn) and the ground truth when known, on the same seconds axis.

Built with matplotlib's object API on an Agg canvas (never pyplot), like `io.plots`.
"""
from __future__ import annotations

import dataclasses
import textwrap
from typing import Optional, Sequence

import numpy as np

PRED_COLOR = "#e07b00"  # orange: the model's answer
GT_COLOR = "#2a9d4b"  # green: the ground truth
SAMPLE_COLOR = PRED_COLOR  # drawn thinner and translucent
MAX_THUMBNAILS = 12


@dataclasses.dataclass(frozen=True)
class Lane:
    """One query's row: its text, the answer's span (None: unparsable), every sample's span (several
    samples) and the ground truth (None: unknown)."""
    label: str
    span: Optional[tuple[float, float]]
    samples: Sequence[Optional[tuple[float, float]]] = ()
    gt: Optional[tuple[float, float]] = None
    iou: Optional[float] = None


def thumbnail_slots(timestamps: np.ndarray, duration: float, count: int = MAX_THUMBNAILS) -> list[tuple[int, float]]:
    """(frame index, slot centre in seconds) of the thumbnails: the time axis cut into at most `count` equal
    slots, each showing the frame sampled nearest its centre (so a thumbnail sits over its own moment)."""
    n = min(count, len(timestamps))
    width = duration / max(n, 1)
    centres = (np.arange(n) + 0.5) * width
    return [(int(np.abs(timestamps - c).argmin()), float(c)) for c in centres]


def _frame_strip(ax, frames: np.ndarray, timestamps: np.ndarray, duration: float) -> None:
    slots = thumbnail_slots(timestamps, duration)
    half = duration / max(len(slots), 1) / 2
    for i, centre in slots:
        ax.imshow(frames[i], extent=(centre - half * 0.96, centre + half * 0.96, 0, 1), aspect="auto",
                  interpolation="nearest")
        ax.plot([timestamps[i]] * 2, [-0.12, 0.0], color="0.3", lw=0.8, clip_on=False)
    ax.set_xlim(0, duration)
    ax.set_ylim(-0.12, 1)
    ax.set_yticks([])
    ax.set_title(f"sampled frames ({len(slots)} of {len(frames)} shown; a tick marks each shown frame's time)",
                 fontsize=9, loc="left", color="0.3")
    ax.tick_params(labelbottom=False)


def _span_text(span: Optional[tuple[float, float]]) -> str:
    return "unparsable answer" if span is None else f"{span[0]:.1f}–{span[1]:.1f} s"


def _lane(ax, lane: Lane, duration: float) -> None:
    ax.broken_barh([(0, duration)], (0.05, 0.9), color="0.93")
    if lane.gt is not None:
        ax.broken_barh([(lane.gt[0], lane.gt[1] - lane.gt[0])], (0.55, 0.35), color=GT_COLOR)
    # every parsed sample's span; a reversed one ("8.0 to 2.0", IoU 0) is listed by the text output only
    shown = [s for s in lane.samples if s is not None and s[1] >= s[0]] if len(lane.samples) > 1 else []
    for k, s in enumerate(shown):  # every sample a thin line, stacked in the lower half
        y = 0.1 + 0.35 * (k + 0.5) / len(shown)
        ax.plot([s[0], s[1]], [y, y], color=SAMPLE_COLOR, alpha=0.45, lw=1.5, solid_capstyle="butt")
    if lane.span is not None:  # a zero-length span stays visible as a sliver
        ax.broken_barh([(lane.span[0], max(lane.span[1] - lane.span[0], duration * 0.003))], (0.1, 0.35),
                       facecolor=PRED_COLOR if not shown else "none", edgecolor=PRED_COLOR, lw=2)
    ax.set_xlim(0, duration)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    title = textwrap.shorten(lane.label, 90)
    info = f"prediction {_span_text(lane.span)}"
    if lane.gt is not None:
        info += f"   ground truth {_span_text(lane.gt)}" + ("" if lane.iou is None else f"   IoU {lane.iou:.2f}")
    ax.set_title(f"“{title}”   —   {info}", fontsize=9, loc="left")


def plot_predictions(path: str, frames: np.ndarray, timestamps: Sequence[float], duration: float,
                     lanes: Sequence[Lane], title: str) -> str:
    """Writes the PNG to `path` and returns it. `frames` uint8 [T, H, W, 3] at `timestamps` (s)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    ts = np.asarray(timestamps, np.float64)
    duration = float(max(duration, ts.max(initial=0.0), 1e-3))
    n = len(lanes)
    fig = Figure(figsize=(11, 1.9 + 0.75 * n), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n + 1, 1, sharex=True, gridspec_kw={"height_ratios": [2.2] + [1] * n})
    _frame_strip(axes[0], np.asarray(frames), ts, duration)
    for ax, lane in zip(axes[1:], lanes):
        _lane(ax, lane, duration)
    axes[-1].set_xlabel("time in the video (s)")
    handles = [Patch(color=PRED_COLOR, label="predicted span")]
    if any(len(lane.samples) > 1 for lane in lanes):
        handles = [Patch(facecolor="none", edgecolor=PRED_COLOR, label="median of the samples"),
                   Patch(color=SAMPLE_COLOR, alpha=0.45, label="one sample's span")]
    if any(lane.gt is not None for lane in lanes):
        handles.append(Patch(color=GT_COLOR, label="ground truth"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    fig.suptitle(textwrap.shorten(title, 100), x=0.01, ha="left", fontsize=11)
    fig.savefig(path, dpi=110)
    return path
