"""What every algorithm's iteration builder gets from the run (built once by `run.loop`)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import numpy as np
from flax import nnx

from vtg_jax.data.host_input import agree_on_buckets, gather_global_batch
from vtg_jax.data.run_data import RunData
from vtg_jax.models.qwen_vl.config import QwenVLConfig
from vtg_jax.parallel.distributed import batch_spec, gather_json, host_local_to_global, max_over_processes
from vtg_jax.parallel.rules import batch_shards, vision_shards_for
from vtg_jax.rollout.samples import rollout_seed, sample_completions, score_completions
from vtg_jax.train.batch import packed_specs, prepare_batch
from vtg_jax.train.rl_batch import RLBatch, rl_batch_specs
from vtg_jax.train.state import TrainState, merge_model

# iterate(state, loader batch, step) -> (state, metrics): one update of the policy
Iteration = Callable[[TrainState, dict, int], tuple[TrainState, dict]]


@dataclasses.dataclass(frozen=True)
class RunContext:
    """The run's models, optimizer, data and layout, as an iteration builder reads them.

    `frozen`: the policy's untrained state (e.g. a frozen vision tower); `teacher` / `reference`: the
    frozen models the algorithm scores with (None when it uses none); `seed`: the base of the rollout
    seeds (from the checkpointed PRNG key); `rows`: with several processes, the global-batch rows each
    process reads (`parallel.distributed.process_rows`; per-host input), None when each reads them all."""

    config: Any
    model_cfg: QwenVLConfig
    graphdef: nnx.GraphDef
    frozen: nnx.State
    tx: Any
    schedule: Callable
    run_data: RunData
    seed: int
    mesh: Optional[jax.sharding.Mesh] = None
    state_sharding: Any = None
    frozen_sharding: Any = None
    batch_sharding: Any = None
    teacher: Optional[nnx.Module] = None
    reference: Optional[nnx.Module] = None
    rows: Optional[tuple[np.ndarray, ...]] = None

    def put(self, batch: Any) -> Any:
        """Host batch -> device (replicated over the mesh when sharded; see `run.data_setup`)."""
        if self.batch_sharding is None:
            return batch
        return jax.device_put(batch, self.batch_sharding)

    def sample(self, state: TrainState, prompts: dict, step: int, num_samples: int,
               own_rows: bool = False) -> tuple[dict, dict]:
        """(sampler inputs, `sampling.generate` outputs) of `num_samples` completions per prompt of the
        current policy, seeded by (the run's checkpointed seed, `step`) so that a resumed run draws the same.
        `own_rows`: `prompts` are this process's rows (per-host input) and so are the outputs."""
        policy = merge_model(self.graphdef, state.params, self.frozen)
        return sample_completions(policy, prompts, num_samples=num_samples, rollout=self.config.rollout,
                                  seed=rollout_seed(self.seed, step), eos_id=self.run_data.eos_id, mesh=self.mesh,
                                  process_local=own_rows)

    def score(self, model: nnx.Module, inputs: dict, tokens: np.ndarray, lengths: np.ndarray,
              own_rows: bool = False) -> np.ndarray:
        """Per-token log-probs [B, G, N] of a frozen `model` (teacher, reference) for the completions, at
        the rollout temperature (`own_rows` as in `sample`)."""
        return score_completions(model, inputs, tokens, lengths, temperature=self.config.rollout.temperature,
                                 mesh=self.mesh, process_local=own_rows)

    def vision_shards(self) -> int:
        """Vision shards of each micro-batch (`train.batch.prepare_batch`): as many as the mesh's data
        shards (the logical `batch` axis) that divide the micro-batch; 1 without a mesh."""
        return vision_shards_for(self.mesh, int(self.config.batch_size) // int(self.config.micro_batches))

    def host_batch(self, batch: dict) -> dict:
        """The whole global batch on every process from each process's rows (`data.host_input`); the
        batch itself when this process read every row."""
        if self.rows is None:
            return batch
        return gather_global_batch(batch, self.rows, self.run_data.buckets)

    def packs_own_rows(self) -> bool:
        """Whether each process can pack its own rows into the step's global arrays (per-host input all
        the way to the step): a mesh whose every batch shard holds whole vision shards of the micro-batch,
        as many on each process, and processes that hold disjoint rows (batch axes spanning them)."""
        if self.mesh is None:
            return False
        shards = self.vision_shards()
        disjoint = self.rows is None or len(np.unique(np.concatenate(self.rows))) == sum(len(r) for r in self.rows)
        return shards == batch_shards(self.mesh) and shards % jax.process_count() == 0 and disjoint

    def put_own_rows(self, batch: dict) -> dict:
        """`train.batch.prepare_batch` of this process's rows (padded as every process's, its share of the
        vision shards) assembled into the step's global arrays, samples sharded over the batch axes;
        needs `packs_own_rows()`."""
        local = agree_on_buckets(batch, self.run_data.buckets)
        packed = prepare_batch(self.model_cfg, local, int(self.config.micro_batches), **self.vision_packing(True))
        return host_local_to_global(packed, self.mesh, packed_specs(packed, batch_spec(self.mesh)))

    def iteration_batch(self, batch: dict, own_rows: bool) -> dict:
        """What an iteration works on: with `own_rows`, this process's rows padded as every process's
        (`agree_on_buckets`); else the whole global batch (gathered from the processes' rows)."""
        return agree_on_buckets(batch, self.run_data.buckets) if own_rows else self.host_batch(batch)

    def vision_packing(self, own_rows: bool) -> dict[str, Any]:
        """How a step batch's videos are packed on the host (`prepare_batch` / `build_rl_batch` keywords):
        with `own_rows`, this process's share of the vision shards, keeping the shard axis even when the
        share is one of several, so that the processes' shares assemble along the batch axes (without it a
        share of one would read as the whole batch's one packing and every process's videos as everyone's)."""
        shards = self.vision_shards()
        if not own_rows:
            return {"vision_shards": shards, "stacked": False}
        return {"vision_shards": shards // jax.process_count(), "stacked": shards > 1}

    def agreed_length(self, n: int, own_rows: bool) -> int:
        """A padded length every process uses (the longest any process needs) with `own_rows`; else `n`."""
        return int(max_over_processes([n])[0]) if own_rows else int(n)

    def put_rl(self, rl: RLBatch, own_rows: bool) -> RLBatch:
        """The RL step's batch on the devices: with `own_rows` each process's rows (built on its own
        prompts) assembled into global arrays sharded over the batch axes (`rl_batch_specs`); else the
        whole batch replicated (`put`)."""
        if not own_rows:
            return self.put(rl)
        specs = rl_batch_specs(rl, batch_spec(self.mesh))
        return dataclasses.replace(rl, **host_local_to_global({f: getattr(rl, f) for f in specs}, self.mesh, specs))

    def host_metrics(self, metrics: dict[str, float], own_rows: bool) -> dict[str, float]:
        """Host-side metrics of an iteration's rows over the global batch: with `own_rows` on several
        processes, the mean of every process's value (each holds as many rows), the sum of `*_count`s."""
        if not own_rows or jax.process_count() == 1:
            return metrics
        every = gather_json({k: float(v) for k, v in metrics.items()})
        if any(set(m) != set(metrics) for m in every):
            raise ValueError(f"processes report different host metrics: {[sorted(m) for m in every]}")
        return {k: float(np.sum([m[k] for m in every]) if k.endswith("_count") else np.mean([m[k] for m in every]))
                for k in metrics}

    def step_shardings(self) -> dict:
        """The shardings a step factory takes (all None on one device)."""
        return dict(state_sharding=self.state_sharding, frozen_sharding=self.frozen_sharding,
                    batch_sharding=self.batch_sharding)

    def step_shardings_for(self, own_rows: bool) -> dict:
        """`step_shardings` of a step that takes its batch as `put_own_rows` / `put_rl` give it: with
        `own_rows` the batch's own sharding (rows over the batch axes), not a replicated one."""
        return dict(self.step_shardings(), **({"batch_sharding": None} if own_rows else {}))


def optional_float(x: Optional[float]) -> Optional[float]:
    """An optional float of a config (clip bounds, KL clamp, dual clip): None is off (`run.config.OFF`)."""
    return None if x is None else float(x)
