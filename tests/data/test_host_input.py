"""Per-host input: which rows each process reads, that the processes' rows make up the one-process batches
(each record read once), and the padding that makes the processes' arrays agree. The real two-process
run is tests/run/test_loop_multiprocess.py."""
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from test_loader import BUCKETS, FakeTransform, make_records
from vtg_jax.data.host_input import bucket_lengths, gather_global_batch
from vtg_jax.data.loader import BatchRows, make_loader, pad_batch
from vtg_jax.parallel.distributed import process_rows, rows_of_processes
from vtg_jax.parallel.mesh import make_mesh
from vtg_jax.train.batch import packed_specs


def _loader(rows=None, batch_size=8, **kw):
    extra = {"shard_index": 0, "shard_count": 1} if rows is None else {"rows": rows, "global_batch_size": batch_size}
    return make_loader(make_records(37), FakeTransform(**kw), batch_size=batch_size if rows is None else len(rows),
                       seed=3, buckets=BUCKETS, read_threads=1, **extra)


def test_rows_of_processes():
    owners = {0: (0, 2), 1: (2, 4), 2: (4, 6), 3: (6, 8)}  # 4 devices, 2 rows of a micro-batch each
    rows = rows_of_processes(owners, lambda d: d // 2, 2, global_batch_size=16, num_micro=2)
    assert [r.tolist() for r in rows] == [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]]
    # batch axes that do not span the processes: both hold (and read) every row
    replicated = rows_of_processes({0: (0, 4), 1: (4, 8), 2: (0, 4), 3: (4, 8)}, lambda d: d // 2, 2, 8)
    assert [r.tolist() for r in replicated] == [list(range(8))] * 2
    with pytest.raises(ValueError, match="not divisible into 3 micro-batches"):
        rows_of_processes(owners, lambda d: 0, 1, 8, 3)


def test_process_rows_of_one_process_is_every_row():
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    assert [r.tolist() for r in process_rows(mesh, 8, num_micro=2)] == [list(range(8))]


@pytest.mark.parametrize("bad", [(), (5, 11)])
def test_processes_rows_make_up_the_one_process_batches(bad):
    rows = rows_of_processes({0: (0, 2), 1: (2, 4)}, lambda d: d, 2, global_batch_size=8, num_micro=2)
    whole, parts = _loader(bad=bad), [_loader(r.tolist(), bad=bad) for r in rows]
    for _ in range(6):  # past the first epoch of 37 records
        expect = next(whole)
        got = [next(p) for p in parts]
        if bad:  # a skipped record is replaced by the next of the same process's rows: only the counts agree
            continue
        index = np.empty(8, np.int64)
        for r, batch in zip(rows, got):
            index[r] = batch["index"]
        np.testing.assert_array_equal(index, expect["index"])
    # each process read its 24 rows (and the records it skipped): half of what one process reads
    reads = [p.metrics()["data/read"] for p in parts]
    assert reads == [24 + p.metrics()["data/skipped"] for p in parts]
    assert whole.metrics()["data/read"] == 48 + whole.metrics()["data/skipped"]
    assert sum(p.metrics()["data/skipped"] for p in parts) >= len(bad)  # every record is in the first epoch
    state = parts[1].get_state()  # the rows are part of the state's fingerprint
    assert state["fingerprint"]["rows"] == rows[1].tolist() and state["read"] == reads[1]
    with pytest.raises(ValueError, match="different pipeline"):
        _loader(rows[0].tolist(), bad=bad).set_state(state)


def test_batch_rows_validates_rows():
    import grain

    with pytest.raises(ValueError, match="increasing positions in"):
        BatchRows(grain.MapDataset.range(10), 4, [2, 1])
    assert [BatchRows(grain.MapDataset.range(10), 4, [1, 3])[i] for i in range(4)] == [1, 3, 5, 7]


def test_pad_batch_and_one_process_gather():
    batch = next(_loader())
    lengths = bucket_lengths(batch, BUCKETS)
    padded = pad_batch(batch, BUCKETS, {"tokens": 32, "patches": 16})
    assert padded["input_ids"].shape == (8, 32) and padded["position_ids"].shape == (8, 3, 32)
    assert padded["pixel_values"].shape[1] == 16 and padded["vision_mask"].shape == (8, 16)
    t = lengths["tokens"]
    assert (padded["labels"][:, t:] == -100).all() and (padded["attention_mask"][:, t:] == 0).all()
    np.testing.assert_array_equal(padded["attention_mask"][:, :t], batch["attention_mask"])
    with pytest.raises(ValueError, match="longer than"):
        pad_batch(padded, BUCKETS, {"tokens": 8})
    same = gather_global_batch(batch, [np.arange(8)], BUCKETS)  # one process: its batch is the batch
    assert same.keys() == batch.keys() and all(same[k] is batch[k] for k in batch)


def test_packed_specs_shard_samples_and_vision_shards():
    packed = {"input_ids": np.zeros((2, 4, 8)), "attention_mask": np.zeros((2, 4, 8)), "loss_mask": np.zeros((2, 4, 8)),
              "position_ids": np.zeros((2, 3, 4, 8)), "pixel_values_videos": np.zeros((2, 2, 16, 6)),
              "vision_inputs": {"cu_seqlens": np.zeros((2, 2, 5))}}
    specs = packed_specs(packed, P(("data", "fsdp")))
    assert specs["input_ids"] == P(None, ("data", "fsdp")) and specs["position_ids"] == P(None, None, ("data", "fsdp"))
    assert specs["pixel_values_videos"] == specs["vision_inputs"]["cu_seqlens"] == P(None, ("data", "fsdp"))
    # one packing of each micro-batch (a mesh of one batch shard): the videos are replicated
    packed["pixel_values_videos"], packed["vision_inputs"]["cu_seqlens"] = np.zeros((2, 16, 6)), np.zeros((2, 5))
    specs = packed_specs(packed, P("data"))
    assert specs["pixel_values_videos"] == specs["vision_inputs"]["cu_seqlens"] == P() and specs["loss_mask"] == P(None, "data")
