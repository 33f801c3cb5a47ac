"""Data of a run: records, frame store, tokenizer, processor, buckets and the loader, from `config.data`.

Synthetic runs (`data.synthetic.enabled`, the default) generate the benchmark and extract its frames
once into `data.cache_dir` (a directory keyed by the benchmark settings and the model family), so a
teacher run, a student run and an eval run pointed at the same cache share one copy. Other runs read
`data.train/val/test` jsonl files of `GroundingRecord`s, a frame store from `python -m
vtg_jax.data.extract`, and the model's tokenizer directory.

Every example is made WITH its answer (`data.answer_format` of the first span), so one loader serves
every objective: SFT trains on the answer tokens (`loss_mask`), the RL objectives take the prompt
part (`prompt_only`: everything before the first answer token, i.e. up to the assistant header) and
use the answer tokens as the ground-truth trajectory (TempSamp-R1, OP-RKD, OP-FKD). Each example also
carries what rewards score against, its record's first `span` and `duration`, and `record_index`, its
position in the split (the sampler's prompt id), so an iteration needs nothing but its batch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Any, Optional, Sequence

import jax

from vtg_jax.data.datasets import LoadStats, load_records_jsonl
from vtg_jax.data.extract import extract
from vtg_jax.data.frame_sampling import SamplingConfig
from vtg_jax.data.frame_store import FrameStore
from vtg_jax.data.loader import make_loader, qwen_vl_buckets
from vtg_jax.data.processor import QwenVLProcessor, build_tiny_tokenizer
from vtg_jax.data.records import GroundingRecord
from vtg_jax.data.run_data import RecordTransform, RunData
from vtg_jax.data.synthetic import generate
from vtg_jax.models.qwen_vl.config import QwenVLConfig

SPLITS = ("train", "val", "test")
SYNTHETIC_OVERRIDES = ("min_duration", "max_duration", "min_span", "max_span", "grid", "size", "plain_background",
                       "object_scale")


def sampling_config(data: Any) -> Any:
    """`frame_sampling.SamplingConfig` of `config.data` (None = the rule's default for a pixel budget;
    nframes None = by fps, SamplingConfig's 0)."""
    number = lambda x, kind: None if x is None else kind(x)  # noqa: E731
    nframes = 0 if data.nframes is None else int(data.nframes)
    return SamplingConfig(rule=data.sampling, fps=float(data.fps), nframes=nframes,
                          min_frames=int(data.min_frames), max_frames=int(data.max_frames),
                          min_pixels=number(data.min_pixels, int), max_pixels=number(data.max_pixels, int),
                          total_pixels=number(data.total_pixels, float))


def check_store_sampling(store_path: str, family: str, data: Any) -> None:
    """Refuses a frame store extracted with other frames than the run's `config.data` asks for."""
    try:
        info = FrameStore(store_path).info()
    except FileNotFoundError:
        return  # no store.json: the store's own reader reports what is missing
    want = {"family": family, **sampling_config(data).describe()}
    diff = {k: (info.get(k), v) for k, v in want.items() if info.get(k) != v}
    if diff:
        raise ValueError(f"frame store {store_path} was extracted with other settings than config.data asks for "
                         f"(store, config): {diff}; extract it again with those values "
                         f"(python -m vtg_jax.data.extract --help) or set config.data to the store's")


def make_processor(cfg: QwenVLConfig, tokenizer: Any, data: Any) -> QwenVLProcessor:
    """The processor `config.data` describes: its prompt template, system turn, nominal fps and textual
    timestamps ("auto": Qwen3 yes, Qwen2.5 no)."""
    interleave = {"auto": None, "true": True, "false": False}[str(data.interleave_timestamps).lower()]
    return QwenVLProcessor(cfg, tokenizer, template=data.template, fps=data.fps, interleave_timestamps=interleave,
                           system=data.system or None)


def _cache_key(syn: Any, family: str, data: Any) -> str:
    blob = json.dumps({"syn": {k: syn[k] for k in sorted(syn.keys()) if k != "enabled"}, "family": family,
                       "sampling": sampling_config(data).describe()}, sort_keys=True)
    return f"syn_{syn.preset}_l{syn.level}_s{syn.seed}_{family}_{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def prepare_synthetic(data: Any, family: str, cache_dir: str, progress: bool = True) -> dict[str, str]:
    """Generates and extracts the synthetic benchmark once; returns paths {train, val, test, store}.
    A `DONE` marker makes a half-written cache (a killed first run) start over cleanly."""

    syn = data.synthetic
    root = os.path.join(cache_dir, _cache_key(syn, family, data))
    paths = {s: os.path.join(root, f"{s}.jsonl") for s in SPLITS}
    paths["store"] = os.path.join(root, "frames")
    done = os.path.join(root, "DONE")
    if jax.process_index() != 0:  # several processes: the first one writes the (shared) cache
        deadline = time.time() + 3600
        while not os.path.exists(done):
            if time.time() > deadline:
                raise TimeoutError(f"process 0 did not finish the synthetic data in {root}")
            time.sleep(1.0)
    if os.path.exists(done):
        return paths
    shutil.rmtree(root, ignore_errors=True)
    overrides = {k: syn[k] for k in SYNTHETIC_OVERRIDES if syn[k] is not None}  # None: the preset's value
    generate(root, num_train=syn.num_train, num_val=syn.num_val, num_test=syn.num_test, level=syn.level,
             seed=syn.seed, preset=syn.preset, progress=progress, **overrides)
    cfg = sampling_config(data)
    stats = extract(os.path.join(root, "videos"), paths["store"], family=family, sampling=cfg.rule, fps=cfg.fps,
                    nframes=cfg.nframes, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
                    total_pixels=cfg.total_pixels, min_frames=cfg.min_frames, max_frames=cfg.max_frames,
                    workers=0, progress=progress)
    if stats["errors"]:
        raise RuntimeError(f"synthetic extraction failed for {stats['errors']} videos: see {paths['store']}")
    open(done, "w").close()
    return paths


def load_tokenizer(path: str, family: str, cache_dir: str) -> Any:
    """A `tokenizers.Tokenizer` from `path/tokenizer.json`; "" builds the tiny test tokenizer."""
    from tokenizers import Tokenizer

    if not path:
        path = os.path.join(cache_dir, f"tokenizer_{family}")
        if not os.path.isfile(os.path.join(path, "tokenizer.json")):  # build aside, then rename: processes race
            tmp = build_tiny_tokenizer(f"{path}.tmp{os.getpid()}", family)
            try:
                os.rename(tmp, path)
            except OSError:  # another process won
                shutil.rmtree(tmp, ignore_errors=True)
    file = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"no tokenizer.json in {path!r} (config.data.tokenizer)")
    return Tokenizer.from_file(file)


def _read_split(path: str) -> tuple[list[GroundingRecord], LoadStats]:
    """A records jsonl under the adapters' validation (`datasets.load_records_jsonl`): NaN / infinite /
    non-numeric values, zero or negative durations and spans outside the video are dropped, reversed
    spans swapped, spans past the end clipped, malformed lines (not UTF-8, not JSON, a field missing)
    skipped and logged as file:line; each counted in the returned stats. Duplicate qids are an error."""
    if not path:
        return [], LoadStats()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"records file {path!r} does not exist")
    records, stats = load_records_jsonl(path)
    seen: set[str] = set()
    for r in records:
        if r.qid in seen:
            raise ValueError(f"{path}: duplicate qid {r.qid!r} (record_index needs unique qids)")
        seen.add(r.qid)
    return records, stats


def restrict_to_subset(records: Sequence[GroundingRecord], subset_path: str,
                       load_stats: Optional[dict[str, LoadStats]] = None) -> list[GroundingRecord]:
    """The subset file's records, in its order, taken from `records` by qid (the subset's own fields,
    e.g. a kept `extra["completion"]`, win). Unknown qids are an error: a subset of another dataset.
    The subset file's own load stats go to `load_stats["train_subset"]` when a dict is given."""
    by_qid = {r.qid: r for r in records}
    subset, stats = _read_split(subset_path)
    if load_stats is not None:
        load_stats["train_subset"] = stats
    unknown = [r.qid for r in subset if r.qid not in by_qid]
    if unknown:
        raise ValueError(f"{subset_path}: {len(unknown)} qids are not in the train split (e.g. {unknown[0]!r})")
    if not subset:
        raise ValueError(f"{subset_path}: the training subset is empty")
    return [dataclasses.replace(by_qid[r.qid], extra={**by_qid[r.qid].extra, **r.extra}) for r in subset]


def _auto_buckets(transform: RecordTransform, records: Sequence[GroundingRecord], data: Any) -> dict:
    """One bucket per axis at the longest example (plus 8 tokens of slack, a multiple of 16), unless
    `data.*_buckets` name their boundaries. Probes the records with the most frames and longest query."""
    tokens, patches, groups = tuple(data.token_buckets), tuple(data.patch_buckets), tuple(data.group_buckets)
    if not (tokens and patches and groups):
        probe = sorted(records, key=lambda r: (r.duration, len(r.query), len(transform.answer(r))))[-4:]
        exs = []
        for r in probe:
            try:
                exs.append(transform(r))
            except Exception:  # noqa: BLE001 — a missing probe video is counted later by the loader
                continue
        if not exs:
            raise RuntimeError("no probe record could be loaded to size the buckets; set data.*_buckets")
        n_tok = max(len(e["input_ids"]) for e in exs) + 8
        tokens = tokens or (-(-n_tok // 16) * 16,)
        patches = patches or (max(len(e["pixel_values_videos"]) for e in exs),)
        groups = groups or (max(max(len(e["video_grid_thw"]), len(e.get("video_timestamps", ()))) for e in exs),)
    return qwen_vl_buckets(tokens=tokens, patches=patches, groups=groups)


def build_run_data(cfg: QwenVLConfig, data: Any, workdir: str, *, progress: bool = True) -> RunData:
    """Records, processor and buckets for a run (every process builds the same)."""

    cache_dir = data.cache_dir or os.path.join(workdir, "data")
    os.makedirs(cache_dir, exist_ok=True)
    if data.synthetic.enabled:
        given = [f"config.data.{k}" for k in (*SPLITS, "frame_store") if data[k]]
        if given:
            raise ValueError(f"{', '.join(given)} given together with config.data.synthetic.enabled=True, which "
                             "generates its own records and frames and would ignore them: set "
                             "--config.data.synthetic.enabled=False to use your files, or leave them empty")
        paths = prepare_synthetic(data, cfg.family, cache_dir, progress)
    else:
        paths = {s: data[s] for s in SPLITS}
        paths["store"] = data.frame_store
        if not (paths["train"] or paths["val"] or paths["test"]) or not paths["store"]:
            raise ValueError("set config.data.train / val / test and config.data.frame_store "
                             "(or config.data.synthetic.enabled=True)")
    tok = load_tokenizer(data.tokenizer, cfg.family, cache_dir)
    proc = make_processor(cfg, tok, data)
    splits, load_stats = {}, {}
    for s in SPLITS:
        splits[s], stats = _read_split(paths[s])
        if paths[s]:
            load_stats[s] = stats
    if data.train_subset:
        splits["train"] = restrict_to_subset(splits["train"], data.train_subset, load_stats)
    check_store_sampling(paths["store"], cfg.family, data)
    store = FrameStore(paths["store"])
    missing = {s: sum(r.video_id not in store for r in recs) for s, recs in splits.items()}
    transforms = {s: RecordTransform(paths["store"], proc, data.answer_format, {r.qid: i for i, r in enumerate(recs)})
                  for s, recs in splits.items()}
    # Sized on every split, so that evaluation batches fit the same buckets (and compiled programs).
    sizing = [r for s in SPLITS for r in splits[s]]
    buckets = _auto_buckets(transforms["train" if splits["train"] else ("val" if splits["val"] else "test")],
                            sizing, data)
    return RunData(splits, paths["store"], proc, tok, buckets, transforms, missing, load_stats=load_stats)


def make_train_loader(run_data: RunData, data: Any, *, batch_size: int, seed: int,
                      rows: Optional[Sequence[int]] = None) -> Any:
    """The training loader over `train`: seeded shuffle, repeated epochs, the run's buckets. `batch_size`
    is the global batch; with `rows` (per-host input, `parallel.distributed.process_rows`) this process
    reads only those rows of each global batch, else the whole batch (see vtg_jax/run/loop.py)."""
    if not run_data.splits["train"]:
        raise ValueError("the train split is empty")
    shard = dict(shard_index=0, shard_count=1) if rows is None else dict(
        rows=[int(r) for r in rows], global_batch_size=batch_size)
    return make_loader(run_data.splits["train"], run_data.transforms["train"],
                       batch_size=batch_size if rows is None else len(rows), seed=seed, buckets=run_data.buckets,
                       read_threads=data.read_threads, worker_count=data.worker_count, **shard)


def missing_summary(run_data: RunData) -> Optional[str]:
    bad = {s: n for s, n in run_data.missing_videos.items() if n}
    return None if not bad else f"records whose video is not in the frame store (skipped and counted): {bad}"
