"""Grain input pipeline: records → transform → bucketed, padded batches, with checkpointable state.

Pipeline (all deterministic given the seed, the records and `worker_count`):

  MapDataset.source(records)
    → static strided shard `[shard_index::shard_count]` (one per JAX process; equal-sized when
      `drop_remainder`, so every process yields the same number of examples per epoch)
    → shuffle(seed) → repeat(num_epochs)   (grain folds the epoch into the seed: a new order each epoch)
    → or, with `rows` (per-host input of a training run): no static shard; every process shuffles the
      same whole stream, cuts it into global batches of `global_batch_size` and keeps only the given
      rows of each (`BatchRows`), so the processes' batches together are the one-process batch
    → map(transform + shape checks)        (an exception or an over-long example becomes a skip marker)
    → to_iter_dataset(ReadOptions)          (thread prefetch, order preserved)
    → skip-counting batcher                 (fills each batch with good examples; pads to buckets)
    → mp_prefetch(worker_count)             (optional worker processes; spawn + cloudpickle)

Why buckets: every distinct batch shape is one XLA compilation. Each padded axis (tokens, vision
patches) is padded per batch to the smallest configured boundary that fits the batch's longest
example, so a run sees at most `prod(len(boundaries))` shapes. Padding is to the batch maximum,
not per example, so short examples in a long batch cost only padding.

Why the skip marker instead of a filter: a long run must not die on one bad video, and the number of
skipped examples must be visible. The batcher drops markers, counts them per reason and ships the
counts inside the batch; `GroundingLoader` pops them and accumulates `skipped` (in its state, so the
counts survive a restore). Counts of skips after the last emitted batch of a finite run are not seen.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import zlib
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import grain
import numpy as np

from vtg_jax.data.records import GroundingRecord

Transform = Callable[[GroundingRecord], Mapping[str, Any]]
Example = dict[str, np.ndarray]

SKIP_KEY = "__skip__"  # marker key of an example that could not be prepared
_SKIPPED = "__skipped__"  # per-batch skip counts carried from the (possibly remote) batcher
_STATE_VERSION = 1
_MAX_LOGGED_ERRORS = 10

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Bucket:
    """One padded axis shared by several keys, e.g. the token axis of input_ids / labels / position_ids.

    Attributes:
      boundaries: ascending allowed lengths of the axis; an example longer than the last is skipped.
      keys: example key → which axis of that (unbatched) array is this bucket's axis. Keys absent
        from an example are ignored (a spec may list optional keys).
      pad_values: pad value per key (default 0), e.g. {"labels": -100}.
      mask_key: if set, the batch carries a [L] mask under this name: the transform's own mask
        padded with 0 if it produced one, else a generated int32 mask with 1 on real positions.
    """

    boundaries: tuple[int, ...]
    keys: Mapping[str, int]
    pad_values: Mapping[str, Union[int, float]] = dataclasses.field(default_factory=dict)
    mask_key: Optional[str] = None

    def __post_init__(self):
        b = tuple(int(x) for x in self.boundaries)
        if not b or any(x <= 0 for x in b) or list(b) != sorted(set(b)):
            raise ValueError(f"bucket boundaries must be positive and strictly increasing, got {self.boundaries}")
        if not self.keys:
            raise ValueError("a bucket needs at least one key")
        object.__setattr__(self, "boundaries", b)

    def length_of(self, example: Mapping[str, np.ndarray]) -> Optional[int]:
        """The example's length on this axis (None if it has none of the keys); keys must agree."""
        lengths = {k: np.shape(example[k])[ax] for k, ax in self.keys.items() if k in example}
        if not lengths:
            return None
        if len(set(lengths.values())) != 1:
            raise ValueError(f"keys of one bucket disagree on length: {lengths}")
        return next(iter(lengths.values()))


Buckets = Mapping[str, Bucket]


def qwen_vl_buckets(tokens: Sequence[int], patches: Sequence[int], groups: Sequence[int]) -> dict[str, Bucket]:
    """Buckets for `vtg_jax.data.processor` outputs: the token axis, the video-patch axis, the rows of
    `video_grid_thw` (one per video, or one per frame group when Qwen2.5 interleaves timestamps) and the
    per-frame-group timestamps. Grid rows and timestamps are separate axes: they agree in length only
    in the interleaved Qwen2.5 layout."""
    return {
        "tokens": Bucket(tuple(tokens), {"input_ids": 0, "attention_mask": 0, "mm_token_type_ids": 0, "labels": 0,
                                         "loss_mask": 0, "position_ids": 1}, {"labels": -100}, "attention_mask"),
        "patches": Bucket(tuple(patches), {"pixel_values_videos": 0}, mask_key="video_patch_mask"),
        "grid_rows": Bucket(tuple(groups), {"video_grid_thw": 0, "second_per_grid_ts": 0},
                            mask_key="video_grid_mask"),
        "groups": Bucket(tuple(groups), {"video_timestamps": 0}, mask_key="video_group_mask"),
    }


def bucket_length(length: int, boundaries: Sequence[int]) -> int:
    """The smallest boundary >= length; ValueError if none fits."""
    for b in boundaries:
        if length <= b:
            return b
    raise ValueError(f"length {length} exceeds the largest bucket {boundaries[-1]}")


def pad_to_bucket(example: Mapping[str, Any], buckets: Buckets,
                  lengths: Optional[Mapping[str, int]] = None) -> Example:
    """Pads one example's bucketed axes and adds each bucket's mask.

    Args:
      example: key → array (unbatched).
      buckets: bucket name → Bucket.
      lengths: bucket name → target length; default: the smallest boundary fitting the example.
        A batch passes the length that fits its longest example so all its members share a shape.
    """
    out = {k: np.asarray(v) for k, v in example.items()}
    for name, bucket in buckets.items():
        n = bucket.length_of(out)
        if n is None:
            continue
        target = bucket_length(n, bucket.boundaries) if lengths is None else int(lengths[name])
        if target < n:
            raise ValueError(f"bucket {name!r}: target length {target} < example length {n}")
        for key, axis in bucket.keys.items():
            if key not in out:
                continue
            arr = out[key]
            width = [(0, 0)] * arr.ndim
            width[axis] = (0, target - n)
            out[key] = np.pad(arr, width, constant_values=np.asarray(bucket.pad_values.get(key, 0), arr.dtype))
        mask_key = bucket.mask_key
        if mask_key is not None and mask_key not in bucket.keys:
            if mask_key in out:  # the transform's own mask: pad it with zeros like any bucketed key
                out[mask_key] = np.pad(out[mask_key], [(0, target - n)])
            else:
                out[mask_key] = (np.arange(target) < n).astype(np.int32)
    return out


def collate(examples: Sequence[Mapping[str, Any]], buckets: Buckets) -> Example:
    """Pads examples to their batch's bucket lengths and stacks them along a new leading axis."""
    lengths = {}
    for name, bucket in buckets.items():
        ns = [n for n in (bucket.length_of(ex) for ex in examples) if n is not None]
        if ns:
            lengths[name] = bucket_length(max(ns), bucket.boundaries)
    padded = [pad_to_bucket(ex, buckets, lengths) for ex in examples]
    out = {}
    for key in padded[0]:
        arrays = [p[key] for p in padded]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"key {key!r} has varying shapes {sorted(shapes)} in one batch: add it to a Bucket")
        out[key] = np.stack(arrays)
    return out


class BatchRows(grain.MapDataset):
    """Rows `rows` (positions in [0, global_batch_size)) of every consecutive global batch of `parent`:
    element i is parent[(i // len(rows)) · global_batch_size + rows[i % len(rows)]]. A process that reads
    only its rows of each global batch decodes only its share of the data (`make_loader(rows=...)`)."""

    _MUTATES_ELEMENT_SPEC = False

    def __init__(self, parent: grain.MapDataset, global_batch_size: int, rows: Sequence[int]):
        super().__init__(parent)
        rows = [int(r) for r in rows]
        if not rows or sorted(set(rows)) != rows or rows[0] < 0 or rows[-1] >= global_batch_size:
            raise ValueError(f"rows must be increasing positions in [0, {global_batch_size}), got {rows}")
        self._global, self._rows = int(global_batch_size), rows

    def __len__(self) -> int:
        return len(self._parent) // self._global * len(self._rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        batch, k = divmod(int(index), len(self._rows))
        return self._parent[batch * self._global + self._rows[k]]

    def __str__(self) -> str:
        return f"BatchRows(global_batch_size={self._global}, rows={len(self._rows)})"


def pad_batch(batch: Mapping[str, Any], buckets: Buckets, lengths: Mapping[str, int]) -> Example:
    """A collated batch with each bucket's axis (and its mask) padded on to `lengths[name]` (at least its
    length now), e.g. to the length another process's batch was padded to."""
    out = {k: np.asarray(v) for k, v in batch.items()}
    for name, target in lengths.items():
        bucket = buckets[name]
        keys = dict(bucket.keys)
        if bucket.mask_key is not None and bucket.mask_key not in keys:
            keys[bucket.mask_key] = 0
        for key, axis in keys.items():
            if key not in out:
                continue
            arr, axis = out[key], axis + 1  # + the batch axis
            if arr.shape[axis] > target:
                raise ValueError(f"bucket {name!r}: {key} is {arr.shape[axis]} long, longer than {target}")
            width = [(0, 0)] * arr.ndim
            width[axis] = (0, int(target) - arr.shape[axis])
            out[key] = np.pad(arr, width, constant_values=np.asarray(bucket.pad_values.get(key, 0), arr.dtype))
    return out


class PrepareExample:
    """Record → example, or a skip marker `{SKIP_KEY: reason}`; never raises (picklable for workers)."""

    def __init__(self, transform: Transform, buckets: Buckets):
        self.transform = transform
        self.buckets = buckets
        self._logged = 0

    def _log(self, record: Any, reason: str, err: Optional[BaseException]) -> None:
        if self._logged < _MAX_LOGGED_ERRORS:
            self._logged += 1
            qid = getattr(record, "qid", "?")
            log.warning("skipping example %s (%s): %r", qid, reason, err)

    def __call__(self, record: GroundingRecord) -> dict:
        try:
            ex = {k: np.asarray(v) for k, v in self.transform(record).items()}
        except Exception as e:  # noqa: BLE001 — any per-example failure is skipped and counted
            self._log(record, "transform_error", e)
            return {SKIP_KEY: "transform_error"}
        for name, bucket in self.buckets.items():
            try:
                n = bucket.length_of(ex)
            except (ValueError, IndexError) as e:
                self._log(record, "bad_shape", e)
                return {SKIP_KEY: "bad_shape"}
            if n is not None and n > bucket.boundaries[-1]:
                self._log(record, f"too_long/{name}", None)
                return {SKIP_KEY: f"too_long/{name}"}
        return ex


class _SkipBatchIterator(grain.DatasetIterator):
    """Collects `batch_size` good examples, counting skip markers; state = the parent's state."""

    def __init__(self, parent: grain.DatasetIterator, batch_size: int, drop_remainder: bool, buckets: Buckets):
        super().__init__(parent)
        self._batch_size = batch_size
        self._drop_remainder = drop_remainder
        self._buckets = buckets

    def __next__(self) -> dict:
        skipped: collections.Counter = collections.Counter()
        items = []
        while len(items) < self._batch_size:
            try:
                ex = next(self._parent)
            except StopIteration:
                break
            if SKIP_KEY in ex:
                skipped[ex[SKIP_KEY]] += 1
            else:
                items.append(ex)
        if not items or (self._drop_remainder and len(items) < self._batch_size):
            raise StopIteration
        batch = collate(items, self._buckets)
        batch[_SKIPPED] = dict(skipped)
        return batch

    def get_state(self) -> dict:
        return self._parent.get_state()

    def set_state(self, state: dict) -> None:
        self._parent.set_state(state)


class _SkipBatchDataset(grain.IterDataset):
    def __init__(self, parent: grain.IterDataset, batch_size: int, drop_remainder: bool, buckets: Buckets):
        super().__init__(parent)
        self._batch_size = batch_size
        self._drop_remainder = drop_remainder
        self._buckets = buckets

    def __iter__(self) -> _SkipBatchIterator:
        return _SkipBatchIterator(self._parent.__iter__(), self._batch_size, self._drop_remainder, self._buckets)

    def __str__(self) -> str:
        return f"SkipBatchDataset(batch_size={self._batch_size}, drop_remainder={self._drop_remainder})"


def resolve_shard(shard_index: Optional[int], shard_count: Optional[int]) -> tuple[int, int]:
    """(index, count): explicit values, or this JAX process's index and the process count."""
    if shard_index is None and shard_count is None:
        import jax  # lazily: worker processes and dataset tools need not import jax

        return jax.process_index(), jax.process_count()
    if shard_index is None or shard_count is None:
        raise ValueError("pass both shard_index and shard_count, or neither (then JAX's process index/count)")
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    return int(shard_index), int(shard_count)


class GroundingLoader:
    """Iterator of padded batches with JSON-serialisable `get_state` / `set_state` and skip metrics."""

    def __init__(self, dataset: grain.IterDataset, fingerprint: dict):
        self._dataset = dataset
        self._fingerprint = fingerprint
        self._it: Optional[grain.DatasetIterator] = None
        self.skipped: collections.Counter = collections.Counter()
        self.num_batches = 0
        self.num_read = 0  # records this process prepared: batch rows and skipped ones

    def _iterator(self) -> grain.DatasetIterator:
        if self._it is None:
            self._it = self._dataset.__iter__()
        return self._it

    def __iter__(self) -> "GroundingLoader":
        return self

    def __next__(self) -> Example:
        batch = next(self._iterator())
        skipped = batch.pop(_SKIPPED, {})
        self.skipped.update(skipped)
        self.num_batches += 1
        self.num_read += int(np.shape(batch["input_ids"])[0]) if "input_ids" in batch else 0
        self.num_read += sum(skipped.values())
        return batch

    def get_state(self) -> dict:
        """The position after the last returned batch; plain JSON types only (for Orbax / json.dump)."""
        return {"version": _STATE_VERSION, "fingerprint": dict(self._fingerprint), "num_batches": self.num_batches,
                "skipped": dict(self.skipped), "read": self.num_read, "grain": self._iterator().get_state()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a `get_state()` of a loader built with the same records and settings."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')!r} != {_STATE_VERSION}")
        if dict(state["fingerprint"]) != self._fingerprint:
            diff = {k: (state["fingerprint"].get(k), v) for k, v in self._fingerprint.items()
                    if state["fingerprint"].get(k) != v}
            raise ValueError(f"loader state is from a different pipeline (saved, now): {diff}")
        self._iterator().set_state(state["grain"])
        self.num_batches = int(state["num_batches"])
        self.skipped = collections.Counter({k: int(v) for k, v in state["skipped"].items()})
        self.num_read = int(state.get("read", 0))  # states saved before reads were counted: from 0

    def metrics(self) -> dict[str, int]:
        """Flat `data/...` counters for the metrics writer."""
        out = {"data/batches": self.num_batches, "data/skipped": sum(self.skipped.values()), "data/read": self.num_read}
        out.update({f"data/skipped/{k}": v for k, v in sorted(self.skipped.items())})
        return out

    def close(self) -> None:
        """Stops worker processes (also done at garbage collection, but not promptly)."""
        if self._it is not None:
            self._it.close()

    def __enter__(self) -> "GroundingLoader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _ensure_absl_flags_parsed() -> None:
    """Grain's worker prefetch reads absl flags; outside `absl.app.run` (tests, notebooks, scripts) they
    are unparsed and the read raises. Marking them parsed keeps every flag at its default."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _records_crc(records: Sequence[GroundingRecord]) -> int:
    """A cheap identity of the record list, so a state is not restored onto different data."""
    crc = 0
    for r in records:
        crc = zlib.crc32(f"{r.source}|{r.video_id}|{r.qid}\n".encode(), crc)
    return crc


def make_loader(records: Sequence[GroundingRecord], transform: Transform, *, batch_size: int, seed: int,
                buckets: Buckets, shuffle: bool = True, num_epochs: Optional[int] = None, worker_count: int = 0,
                shard_index: Optional[int] = None, shard_count: Optional[int] = None,
                rows: Optional[Sequence[int]] = None, global_batch_size: Optional[int] = None,
                drop_remainder: bool = True, read_threads: int = 2, prefetch_buffer_size: int = 32,
                worker_buffer_size: int = 2) -> GroundingLoader:
    """Builds the pipeline described in the module docstring.

    Args:
      records: the dataset (all processes pass the same list; each keeps its shard).
      transform: record → dict of arrays (the processor); may raise, the example is then skipped.
        It runs on `read_threads` threads (use read_threads=1 if it is not thread-safe) and, with
        `worker_count > 0`, in spawned processes, so it must be picklable by cloudpickle.
      batch_size: per-process batch size.
      seed: shuffle seed (the epoch is folded in by grain).
      buckets: padded axes, see `Bucket`.
      shuffle: shuffle each epoch (False for evaluation).
      num_epochs: None repeats forever (training); an int stops after that many passes.
      worker_count: worker processes (0: transform runs in this process on `read_threads` threads).
      shard_index, shard_count: this process's shard; default jax.process_index()/process_count().
      rows, global_batch_size: instead of a static shard, this process's rows of every global batch of
        the shared shuffled stream (`BatchRows`; batch_size = len(rows)): what per-host input reads.
      drop_remainder: drop the short last batch and trim the records so all shards are equal-sized
        (training); False keeps every record (evaluation). Batches may straddle epoch boundaries.
      read_threads, prefetch_buffer_size: grain ReadOptions of the transform stage (per process).
      worker_buffer_size: batches each worker process keeps ready.

    With workers, each worker batches its own strided slice of the stream, so the batch composition
    depends on `worker_count` (it is part of the state's fingerprint), and batch arrays live in shared
    memory until dropped.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if num_epochs is not None and num_epochs <= 0:
        raise ValueError(f"num_epochs must be None or positive, got {num_epochs}")
    records = list(records)
    if rows is not None:
        if global_batch_size is None or len(rows) != batch_size:
            raise ValueError(f"rows need global_batch_size and batch_size = len(rows) ({len(rows)}), got "
                             f"{global_batch_size} and {batch_size}")
        index, count = 0, 1
    else:
        index, count = resolve_shard(shard_index, shard_count)
    n = len(records) - len(records) % count if drop_remainder else len(records)
    ds = grain.MapDataset.source(records)[:n][index::count]
    if len(ds) == 0:
        raise ValueError(f"shard {index}/{count} of {len(records)} records is empty")
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    if rows is not None:
        ds = BatchRows(ds, global_batch_size, rows)
    ds = ds.map(PrepareExample(transform, buckets))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_buffer_size))
    it = _SkipBatchDataset(it, batch_size, drop_remainder, buckets)
    if worker_count > 0:
        _ensure_absl_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                         per_worker_buffer_size=worker_buffer_size))
    fingerprint = {"records": len(records), "records_crc": _records_crc(records), "seed": seed, "shuffle": shuffle,
                   "num_epochs": num_epochs, "batch_size": batch_size, "drop_remainder": drop_remainder,
                   "shard_index": index, "shard_count": count, "worker_count": worker_count,
                   **({} if rows is None else {"rows": [int(r) for r in rows], "global_batch_size": global_batch_size})}
    return GroundingLoader(it, fingerprint)
