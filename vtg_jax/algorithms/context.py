"""What every algorithm's iteration builder gets from the run (built once by `run.loop`)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import numpy as np
from flax import nnx

from vtg_jax.data.run_data import RunData
from vtg_jax.models.qwen_vl.config import QwenVLConfig
from vtg_jax.parallel.rules import vision_shards_for
from vtg_jax.rollout.samples import rollout_seed, sample_completions, score_completions
from vtg_jax.train.state import TrainState, merge_model

# iterate(state, loader batch, step) -> (state, metrics): one update of the policy
Iteration = Callable[[TrainState, dict, int], tuple[TrainState, dict]]


@dataclasses.dataclass(frozen=True)
class RunContext:
    """The run's models, optimizer, data and layout, as an iteration builder reads them.

    `frozen`: the policy's untrained state (e.g. a frozen vision tower); `teacher` / `reference`: the
    frozen models the algorithm scores with (None when it uses none); `seed`: the base of the rollout
    seeds (from the checkpointed PRNG key)."""

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

    def put(self, batch: Any) -> Any:
        """Host batch -> device (replicated over the mesh when sharded; see `run.data_setup`)."""
        if self.batch_sharding is None:
            return batch
        return jax.device_put(batch, self.batch_sharding)

    def sample(self, state: TrainState, prompts: dict, step: int, num_samples: int) -> tuple[dict, dict]:
        """(sampler inputs, `sampling.generate` outputs) of `num_samples` completions per prompt of the
        current policy, seeded by (the run's checkpointed seed, `step`) so that a resumed run draws the same."""
        policy = merge_model(self.graphdef, state.params, self.frozen)
        return sample_completions(policy, prompts, num_samples=num_samples, rollout=self.config.rollout,
                                  seed=rollout_seed(self.seed, step), eos_id=self.run_data.eos_id, mesh=self.mesh)

    def score(self, model: nnx.Module, inputs: dict, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Per-token log-probs [B, G, N] of a frozen `model` (teacher, reference) for the completions, at
        the rollout temperature."""
        return score_completions(model, inputs, tokens, lengths, temperature=self.config.rollout.temperature,
                                 mesh=self.mesh)

    def vision_shards(self) -> int:
        """Vision shards of each micro-batch (`train.batch.prepare_batch`): as many as the mesh's data
        shards (the logical `batch` axis) that divide the micro-batch; 1 without a mesh."""
        return vision_shards_for(self.mesh, int(self.config.batch_size) // int(self.config.micro_batches))

    def step_shardings(self) -> dict:
        """The shardings a step factory takes (all None on one device)."""
        return dict(state_sharding=self.state_sharding, frozen_sharding=self.frozen_sharding,
                    batch_sharding=self.batch_sharding)


def optional_float(x: Optional[float]) -> Optional[float]:
    """An optional float of a config (clip bounds, KL clamp, dual clip): None is off (`run.config.OFF`)."""
    return None if x is None else float(x)
