"""One self-contained HTML page of an evaluation's predictions, next to its predictions jsonl.

    write_predictions_page("W/predictions/val_eval.html", records, metrics=metrics, title="val_eval",
                           store=FrameStore(run_data.store_path))

`records` are the jsonl's lines (`vtg_jax.eval.loop.evaluate`: qid, video_id, query, gt, duration, answer,
pred, iou, plus extra keys such as step). The page holds the split's metrics and a histogram of IoU, then
one row per query: the video's timeline with the ground-truth and predicted spans, IoU, the start / end
offsets (pred - gt, seconds), the raw answer and a few frames from the frame store with their timestamps
(the frames nearest the middle of the ground truth and of the prediction, the others spread over the
video: what a reader needs to see whether the model looked at the right moment). Rows sort by IoU,
duration and offsets from the page's own column headers (a small inline script); unparsable answers are
marked and sort last.

Why everything is inline (SVG drawings, CSS, script, thumbnails as base64 JPEG data URIs): the page is
opened from a run's workdir copied off a cluster, often with no network, so it must not reference any
other file or host. Thumbnails are small and capped by a byte budget so a page of thousands of queries
stays a few MB. Answers, queries and ids are model output or user data: all text is HTML-escaped.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from vtg_jax.data.frame_store import FrameStore
from vtg_jax.io.predictions_page_template import PAGE, SORT_SCRIPT

GT_COLOUR = "#1f77b4"  # blue and orange: told apart with every common colour-vision deficiency
PRED_COLOUR = "#ff7f0e"
FAIL_COLOUR = "#c0392b"
THUMB_WIDTH = 96
THUMB_QUALITY = 70
THUMBS_PER_ROW = 4
# Base64 characters of thumbnails in one page (~6 MB): rows past it show none, so a page of a whole
# benchmark split stays small enough to open and mail.
THUMB_BUDGET = 6_000_000
TIMELINE_WIDTH = 400
# Columns of the table: (sort key or "", header). The sort keys are the rows' data-<key> attributes and
# the buttons' ids are sort-<key>.
COLUMNS = (("index", "#"), ("", "query · answer"), ("", "timeline · frames"), ("iou", "IoU"), ("start", "Δ start"),
           ("end", "Δ end"), ("abs", "|Δ|"), ("duration", "duration"))
STANDARD_KEYS = {"qid", "video_id", "query", "gt", "duration", "answer", "pred", "iou"}


def _num(x: Optional[float], digits: int = 1, signed: bool = False) -> str:
    if x is None:
        return ""
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def prediction_errors(record: Mapping[str, Any]) -> dict[str, Optional[float]]:
    """Start and end offsets (pred - gt, s) and |start| + |end| of one prediction; None when unparsable."""
    pred = record["pred"]
    if pred is None or not all(math.isfinite(float(v)) for v in pred):
        return {"start": None, "end": None, "abs": None}
    start = float(pred[0]) - float(record["gt"][0])
    end = float(pred[1]) - float(record["gt"][1])
    return {"start": start, "end": end, "abs": abs(start) + abs(end)}


def iou_histogram(records: Sequence[Mapping[str, Any]], bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Counts of parsed and of unparsable predictions in `bins` equal IoU bins over [0, 1] (1 in the last)."""
    parsed, failed = np.zeros(bins, np.int64), np.zeros(bins, np.int64)
    for r in records:
        b = min(int(float(r["iou"]) * bins), bins - 1)
        (failed if prediction_errors(r)["start"] is None else parsed)[b] += 1
    return parsed, failed


def thumbnail_data_uri(frame: np.ndarray, width: int = THUMB_WIDTH, quality: int = THUMB_QUALITY) -> str:
    """A uint8 [H, W, 3] frame as a `width`-pixel-wide JPEG data URI."""
    img = Image.fromarray(np.asarray(frame, np.uint8))
    height = max(1, round(img.height * width / img.width))
    buf = io.BytesIO()
    img.resize((width, height), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_frames(stamps: np.ndarray, record: Mapping[str, Any], count: int = THUMBS_PER_ROW) -> np.ndarray:
    """Indices of up to `count` frames (timestamps `stamps`) in time order: the frames nearest the middle of
    the ground truth and of the prediction (what a reader compares), the others spread over the video."""
    if len(stamps) == 0 or count <= 0:
        return np.zeros(0, np.int64)
    spans = [record["gt"]] + ([] if prediction_errors(record)["start"] is None else [record["pred"]])
    chosen: list[int] = []
    middles = [int(np.argmin(np.abs(stamps - (float(a) + float(b)) / 2))) for a, b in spans]
    for i in middles + np.linspace(0, len(stamps) - 1, count + len(spans)).round().astype(int).tolist():
        if i not in chosen and len(chosen) < count:
            chosen.append(int(i))
    return np.sort(np.asarray(chosen, np.int64))


def row_thumbnails(store: FrameStore, record: Mapping[str, Any],
                   count: int = THUMBS_PER_ROW) -> list[tuple[float, str]]:
    """(timestamp s, data URI) of `thumbnail_frames` of a record's video; [] if the store lacks the video."""
    video_id = str(record["video_id"])
    if video_id not in store:
        return []
    idx = thumbnail_frames(np.asarray(store.meta(video_id)["timestamps"], np.float64), record, count)
    if idx.size == 0:
        return []
    frames, stamps = store.read(video_id, idx.tolist())
    return [(float(t), thumbnail_data_uri(f)) for f, t in zip(frames, stamps)]


def _timeline_svg(record: Mapping[str, Any], thumb_times: Sequence[float]) -> str:
    """The video as a grey track [0, duration] (dashed where a span runs outside it), the GT span above it,
    the prediction below it and a marker under the track where each thumbnail was taken."""
    w, left, right, h = TIMELINE_WIDTH, 8, 8, 54
    gt = [float(v) for v in record["gt"]]
    duration = float(record["duration"])
    pred = None if prediction_errors(record)["start"] is None else [float(v) for v in record["pred"]]
    lo = min([0.0] + ([min(pred)] if pred else []))
    hi = max([duration, gt[1]] + ([max(pred)] if pred else []))
    hi = hi if hi > lo else lo + 1.0

    def x(t: float) -> float:
        return left + (t - lo) / (hi - lo) * (w - left - right)

    def bar(cls: str, a: float, b: float, y: int, colour: str, tip: str, extra: str = "") -> str:
        return (f'<rect class="{cls}" x="{x(min(a, b)):.1f}" y="{y}" width="{max(x(max(a, b)) - x(min(a, b)), 2):.1f}" '
                f'height="12" rx="2" fill="{colour}"{extra}><title>{tip}</title></rect>')

    parts = [f'<svg class="timeline" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">',
             f'<rect x="{x(0):.1f}" y="18" width="{x(duration) - x(0):.1f}" height="4" fill="#c8c8c8"/>']
    for a, b in ((lo, 0.0), (duration, hi)):
        if b > a:
            parts.append(f'<rect x="{x(a):.1f}" y="18" width="{x(b) - x(a):.1f}" height="4" fill="none" '
                         'stroke="#aaa" stroke-dasharray="2,2"/>')
    parts.append(bar("gt-bar", gt[0], gt[1], 4, GT_COLOUR, f"ground truth {gt[0]:.1f}–{gt[1]:.1f} s"))
    if pred is None:
        parts.append(f'<text x="{w / 2:.0f}" y="34" text-anchor="middle" class="fail-text">unparsable answer</text>')
    else:
        reversed_ = ' stroke="#000" stroke-dasharray="3,2"' if pred[0] > pred[1] else ""  # scored IoU 0
        parts.append(bar("pred-bar", pred[0], pred[1], 24, PRED_COLOUR,
                         f"prediction {pred[0]:.1f}–{pred[1]:.1f} s{' (reversed)' if reversed_ else ''}", reversed_))
    for t in thumb_times:
        parts.append(f'<path class="frame-mark" d="M{x(t):.1f} 38 l-3.5 6 h7 z" fill="#666"/>')
    parts.append(f'<text x="{x(0):.1f}" y="{h - 1}" text-anchor="middle" class="axis">0</text>'
                 f'<text x="{min(x(duration), w - 1):.1f}" y="{h - 1}" text-anchor="end" class="axis">'
                 f'{duration:.1f} s</text></svg>')
    return "".join(parts)


def _histogram_svg(records: Sequence[Mapping[str, Any]]) -> str:
    """Bars of parsed (orange) over unparsable (red) predictions per IoU bin, with the R@m thresholds."""
    parsed, failed = iou_histogram(records)
    bins, w, h, left, bottom, top = len(parsed), 360, 150, 12, 30, 18
    bar_w = (w - 2 * left) / bins
    peak = max(int((parsed + failed).max()), 1)

    def y(count: float) -> float:
        return top + (1 - count / peak) * (h - top - bottom)

    parts = [f'<svg id="iou-histogram" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">',
             f'<line x1="{left}" x2="{w - left}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#333"/>']
    for b in range(bins):
        bx, total = left + b * bar_w + 1, int(parsed[b] + failed[b])
        if failed[b]:
            parts.append(f'<rect class="hist-fail" x="{bx:.1f}" y="{y(failed[b]):.1f}" width="{bar_w - 2:.1f}" '
                         f'height="{y(0) - y(failed[b]):.1f}" fill="{FAIL_COLOUR}"/>')
        if parsed[b]:
            parts.append(f'<rect class="hist-bar" x="{bx:.1f}" y="{y(total):.1f}" width="{bar_w - 2:.1f}" '
                         f'height="{y(failed[b]) - y(total):.1f}" fill="{PRED_COLOUR}"/>')
        if total:
            parts.append(f'<text x="{bx + bar_w / 2 - 1:.1f}" y="{y(total) - 3:.1f}" text-anchor="middle">'
                         f'{total}</text>')
    for t in (0.3, 0.5, 0.7):  # the R@m thresholds
        tx = left + t * bins * bar_w
        parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top - 6}" y2="{y(0):.1f}" stroke="#777" '
                     f'stroke-dasharray="3,3"/><text x="{tx:.1f}" y="{top - 8}" text-anchor="middle">{t}</text>')
    for t in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{left + t * bins * bar_w:.1f}" y="{h - 16}" text-anchor="middle">{t:g}</text>')
    parts.append(f'<text x="{w / 2:.0f}" y="{h - 3}" text-anchor="middle">IoU with the ground truth</text></svg>')
    return "".join(parts)


METRIC_LABELS = (("R@0.3", "R@0.3", "pct"), ("R@0.5", "R@0.5", "pct"), ("R@0.7", "R@0.7", "pct"),
                 ("mIoU", "mIoU", "pct"), ("n", "queries", "int"), ("parse_failures", "parse failures", "int"),
                 ("reversed_predictions", "reversed spans", "int"), ("skipped", "skipped records", "int"))


def _metrics_html(metrics: Mapping[str, Any]) -> str:
    cells = []
    for key, label, kind in METRIC_LABELS:
        if key in metrics:
            v = float(metrics[key])
            text = f"{100 * v:.1f}%" if kind == "pct" else f"{int(v)}"
            cells.append(f'<div class="metric" id="metric-{key.replace("@", "_").replace(".", "")}">'
                         f'<div class="value">{text}</div><div class="label">{html.escape(label)}</div></div>')
    return f'<div class="metrics">{"".join(cells)}</div>'


LEGEND = ('<div class="legend"><span><i style="background:{gt}"></i>ground truth</span>'
          '<span><i style="background:{pred}"></i>prediction</span>'
          '<span><i class="track"></i>the video, 0 to its duration (dashed: outside it)</span>'
          '<span>&#9650; a frame shown below (blue top edge: inside the ground truth, orange bottom edge: inside '
          'the prediction)</span><span>Δ start, Δ end: predicted − true boundary in seconds (negative: too early); '
          '|Δ| = |Δ start| + |Δ end|</span>'
          '<span class="fail-text">unparsable answer: IoU 0, no Δ, listed last when sorting</span></div>')


def _frames_html(record: Mapping[str, Any], thumbs: Sequence[tuple[float, str]]) -> str:
    """The thumbnails with their times; a blue top / orange bottom edge on those inside the GT / prediction."""
    parsed = prediction_errors(record)["start"] is not None
    spans = [("in-gt", record["gt"])] + ([("in-pred", record["pred"])] if parsed else [])
    figures = []
    for t, uri in thumbs:
        # half-open [start, end): the frame at a span's end shows the moment after it
        inside = [c for c, span in spans if min(map(float, span)) <= t < max(map(float, span))]
        figures.append(f'<figure><img class="{" ".join(inside)}" src="{uri}" alt="frame at {t:.1f} s" '
                       f'width="{THUMB_WIDTH}"><figcaption>{t:.1f} s</figcaption></figure>')
    return "".join(figures)


def _row_html(k: int, record: Mapping[str, Any], thumbs: Optional[list[tuple[float, str]]], note: str) -> str:
    """One table row; its data-* attributes are what the page's script sorts by ("" = no value: last)."""
    errors = prediction_errors(record)
    failed = errors["start"] is None
    iou, duration, gt = float(record["iou"]), float(record["duration"]), [float(v) for v in record["gt"]]
    data = {"index": str(k), "iou": "" if failed else repr(iou), "duration": repr(duration),
            **{key: "" if v is None else repr(v) for key, v in errors.items()}}
    spans = f"GT {gt[0]:.1f}–{gt[1]:.1f} s"
    if not failed:
        spans += f' · pred {float(record["pred"][0]):.1f}–{float(record["pred"][1]):.1f} s'
    iou_class = "fail" if failed else "hi" if iou >= 0.7 else "mid" if iou >= 0.5 else "lo" if iou >= 0.3 else "miss"
    ids = f'qid {html.escape(str(record["qid"]))} · video {html.escape(str(record["video_id"]))}'
    cells = [f'<td class="idx">{k + 1}</td>',
             f'<td class="text"><div class="query">{html.escape(str(record["query"]))}</div><div class="ids">{ids}'
             f'</div><pre class="answer">{html.escape(str(record["answer"]))}</pre></td>',
             f'<td class="vis">{_timeline_svg(record, [t for t, _ in thumbs or []])}<div class="spans">{spans}</div>'
             f'<div class="thumbs">{_frames_html(record, thumbs or [])}{html.escape(note)}</div></td>',
             f'<td class="num iou {iou_class}">{"unparsable" if failed else f"{iou:.2f}"}</td>',
             *(f'<td class="num">{_num(errors[key], signed=key != "abs")}</td>' for key in ("start", "end", "abs")),
             f'<td class="num">{duration:.1f}</td>']
    attrs = " ".join(f'data-{key}="{v}"' for key, v in data.items())
    return f'<tr class="row{" unparsable" if failed else ""}" {attrs}>{"".join(cells)}</tr>'


def _subtitle(records: Sequence[Mapping[str, Any]], subtitle: str) -> str:
    """The caller's subtitle and the extra keys (e.g. step) that every record shares."""
    parts = [subtitle] if subtitle else []
    for key in sorted(set(records[0]) - STANDARD_KEYS if records else ()):
        values = {repr(r.get(key)) for r in records}
        if len(values) == 1:
            parts.append(f"{key} {records[0][key]}")
    return html.escape(" · ".join(parts))


def render_predictions_page(records: Sequence[Mapping[str, Any]], *, metrics: Optional[Mapping[str, Any]] = None,
                            title: str = "predictions", subtitle: str = "", store: Optional[FrameStore] = None,
                            thumbnails: int = THUMBS_PER_ROW, thumb_budget: int = THUMB_BUDGET) -> str:
    """The page's HTML text (see the module docstring); `store` None: no thumbnails."""
    used, missing, over_budget, rows = 0, set(), 0, []
    for k, r in enumerate(records):
        thumbs, note = None, ""
        if store is not None and thumbnails > 0 and used < thumb_budget:
            try:
                thumbs = row_thumbnails(store, r, thumbnails)
            except Exception:  # noqa: BLE001 (no store, an unreadable array: a row without frames)
                thumbs = []
            if not thumbs:
                missing.add(str(r["video_id"]))
                note = "no frames: video not in the frame store or unreadable"
            used += sum(len(uri) for _, uri in thumbs)
        elif store is not None and thumbnails > 0:
            over_budget += 1
            note = "thumbnails left out: page size budget reached"
        rows.append(_row_html(k, r, thumbs, note))
    notes = []
    if store is None:
        notes.append("no frame store given: no thumbnails")
    if missing:
        notes.append(f"{len(missing)} video(s) not in the frame store or unreadable")
    if over_budget:
        notes.append(f"{over_budget} row(s) without thumbnails to keep the page small")
    heads = "".join(f'<th><button type="button" class="sort" id="sort-{key}" data-sort="{key}">{html.escape(label)}'
                    '<span class="arrow"></span></button></th>' if key else f"<th>{html.escape(label)}</th>"
                    for key, label in COLUMNS)
    return PAGE.format(
        title=html.escape(title), subtitle=_subtitle(records, subtitle), metrics=_metrics_html(metrics or {}),
        histogram=_histogram_svg(records), legend=LEGEND.format(gt=GT_COLOUR, pred=PRED_COLOUR),
        notes=html.escape("; ".join(notes)), heads=heads, rows="".join(rows), script=SORT_SCRIPT,
        vis_width=TIMELINE_WIDTH + 10, gt=GT_COLOUR, pred=PRED_COLOUR, fail=FAIL_COLOUR)


def read_predictions(path: str) -> list[dict[str, Any]]:
    """The records of a predictions jsonl (`eval.loop.evaluate`), in file order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_predictions_page(path: str, records: Sequence[Mapping[str, Any]], **kwargs: Any) -> str:
    """Writes `render_predictions_page(records, **kwargs)` to `path` (atomically) and returns `path`."""
    text = render_predictions_page(records, **kwargs)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
