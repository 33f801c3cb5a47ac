"""Decode videos, pick and size their frames as the model's reference pipeline does, store uint8 frames.

  python -m vtg_jax.data.extract --videos DIR|GLOB|LIST.txt --out STORE --family qwen2_5_vl \
      [--sampling qwen_vl_utils|transformers] [--fps 2 | --nframes 64] [--min_frames 4 --max_frames 768] \
      [--min_pixels N --max_pixels N --total_pixels N] [--workers 4] [--timeout_s 600] \
      [--min_decoded_fraction 0.9] [--chunk_frames 4]
  python -m vtg_jax.data.extract --records train.json --dataset time_r1 --video_dir VIDEOS --out STORE ...

Frames are picked and sized by `frame_sampling.py`: by default exactly as `qwen-vl-utils`'
`fetch_video` (what the Qwen model cards and the TVG code bases run), or with `--sampling
transformers` as the HF video processors would, so the model sees the same frames whether it reads
the store or runs the reference pipeline. `--records` extracts the videos a records file needs; a
record with a clip window (Time-R1's `video_start` / `video_end`) gets only that window's frames, under
its own id. For the tiny 56/64 px synthetic videos pass a small --min_pixels (3136 for Qwen2.5 keeps
56², 4096 for Qwen3 keeps 64²), since the defaults upscale them. store.json records the rule and its
values; extracting into a store made with other settings is refused. The store layout is documented
in frame_store.py.

The run is meant to survive bad data: a missing, empty, corrupt or too-short video is written to
errors.jsonl with the reason and the run goes on. Videos already in the manifest are skipped, so an
interrupted run resumes where it stopped (failed videos are retried). Each video's cost is bounded:

* Time: videos are decoded in worker processes (`worker_pool.py`) that take one video at a time; a
  video still decoding after --timeout_s (default 600 s; 0 = no limit) has its worker killed and
  replaced and is recorded as "timed out after 600 s decoding"; a worker that crashes (a decoder
  segfault) takes only its own video down ("worker process crashed while decoding"). --workers 0
  means one such worker; only --workers 0 --timeout_s 0 decodes in this process (no limit, a crash
  ends the run: for debugging).
* Memory: the sampled frames are decoded --chunk_frames (default 4) at a time (`decode.py`) and each
  chunk is resized as it arrives into an array of the output size, so our own share is the output plus
  a chunk of source frames whatever the source resolution (768 frames of a 4K video decoded at once
  took 19 GB, twice over). The frames are bit for bit those of one batch decode. decord adds its own
  working set: its decoder thread runs ahead of the frames asked for, and decodes as far as it has read
  ahead (tens of source frames; a few hundred when every frame is sampled and decoding outpaces
  resizing).

Cut-off videos (an interrupted download or copy; late frames that do not decode) keep the frames that
decode from the start when those cover at least --min_decoded_fraction (default 0.9) of the video, or
of its clip window: sampling is planned again over that prefix as if the video ended there (indices,
timestamps and duration are the prefix's), the manifest entry gets `truncated` = {decoded_frames,
source_frames, kept_fraction, cause} (null for whole videos), and a line goes to warnings.jsonl;
errors.jsonl stays a list of failed videos only. Below the fraction the video is an error that says
how much decoded. An mp4/mov file's sample tables tell what is missing (`mp4_index.py`); decord cannot
open a file cut inside a frame, so the whole frames before the cut are decoded from a copy in
STORE/tmp/. Other containers cut between frames look complete to the decoder and are kept as shorter
videos. Frames that fail to decode in a file whose container is whole are found by reading on from
the last good sampled frame; decord's error can surface as far before the bad frame as its decoder
has read ahead, so those frames are dropped too.

Error reasons are meant to be read: FFmpeg's codes in decoder messages are named ("decoder error:
Invalid data found when processing input (av_read_frame failed with 1094995529)", `ffmpeg_errors.py`),
and an mp4 cut before its index (moov box) is reported as such.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import time
from typing import Any, Optional, Sequence

from vtg_jax.data.adapters.generic import load_records_jsonl
from vtg_jax.data.datasets import load_dataset
from vtg_jax.data.decode import VideoError, decode_video
from vtg_jax.data.ffmpeg_errors import describe_decoder_error
from vtg_jax.data.frame_sampling import RULES, SamplingConfig
from vtg_jax.data.frame_store import ERRORS, MANIFEST, STORE_INFO, WARNINGS, array_spec, read_manifest
from vtg_jax.data.video import family_spec
from vtg_jax.data.worker_pool import run_tasks

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_CHUNK_FRAMES = 4
DEFAULT_MIN_DECODED_FRACTION = 0.9
TMP_DIR = "tmp"  # in the store: copies of cut-off videos while they are decoded


def list_videos(spec: str | Sequence[str]) -> list[tuple[str, str]]:
    """(video_id, path) pairs from a directory (recursive), a glob, a list file or a list of paths.

    A list file (.txt/.lst) holds one path per line, relative to the file's directory. The video id
    is the file name without its extension. Missing paths are kept: they become error lines.
    """
    if isinstance(spec, str):
        if os.path.isdir(spec):
            paths = sorted(p for p in glob.glob(os.path.join(spec, "**", "*"), recursive=True)
                           if p.lower().endswith(VIDEO_EXTS) and os.path.isfile(p))
        elif spec.endswith((".txt", ".lst")) and os.path.isfile(spec):
            base = os.path.dirname(os.path.abspath(spec))
            with open(spec) as f:
                paths = [os.path.join(base, ln.strip()) for ln in f if ln.strip() and not ln.startswith("#")]
        else:
            paths = sorted(glob.glob(spec)) or [spec]
    else:
        paths = list(spec)
    return [(os.path.splitext(os.path.basename(p))[0], os.path.abspath(p)) for p in paths]


def array_key(video_id: str) -> str:
    """A file-system-safe array name; ids that need escaping get a hash suffix to stay unique."""
    key = re.sub(r"[^A-Za-z0-9._-]", "_", video_id).lstrip(".") or "_"
    return key if key == video_id else f"{key}-{hashlib.sha1(video_id.encode()).hexdigest()[:10]}"


def extract_one(video_id: str, path: str, out: str, family: str, sampling: SamplingConfig,
                window: Optional[tuple[float, float]] = None, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                min_decoded_fraction: float = DEFAULT_MIN_DECODED_FRACTION) -> dict[str, Any]:
    """Decodes, samples, resizes (`decode.decode_video`) and writes one video (or its `window` in seconds);
    returns its manifest entry. Raises on bad input. A video whose end is missing or does not decode keeps
    its decodable start when that covers `min_decoded_fraction` of it (see the module docstring)."""
    import tensorstore as ts

    video = decode_video(path, family, sampling, window=window, chunk_frames=chunk_frames,
                         min_decoded_fraction=min_decoded_fraction, tmp_dir=os.path.join(out, TMP_DIR))
    t, h, w, _ = video.frames.shape
    key = array_key(video_id)
    codecs = [{"name": "sharding_indexed", "configuration": {
        "chunk_shape": [1, h, w, 3],
        "codecs": [{"name": "bytes"}, {"name": "zstd", "configuration": {"level": 3}}],
        "index_codecs": [{"name": "bytes"}, {"name": "crc32c"}]}}]
    spec = dict(array_spec(out, key), create=True, delete_existing=True, metadata={
        "shape": [t, h, w, 3], "data_type": "uint8", "codecs": codecs,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [t, h, w, 3]}},
        "attributes": {"video_id": video_id, "family": family}})
    ts.open(spec).result().write(video.frames).result()
    return {"video_id": video_id, "key": key, "path": path, "family": family, "sampling": sampling.rule,
            "fps": sampling.fps, **video.manifest_fields(), "shape": [t, h, w, 3]}


def extract_task(task: tuple) -> tuple[str, Any]:
    """`extract_one(*task)` as a worker's task (module-level, so 'spawn' can pickle it): never raises for
    bad input; returns ("ok", entry) or ("error", reason)."""
    try:
        return "ok", extract_one(*task)
    except VideoError as e:
        return "error", str(e)
    except Exception as e:  # noqa: BLE001 - any decoder/IO failure is a per-video error, not a run failure
        from_decoder = type(e).__module__.startswith("decord")
        return "error", describe_decoder_error(e) if from_decoder else f"{type(e).__name__}: {e}"


def _check_store(out: str, info: dict[str, Any]) -> None:
    """Refuses to mix settings in one store: a second family or budget must go to another directory."""
    path = os.path.join(out, STORE_INFO)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diff = {k: (old.get(k), v) for k, v in info.items() if old.get(k) != v}
        if diff:
            raise ValueError(f"store {out} was made with other settings (old, new): {diff}")
    else:
        with open(path, "w") as f:
            json.dump(info, f, indent=1)


def videos_from_records(records: Sequence[Any], video_dir: str) -> list[tuple[str, str, Optional[tuple]]]:
    """(video_id, path, window) of each distinct frame-store entry the records need.

    A record with a `clip` names its source video in `extra["source_video"]` (and maybe its file in
    `extra["video_path"]`) and is extracted as the window only, under its own `video_id`; any other
    record's video is the file `<video_dir>/<video_id>.<ext>` (or its `extra["video_path"]`).
    """
    by_stem: dict[str, str] = {vid: path for vid, path in list_videos(video_dir)} if os.path.isdir(video_dir) else {}
    out: dict[str, tuple[str, str, Optional[tuple]]] = {}
    for rec in records:
        if rec.video_id in out:
            continue
        stem = str(rec.extra.get("source_video") or rec.video_id) if rec.clip else rec.video_id
        given = rec.extra.get("video_path")
        candidates = [os.path.join(video_dir, str(given)), str(given)] if given else []
        path = next((c for c in candidates if os.path.isfile(c)), by_stem.get(stem, os.path.join(video_dir, stem)))
        out[rec.video_id] = (rec.video_id, os.path.abspath(path), None if rec.clip is None else tuple(rec.clip))
    return list(out.values())


def extract(videos: str | Sequence[Any], out: str, *, family: str, sampling: str = "qwen_vl_utils",
            fps: float = 2.0, nframes: int = 0, min_pixels: int | None = None, max_pixels: int | None = None,
            total_pixels: float | None = None, min_frames: int = 4, max_frames: int = 768,
            workers: int = 0, start_method: str = "spawn", timeout_s: float = DEFAULT_TIMEOUT_S,
            chunk_frames: int = DEFAULT_CHUNK_FRAMES, min_decoded_fraction: float = DEFAULT_MIN_DECODED_FRACTION,
            progress: bool = True) -> dict[str, int]:
    """Extracts every video into the store at `out`; returns counts {total, done, skipped, errors}.

    `videos`: what `list_videos` takes, or (video_id, path, window) triples (`videos_from_records`).
    The sampling knobs are those of `frame_sampling.SamplingConfig` (None: the rule's default).
    Videos are decoded in max(workers, 1) worker processes, each video killed after `timeout_s` seconds
    (0: no limit); workers=0 with timeout_s=0 decodes in this process (a decoder crash then ends the run).
    `chunk_frames` and `min_decoded_fraction`: see `extract_one`. Videos kept although cut short are
    counted as done and listed in warnings.jsonl.
    """
    family_spec(family)
    cfg = SamplingConfig(rule=sampling, fps=float(fps), nframes=int(nframes or 0), min_frames=int(min_frames),
                         max_frames=int(max_frames),
                         min_pixels=None if min_pixels is None else int(min_pixels),
                         max_pixels=None if max_pixels is None else int(max_pixels),
                         total_pixels=None if total_pixels is None else float(total_pixels))
    os.makedirs(out, exist_ok=True)
    _check_store(out, {"format": "vtg_jax.frame_store/2", "family": family, **cfg.describe()})
    finished, _ = read_manifest(os.path.join(out, MANIFEST))
    if isinstance(videos, str) or (videos and isinstance(videos[0], str)):
        items = [(vid, path, None) for vid, path in list_videos(videos)]
    else:
        items = [tuple(v) for v in videos]
    stats = {"total": len(items), "done": 0, "skipped": 0, "errors": 0}
    todo, seen = [], {}
    errors_f = open(os.path.join(out, ERRORS), "a")
    warnings_f = open(os.path.join(out, WARNINGS), "a")
    manifest_f = open(os.path.join(out, MANIFEST), "a")
    warned = 0

    def write_line(f: Any, vid: str, path: str, reason: str) -> None:
        f.write(json.dumps({"video_id": vid, "path": path, "reason": reason, "family": family,
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        f.flush()

    def record_error(vid: str, path: str, reason: str) -> None:
        write_line(errors_f, vid, path, reason)
        stats["errors"] += 1

    for vid, path, window in items:
        if vid in seen:
            record_error(vid, path, f"duplicate video id (also {seen[vid]})")
        elif vid in finished:
            stats["skipped"] += 1
        else:
            todo.append((vid, path, out, family, cfg, window, int(chunk_frames), float(min_decoded_fraction)))
        seen.setdefault(vid, path)
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"extract {family}", unit="video")

    def done(task: tuple, result: tuple) -> None:
        nonlocal warned
        status, payload = result
        if status == "ok":
            manifest_f.write(json.dumps(payload) + "\n")
            manifest_f.flush()
            stats["done"] += 1
            cut = payload.get("truncated")
            if cut:
                write_line(warnings_f, task[0], task[1], (
                    f"truncated video: kept the first {cut['decoded_frames']} of {cut['source_frames']} frames "
                    f"({cut['kept_fraction']:.1%} of the {'clip' if payload['clip'] else 'video'}): {cut['cause']}"))
                warned += 1
        else:
            record_error(task[0], task[1], payload)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(errors=stats["errors"], truncated=warned)

    try:
        if timeout_s > 0 or (workers > 0 and len(todo) > 1):
            run_tasks(todo, max(1, workers), start_method, done, extract_task, timeout_s=float(timeout_s))
        else:
            for task in todo:
                done(task, extract_task(task))
    finally:
        manifest_f.close()
        errors_f.close()
        warnings_f.close()
        if bar is not None:
            bar.close()
        shutil.rmtree(os.path.join(out, TMP_DIR), ignore_errors=True)  # copies left by killed workers
    return stats


def main(argv: Sequence[str]) -> None:
    from absl import flags

    from absl import app

    f = flags.FLAGS
    if bool(f.videos) == bool(f.records):
        raise app.UsageError("give exactly one of --videos and --records")
    videos: Any = f.videos
    if f.records:

        records, load_stats = (load_dataset(f.dataset, f.records) if f.dataset else load_records_jsonl(f.records))
        print(json.dumps({"records": load_stats.as_dict()}))
        videos = videos_from_records(records, f.video_dir or os.path.dirname(os.path.abspath(f.records)))
    stats = extract(videos, f.out, family=f.family, sampling=f.sampling, fps=f.fps, nframes=f.nframes,
                    min_pixels=f.min_pixels, max_pixels=f.max_pixels, total_pixels=f.total_pixels,
                    min_frames=f.min_frames, max_frames=f.max_frames, workers=f.workers,
                    start_method=f.start_method, timeout_s=f.timeout_s, chunk_frames=f.chunk_frames,
                    min_decoded_fraction=f.min_decoded_fraction)
    print(json.dumps(stats))


def _define_flags() -> None:
    """Flags exist only when run as a command, so importing this module registers none."""
    from absl import flags

    flags.DEFINE_string("videos", None, "directory, glob or .txt list of video paths")
    flags.DEFINE_string("records", None, "instead of --videos: the videos (and clip windows) of a records file")
    flags.DEFINE_string("dataset", None, "with --records: its published format (a vtg_jax.data.datasets name); "
                        "default: our records jsonl")
    flags.DEFINE_string("video_dir", None, "with --records: where the videos are (default: the file's directory)")
    flags.DEFINE_string("out", None, "frame store directory", required=True)
    flags.DEFINE_enum("family", "qwen2_5_vl", ["qwen2_5_vl", "qwen3_vl"], "the model family's patch sizes")
    flags.DEFINE_enum("sampling", "qwen_vl_utils", list(RULES),
                      "qwen_vl_utils: qwen-vl-utils' fetch_video (the model cards, Time-R1, TVG-R1, TimeLens); "
                      "transformers: the HF video processors' own sampling and resizing")
    flags.DEFINE_float("fps", 2.0, "target sampling fps")
    flags.DEFINE_integer("nframes", 0, "a fixed number of frames instead of --fps (qwen_vl_utils; 0 = use fps)")
    flags.DEFINE_integer("min_pixels", None, "pixel budget minimum (default: the rule's for the family)")
    flags.DEFINE_integer("max_pixels", None, "pixel budget maximum (default: the rule's for the family)")
    flags.DEFINE_float("total_pixels", None, "qwen_vl_utils: budget of the whole clip (default 128000*factor^2*0.9)")
    flags.DEFINE_integer("min_frames", 4, "frame-count clamp minimum")
    flags.DEFINE_integer("max_frames", 768, "frame-count clamp maximum")
    flags.DEFINE_integer("workers", 0, "worker processes (0: one; in this process if --timeout_s is 0 too)")
    flags.DEFINE_enum("start_method", "spawn", ["spawn", "forkserver", "fork"], "multiprocessing start method")
    flags.DEFINE_float("timeout_s", DEFAULT_TIMEOUT_S, "seconds one video may take before its worker is killed "
                       "and the video recorded as an error (0: no limit)")
    flags.DEFINE_integer("chunk_frames", DEFAULT_CHUNK_FRAMES, "frames decoded at source resolution at a time")
    flags.DEFINE_float("min_decoded_fraction", DEFAULT_MIN_DECODED_FRACTION,
                       "a cut-off video is kept if its decodable start covers this fraction of it")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
