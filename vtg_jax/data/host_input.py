"""Per-host input: each process reads and decodes only its rows of every global batch.

A training run's loader on process p reads the rows `parallel.distributed.process_rows` gives it (the rows
its devices hold when the step shards each micro-batch over the batch axes) of the one shuffled stream
every process shares (`data.loader.BatchRows`), so the processes' batches together are exactly the batch
one process would read, and each record is read and decoded by one process (by several only where the
batch axes do not span the processes).

Two things then need every process: the padded lengths (each process pads its rows to the smallest bucket
that fits them, so the processes agree on the largest first: `agree_on_buckets`), and, where an
iteration cannot work on its own rows (a mesh whose batch shards do not each hold whole vision shards of
one process), the global batch itself (`gather_global_batch`, an all-gather of the processed rows).
Otherwise every algorithm packs, samples and scores its own rows and assembles the programs' global
arrays from them (`algorithms.context.RunContext`, `sampling.process_local`), without any gather.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from vtg_jax.data.loader import Buckets, pad_batch
from vtg_jax.parallel.distributed import global_to_host


def bucket_lengths(batch: Mapping[str, np.ndarray], buckets: Buckets) -> dict[str, int]:
    """The padded length of each bucket's axis in a collated batch (buckets without keys in it left out)."""
    out = {}
    for name, bucket in buckets.items():
        for key, axis in bucket.keys.items():
            if key in batch:
                out[name] = int(np.shape(batch[key])[axis + 1])
                break
    return out


def agree_on_buckets(batch: Mapping[str, np.ndarray], buckets: Buckets) -> dict[str, np.ndarray]:
    """`batch` padded to the longest length any process's batch has on each bucket axis (one small
    all-gather), so that the processes' arrays have equal shapes; unchanged on one process."""
    import jax

    lengths = bucket_lengths(batch, buckets)
    if jax.process_count() == 1 or not lengths:
        return dict(batch)
    names = sorted(lengths)
    mine = np.asarray([lengths[n] for n in names], np.int64)
    every = np.asarray(global_to_host(mine[None]))  # [processes, buckets]
    return pad_batch(batch, buckets, {n: int(every[:, i].max()) for i, n in enumerate(names)})


def gather_global_batch(batch: Mapping[str, np.ndarray], rows: Sequence[np.ndarray], buckets: Buckets
                        ) -> dict[str, np.ndarray]:
    """The global batch on every process from each process's rows (`rows[p]`: the global positions of
    process p's rows, in its batch's order). A row several processes hold is taken from the first."""
    import jax

    if jax.process_count() == 1:
        return dict(batch)
    sizes = {len(r) for r in rows}
    if len(sizes) != 1:
        raise ValueError(f"processes hold different numbers of rows {sorted(sizes)}; per-host input needs equal ones")
    local = agree_on_buckets(batch, buckets)
    stacked = global_to_host({k: np.asarray(v)[None] for k, v in local.items()})  # [processes, rows, ...]
    total = int(max(int(r.max()) for r in rows)) + 1
    source = np.full((total, 2), -1, np.int64)  # global row -> (process, its position there)
    for p in reversed(range(len(rows))):
        source[rows[p]] = np.stack([np.full(len(rows[p]), p), np.arange(len(rows[p]))], axis=1)
    if (source < 0).any():
        raise ValueError(f"no process holds rows {np.flatnonzero(source[:, 0] < 0).tolist()} of the global batch")
    # the all-gather goes through devices, where 64-bit values become 32-bit: back to each array's dtype
    return {k: np.asarray(v)[source[:, 0], source[:, 1]].astype(np.asarray(local[k]).dtype)
            for k, v in stacked.items()}
