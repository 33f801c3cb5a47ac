"""Completions of an iteration: sampled from the current policy, scored by a frozen model, or the ground
truth.

Rollouts are sampled with seed `rollout_seed(base, step)` and the record index as prompt id, so an
iteration is a pure function of the state, the batch and the step: a resumed run draws the same samples.
Reference and teacher log-probs come from `sampling.score` (one prefill per prompt for all its
completions).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from flax import nnx

from vtg_jax.rollout.packing import completion_mask, sampler_inputs
from vtg_jax.sampling import generate, score


def rollout_seed(base: int, step: int) -> int:
    """The sampler seed of update `step` from the run's checkpointed base seed."""
    return (int(base) * 1_000_003 + int(step)) % (2**31)


def sample_completions(policy: nnx.Module, prompts: Mapping[str, np.ndarray], *, num_samples: int,
                       rollout: Any, seed: int, eos_id: int, mesh: Any = None,
                       process_local: bool = False) -> tuple[dict, dict]:
    """(sampler inputs, `sampling.generate` outputs) of `num_samples` completions per prompt of `policy`,
    with the `rollout` config section's max new tokens, temperature, top-p and top-k (`process_local`:
    this process's prompts of a global batch, see `sampling.generate`)."""
    inputs = sampler_inputs(prompts)
    out = generate(policy, inputs, num_samples=num_samples, max_new_tokens=rollout.max_new_tokens,
                   temperature=rollout.temperature, top_p=rollout.top_p, top_k=rollout.top_k, seed=seed,
                   eos_token_ids=[eos_id], prompt_ids=np.asarray(prompts["record_index"]), mesh=mesh,
                   process_local=process_local)
    return inputs, out


def score_completions(model: nnx.Module, inputs: dict, tokens: np.ndarray, lengths: np.ndarray, *,
                      temperature: float, mesh: Any = None, process_local: bool = False) -> np.ndarray:
    """Per-token log-probs [B, G, N] of `model` for completions `tokens` [B, G, N] of `lengths` [B, G]."""
    return score(model, inputs, tokens, completion_mask(lengths, tokens.shape[-1]), temperature=temperature,
                 mesh=mesh, process_local=process_local)


def ground_truth_completions(answers: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth answer tokens [B, 1, longest answer] (0-padded) and lengths [B, 1]."""
    tokens = np.zeros((len(answers), 1, max(len(a) for a in answers)), np.int32)
    for i, a in enumerate(answers):
        tokens[i, 0, :len(a)] = a
    return tokens, np.asarray([[len(a)] for a in answers], np.int32)

