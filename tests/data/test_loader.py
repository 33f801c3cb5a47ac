"""Grain loader: sharding, seeded shuffling, bucket padding, skip-and-count, checkpointable state."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from vtg_jax.data.loader import Bucket, bucket_length, collate, make_loader, pad_to_bucket, qwen_vl_buckets
from vtg_jax.data.processor import QwenVLProcessor, build_tiny_tokenizer
from vtg_jax.data.records import GroundingRecord
from vtg_jax.data.run_data import RecordTransform
from vtg_jax.models.qwen_vl.presets import get_preset
from vtg_jax.rollout.packing import sampler_inputs
from vtg_jax.rollout.prompts import prompt_only
from vtg_jax.train.batch import prepare_batch

TOKENS = (8, 16, 32)
PATCHES = (8, 16)
BUCKETS = {
    "tokens": Bucket(TOKENS, {"input_ids": 0, "labels": 0, "position_ids": 1}, {"labels": -100}, "attention_mask"),
    "patches": Bucket(PATCHES, {"pixel_values": 0}, mask_key="vision_mask"),
}


def n_tokens(i):
    return 3 + (i * 7) % 28  # 3..30: spans all three token buckets


def n_patches(i):
    return 2 + (i * 5) % 13  # 2..14


class FakeTransform:
    """Stands in for the processor: variable-length tokens and patches; raises on `bad` records.

    A module-level class so worker processes can unpickle it by reference.
    """

    def __init__(self, bad=(), too_long=()):
        self.bad, self.too_long = set(bad), set(too_long)

    def __call__(self, r):
        i = int(r.qid)
        if i in self.bad:
            raise RuntimeError(f"cannot decode video {r.video_id}")
        t = 100 if i in self.too_long else n_tokens(i)
        return {
            "input_ids": np.arange(t, dtype=np.int32) + 1,
            "labels": np.full((t,), i, np.int32),
            "position_ids": np.tile(np.arange(t, dtype=np.int32), (3, 1)),
            "pixel_values": np.full((n_patches(i), 3), i, np.float32),
            "index": np.int32(i),
            "span": np.asarray(r.span, np.float32),
        }


def make_records(n):
    return [GroundingRecord(f"vid{i}", 30.0, f"query {i}", ((1.0, 2.0 + i % 5),), qid=str(i), source="t")
            for i in range(n)]


def indices(batches):
    return [int(x) for b in batches for x in b["index"]]


def loader(records, transform=None, **kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("seed", 0)
    kw.setdefault("shard_index", 0)
    kw.setdefault("shard_count", 1)
    return make_loader(records, transform or FakeTransform(), buckets=BUCKETS, **kw)


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


# ------------------------------------------------------------------ padding


def test_pad_to_bucket_single_example():
    ex = FakeTransform()(make_records(2)[1])  # 10 tokens, 7 patches
    out = pad_to_bucket(ex, BUCKETS)
    assert out["input_ids"].shape == (16,) and out["position_ids"].shape == (3, 16)
    assert out["labels"][10:].tolist() == [-100] * 6 and out["input_ids"][10:].tolist() == [0] * 6
    assert out["attention_mask"].tolist() == [1] * 10 + [0] * 6 and out["attention_mask"].dtype == np.int32
    assert out["pixel_values"].shape == (8, 3) and out["vision_mask"].sum() == 7
    assert out["span"].shape == (2,)  # untouched
    out = pad_to_bucket(ex, BUCKETS, lengths={"tokens": 32, "patches": 16})
    assert out["input_ids"].shape == (32,) and out["pixel_values"].shape == (16, 3)
    assert bucket_length(8, TOKENS) == 8 and bucket_length(9, TOKENS) == 16
    with pytest.raises(ValueError, match="exceeds"):
        bucket_length(33, TOKENS)
    with pytest.raises(ValueError, match="increasing"):
        Bucket((16, 8), {"input_ids": 0})


def test_collate_pads_to_batch_max_and_rejects_ragged_unbucketed_keys():
    exs = [FakeTransform()(r) for r in make_records(3)]  # 3, 10, 17 tokens
    batch = collate(exs, BUCKETS)
    assert batch["input_ids"].shape == (3, 32) and batch["pixel_values"].shape == (3, 16, 3)
    assert batch["attention_mask"].sum(1).tolist() == [3, 10, 17]
    bad = [{"input_ids": np.ones(3), "extra": np.ones(2)}, {"input_ids": np.ones(4), "extra": np.ones(5)}]
    with pytest.raises(ValueError, match="extra"):
        collate(bad, BUCKETS)


def _processor_like(n_tok, n_groups, patches_per_group):
    """The keys and shapes `vtg_jax.data.processor` emits for one video sample."""
    return {
        "input_ids": np.arange(n_tok, dtype=np.int32), "attention_mask": np.ones(n_tok, np.int32),
        "mm_token_type_ids": np.zeros(n_tok, np.int32), "labels": np.full(n_tok, 7, np.int32),
        "loss_mask": np.ones(n_tok, np.int32), "position_ids": np.zeros((3, n_tok), np.int32),
        "prompt_length": np.array(3, np.int32), "rope_deltas": np.zeros((1,), np.int32),
        "pixel_values_videos": np.ones((n_groups * patches_per_group, 6), np.float32),
        "video_grid_thw": np.tile(np.array([[1, 2, 2]]), (n_groups, 1)),
        "video_timestamps": np.arange(n_groups, dtype=np.float32),
        "second_per_grid_ts": np.ones(n_groups, np.float32),
    }


def test_qwen_vl_buckets_pad_processor_outputs():
    buckets = qwen_vl_buckets(tokens=(16, 32), patches=(16, 64), groups=(4, 8))
    batch = collate([_processor_like(10, 3, 4), _processor_like(20, 5, 4)], buckets)
    assert batch["input_ids"].shape == (2, 32) and batch["position_ids"].shape == (2, 3, 32)
    assert batch["attention_mask"].sum(1).tolist() == [10, 20]  # the transform's own mask, zero-padded
    assert batch["labels"][0, 10:].tolist() == [-100] * 22
    assert batch["pixel_values_videos"].shape == (2, 64, 6) and batch["video_patch_mask"].sum(1).tolist() == [12, 20]
    assert batch["video_grid_thw"].shape == (2, 8, 3) and batch["video_grid_mask"].sum(1).tolist() == [3, 5]
    assert batch["video_timestamps"].shape == (2, 8) and batch["video_group_mask"].sum(1).tolist() == [3, 5]
    assert batch["prompt_length"].shape == (2,) and batch["rope_deltas"].shape == (2, 1)


def test_loader_emits_only_configured_shapes():
    records = make_records(40)
    batches = list(loader(records, num_epochs=1, drop_remainder=False, batch_size=3))
    assert sorted(indices(batches)) == list(range(40))
    shapes = {(b["input_ids"].shape[1], b["pixel_values"].shape[1]) for b in batches}
    assert {s[0] for s in shapes} <= set(TOKENS) and {s[1] for s in shapes} <= set(PATCHES)
    assert len({s[0] for s in shapes}) > 1  # several buckets are really used
    for b in batches:
        idx = b["index"].tolist()
        assert b["attention_mask"].sum(1).tolist() == [n_tokens(i) for i in idx]
        assert b["vision_mask"].sum(1).tolist() == [n_patches(i) for i in idx]
        assert b["position_ids"].shape == (len(idx), 3, b["input_ids"].shape[1])
        assert b["input_ids"].dtype == np.int32 and b["attention_mask"].shape == b["input_ids"].shape


# ------------------------------------------------------------------ sharding and shuffling


def test_shards_disjoint_and_cover():
    records = make_records(23)
    parts = [indices(loader(records, shard_index=k, shard_count=2, num_epochs=1, drop_remainder=False, batch_size=2))
             for k in range(2)]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(23))
    # Training mode: the odd record is trimmed so both shards see the same number of examples.
    parts = [indices(loader(records, shard_index=k, shard_count=2, num_epochs=1, batch_size=1)) for k in range(2)]
    assert len(parts[0]) == len(parts[1]) == 11 and not set(parts[0]) & set(parts[1])
    with pytest.raises(ValueError, match="both"):
        loader(records, shard_index=1, shard_count=None)


def test_default_shard_is_the_jax_process():
    ld = make_loader(make_records(8), FakeTransform(), batch_size=2, seed=0, buckets=BUCKETS)
    state = ld.get_state()
    assert (state["fingerprint"]["shard_index"], state["fingerprint"]["shard_count"]) == (0, 1)


def test_seeded_shuffle_is_deterministic_and_differs_across_epochs():
    records = make_records(16)
    run = lambda seed: indices(loader(records, seed=seed, num_epochs=3, batch_size=4))  # noqa: E731
    a, b, c = run(7), run(7), run(8)
    assert a == b and a != c
    epochs = [a[i * 16:(i + 1) * 16] for i in range(3)]
    assert all(sorted(e) == list(range(16)) for e in epochs)  # each epoch is a full permutation
    assert len({tuple(e) for e in epochs}) == 3  # ... in a different order each time
    assert indices(loader(records, shuffle=False, num_epochs=1)) == list(range(16))


# ------------------------------------------------------------------ skip and count


def test_failing_and_too_long_examples_are_skipped_and_counted():
    bad, too_long = {2, 5, 11}, {7}
    ld = loader(make_records(20), FakeTransform(bad, too_long), shuffle=False, num_epochs=1, drop_remainder=False)
    batches = list(ld)
    assert indices(batches) == [i for i in range(20) if i not in bad | too_long]
    assert [len(b["index"]) for b in batches] == [4, 4, 4, 4]  # batches are refilled, not shortened
    assert ld.metrics() == {"data/batches": 4, "data/skipped": 4, "data/skipped/transform_error": 3,
                            "data/skipped/too_long/tokens": 1, "data/read": 20}  # 16 rows + 4 skipped


# ------------------------------------------------------------------ checkpointable state


def _restore_check(worker_count, stop_after=3, **kw):
    records = make_records(30)
    transform = FakeTransform(bad={4, 17})
    first = loader(records, transform, worker_count=worker_count, **kw)
    with first:
        head = [next(first) for _ in range(stop_after)]
        state = json.loads(json.dumps(first.get_state()))  # must survive a JSON round trip
        tail = list(first)
        final_metrics = first.metrics()
    second = loader(records, transform, worker_count=worker_count, **kw)
    with second:
        second.set_state(state)
        assert second.num_batches == stop_after
        tail2 = list(second)
        assert second.metrics() == final_metrics
    assert head and tail
    assert_batches_equal(tail, tail2)
    return head, tail


def test_state_restore_in_process():
    head, tail = _restore_check(0, num_epochs=2, batch_size=4)
    assert len(indices(head + tail)) == 2 * 28 // 4 * 4  # two epochs of the 28 good records


def test_state_restore_with_workers():
    _restore_check(2, num_epochs=2, batch_size=3, stop_after=4)


def test_state_from_another_pipeline_is_rejected():
    records = make_records(12)
    state = loader(records, seed=1).get_state()
    with pytest.raises(ValueError, match="seed"):
        loader(records, seed=2).set_state(state)
    with pytest.raises(ValueError, match="records"):
        loader(make_records(13), seed=1).set_state(state)


# ------------------------------------------------------------------ real processes


_SHARD_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from vtg_jax.data.loader import Bucket, make_loader
    from vtg_jax.data.records import GroundingRecord

    def transform(r):
        i = int(r.qid)
        return {"input_ids": np.ones(1 + i % 9, np.int32), "index": np.int32(i)}

    index, count = int(sys.argv[1]), int(sys.argv[2])
    records = [GroundingRecord(f"v{i}", 10.0, "q", ((0.0, 1.0),), qid=str(i)) for i in range(37)]
    buckets = {"tokens": Bucket((4, 8, 16), {"input_ids": 0}, mask_key="attention_mask")}
    ld = make_loader(records, transform, batch_size=3, seed=5, buckets=buckets, num_epochs=1,
                     shard_index=index, shard_count=count, drop_remainder=False)
    print(json.dumps([int(i) for b in ld for i in b["index"]]))
""")


@pytest.mark.multiprocess
def test_two_processes_read_disjoint_shards(tmp_path):
    script = tmp_path / "shard_reader.py"
    script.write_text(_SHARD_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, str(script), str(k), "2"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, text=True) for k in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert not set(outs[0]) & set(outs[1])
    assert sorted(outs[0] + outs[1]) == list(range(37))


@pytest.mark.parametrize("family,interleave", [("qwen2_5_vl", False), ("qwen2_5_vl", True), ("qwen3_vl", None)])
def test_qwen_vl_buckets_pad_real_processor_outputs(tmp_path, family, interleave):
    """The real processor's samples (one grid row per video, or one per group when Qwen2.5 interleaves
    timestamps) batch through the bucket spec without shape conflicts."""
    cfg = get_preset("qwen2.5-vl-tiny" if family == "qwen2_5_vl" else "qwen3-vl-tiny")
    side = cfg.vision.patch_size * cfg.vision.spatial_merge_size
    proc = QwenVLProcessor(cfg, build_tiny_tokenizer(str(tmp_path / "tok"), family=family),
                           interleave_timestamps=interleave)
    rng = np.random.default_rng(0)
    samples = []
    for n_frames in (4, 7):  # 2 and 4 frame groups (7 is padded to 8)
        frames = rng.integers(0, 255, (n_frames, side, side, 3), dtype=np.uint8)
        samples.append(proc(frames, np.arange(n_frames) / 2.0, "the red circle moves", answer="1.0 to 2.5"))
    buckets = qwen_vl_buckets(tokens=(64, 128, 256), patches=(16, 32), groups=(4, 8))
    batch = collate(samples, buckets)
    assert batch["video_group_mask"].sum(1).tolist() == [2, 4]
    rows = [2, 4] if interleave else [1, 1]  # grid rows: one per group only in interleaved Qwen2.5
    assert batch["video_grid_mask"].sum(1).tolist() == rows
    assert batch["video_patch_mask"].sum(1).tolist() == [8, 16]
    assert batch["attention_mask"].sum(1).tolist() == [len(s["input_ids"]) for s in samples]


class MemoryStore:
    """A frame store stand-in for `RecordTransform`: every video is 4 random frames of side x side at 2 fps."""

    def __init__(self, side):
        self.side = side

    def __contains__(self, video_id):
        return True

    def read(self, video_id):
        rng = np.random.default_rng(int(video_id[3:]))
        return rng.integers(0, 255, (4, self.side, self.side, 3), dtype=np.uint8), np.arange(4) / 2.0

    def meta(self, video_id):
        return {}


def test_loader_batches_carry_each_records_span_and_duration(tmp_path):
    """RecordTransform emits the record's first span and its duration; the loader batches them as span [B, 2]
    and duration [B] float32 next to record_index [B]; prompt_only passes them on, the sampler inputs and the
    SFT step batch leave them out."""
    cfg = get_preset("qwen2.5-vl-tiny")
    proc = QwenVLProcessor(cfg, build_tiny_tokenizer(str(tmp_path / "tok")))
    records = [GroundingRecord(f"vid{i}", 10.0 + i, f"query {i}", ((0.5 * i, 1.25 + i), (0.0, 0.5)), qid=str(i),
                               source="t") for i in range(6)]
    transform = RecordTransform(str(tmp_path / "unused"), proc, "{start:.1f} to {end:.1f}",
                                {r.qid: i for i, r in enumerate(records)})
    transform.store = MemoryStore(cfg.vision.patch_size * cfg.vision.spatial_merge_size)
    buckets = qwen_vl_buckets(tokens=(64, 128, 256), patches=(16, 32), groups=(4, 8))
    batches = list(make_loader(records, transform, batch_size=3, seed=0, buckets=buckets, num_epochs=1,
                               shard_index=0, shard_count=1, read_threads=1))
    seen = []
    for b in batches:
        idx = b["record_index"]
        assert idx.shape == (3,) and b["span"].shape == (3, 2) and b["duration"].shape == (3,)
        assert b["span"].dtype == np.float32 and b["duration"].dtype == np.float32
        np.testing.assert_array_equal(b["span"], [records[i].span for i in idx])
        np.testing.assert_array_equal(b["duration"], [records[i].duration for i in idx])
        seen += idx.tolist()
    assert sorted(seen) == list(range(6))
    batch = batches[0]
    prompts = prompt_only(batch)
    for key in ("span", "duration", "record_index"):
        np.testing.assert_array_equal(prompts[key], batch[key])
        assert key not in sampler_inputs(prompts) and key not in prepare_batch(cfg, batch, 1)
