"""Host side of an RL / distillation iteration: prompts → sampler inputs → rewards → the step batch.

    prompts = prompt_only(batch)                                         # a loader batch's prompts
    inputs = sampler_inputs(prompts)                                     # HF-named, left-padded
    out = sampling.generate(model, inputs, num_samples=G, max_new_tokens=N, temperature=1.0, ...)
    rewards, rmetrics = rollout_rewards(spec, tok.decode, out["tokens"], out["lengths"], batch["span"],
                                        batch["duration"])                 # the loader batch's ground truth
    adv = group_advantages(rewards)                                       # or tempsamp_advantages
    ref = sampling.score(ref_model, inputs, out["tokens"], completion_mask(out["lengths"], N))
    rl = build_rl_batch(cfg, prompts, out["tokens"], out["lengths"], out["logprobs"], adv,
                        rewards=rewards, ref_logp=ref, num_micro=2)        # an RLBatch
    state, metrics = grpo_step(state, frozen, rl)

Static shapes: the prompt axis keeps the loader's token bucket P, the vision rows its patch bucket
(packed by `train.batch.prepare_batch`), and completions are padded to `max_new_tokens` N; so a run
compiles one step per (token bucket, patch bucket).

Positions: the prompt keeps the processor's M-RoPE ids (`get_rope_index` over the valid tokens, which
is what the sampler computes for the left-padded prompt), and completion token k sits at
`last prompt position + 1 + k` on each of the three axes, as `sampling.generate` and HF generate
place decode tokens (each step adds last + 1 on all rows). The step's log-probs therefore reproduce the sampler's.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from vtg_jax.models.qwen_vl.config import QwenVLConfig
from vtg_jax.rewards import RewardSpec
from vtg_jax.train.batch import prepare_batch
from vtg_jax.train.rl_batch import RLBatch

PIXEL_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def _valid_lengths(prompts: Mapping[str, np.ndarray]) -> np.ndarray:
    mask = np.asarray(prompts["attention_mask"]).astype(bool)
    lengths = mask.sum(1)
    if not all(mask[i, :n].all() for i, n in enumerate(lengths)):
        raise ValueError("prompt batches must be right-padded (the loader's layout)")
    return lengths


def right_align(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Right- to left-padding along the last axis: row i's first `lengths[i]` entries move to the end."""
    x = np.asarray(x)
    out = np.zeros_like(x)
    size = x.shape[-1]
    for i, n in enumerate(lengths):
        out[i, ..., size - n:] = x[i, ..., :n]
    return out


def sampler_inputs(prompts: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF-named, left-padded inputs for `sampling.generate` / `sampling.score` from a collated,
    right-padded, prompt-only loader batch (real video rows and grid rows concatenated)."""
    lengths = _valid_lengths(prompts)
    out = {k: right_align(np.asarray(prompts[k]), lengths) for k in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in prompts:
        out["mm_token_type_ids"] = right_align(np.asarray(prompts["mm_token_type_ids"]), lengths)
    if "pixel_values_videos" in prompts:
        pix = np.asarray(prompts["pixel_values_videos"], np.float32)
        pmask = np.asarray(prompts.get("video_patch_mask", np.ones(pix.shape[:2]))).astype(bool)
        grids = np.asarray(prompts["video_grid_thw"])
        gmask = np.asarray(prompts.get("video_grid_mask", np.ones(grids.shape[:2]))).astype(bool)
        out["pixel_values_videos"] = pix[pmask]
        out["video_grid_thw"] = grids[gmask].astype(np.int64)
        if "second_per_grid_ts" in prompts:
            out["second_per_grid_ts"] = np.asarray(prompts["second_per_grid_ts"], np.float32)[gmask]
    return out


def pad_completions(x: np.ndarray, n: int) -> np.ndarray:
    """Per-token completion arrays [..., N] zero-padded to `n` >= N tokens (past every completion's end)."""
    x = np.asarray(x)
    if n < x.shape[-1]:
        raise ValueError(f"cannot pad {x.shape[-1]} completion tokens to {n}")
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def completion_mask(lengths: np.ndarray, n: int) -> np.ndarray:
    """[..., n] int32: 1 on the first `lengths` tokens of each completion (EOS included)."""
    return (np.arange(n) < np.asarray(lengths)[..., None]).astype(np.int32)


def rollout_rewards(spec: RewardSpec | Callable, decode_fn: Callable[[list[int]], str], tokens: np.ndarray,
                    lengths: np.ndarray, gts: Any, durations: Any = None) -> tuple[np.ndarray, dict[str, float]]:
    """Rewards [B, G] of decoded completions: `spec(texts, gts, durations)` with each prompt's gt (and
    duration) repeated for its G samples. `spec` is a RewardSpec or any callable with its contract."""
    b, g = np.shape(lengths)
    texts = [decode_fn([int(t) for t in tokens[i, j, :lengths[i, j]]]) for i in range(b) for j in range(g)]
    gts_rep = [gt for gt in gts for _ in range(g)]
    dur = None if durations is None else np.repeat(np.asarray(durations, np.float32), g)
    rewards, metrics = spec(texts, gts_rep, dur)
    return np.asarray(rewards, np.float32).reshape(b, g), metrics


def build_rl_batch(
    cfg: QwenVLConfig,
    prompts: Mapping[str, np.ndarray],
    tokens: np.ndarray,
    lengths: np.ndarray,
    old_logp: np.ndarray,
    advantages: np.ndarray,
    *,
    rewards: Optional[np.ndarray] = None,
    ref_logp: Optional[np.ndarray] = None,
    teacher_logp: Optional[np.ndarray] = None,
    off_policy: Optional[np.ndarray] = None,
    num_micro: int = 1,
    max_new_tokens: Optional[int] = None,
    vision_shards: int = 1,
    stacked: bool = False,
) -> RLBatch:
    """The RL step batch (`train.rl_batch.RLBatch`, its layout in the class docstring) from a
    right-padded prompt-only loader batch and sampler outputs tokens / old_logp [B, G, N], lengths
    [B, G], advantages [B, G]. Optional fields are None when their argument is (or, for the videos,
    when the prompts have none).

    max_new_tokens: the completion bucket (default N); completions are padded (or must fit) to it.
    off_policy [B, G]: True for ground-truth rows (TempSamp), whose old log-prob the step replaces by
    the current policy's. Micro-batches split along prompts (all G completions of a prompt together).
    vision_shards / stacked: the prompts' videos packed per data shard (`train.batch.prepare_batch`).
    """
    tokens = np.asarray(tokens)
    b_all, g, n = tokens.shape
    n_out = n if max_new_tokens is None else int(max_new_tokens)
    lengths = np.asarray(lengths)
    if lengths.shape != (b_all, g) or np.any(lengths > n_out):
        raise ValueError(f"lengths {lengths.shape} must be [B, G] = {(b_all, g)} and fit {n_out} tokens")
    if np.shape(prompts["input_ids"])[0] != b_all:
        raise ValueError(f"{b_all} prompts in the samples, {np.shape(prompts['input_ids'])[0]} in the batch")
    if num_micro < 1 or b_all % num_micro:
        raise ValueError(f"{b_all} prompts are not divisible into {num_micro} micro-batches")
    a, b = num_micro, b_all // num_micro

    def per_token(x: Optional[np.ndarray], dtype: Any) -> np.ndarray:
        x = np.zeros((b_all, g, n), dtype) if x is None else np.asarray(x, dtype)
        out = np.zeros((b_all, g, n_out), dtype)
        out[:, :, :min(n, n_out)] = x[:, :, :n_out]
        return out.reshape(a, b * g, n_out)

    plen = _valid_lengths(prompts)
    pos = right_align(np.asarray(prompts["position_ids"], np.int32), plen)  # [B, 3, P], right-aligned
    cmask = completion_mask(lengths, n_out)
    cpos = pos[:, :, -1][:, None, :, None] + 1 + np.arange(n_out)  # [B, 1, 3, N]
    cpos = np.broadcast_to(cpos, (b_all, g, 3, n_out)).reshape(a, b * g, 3, n_out).transpose(0, 2, 1, 3)
    packed: dict[str, Any] = {}
    if "pixel_values_videos" in prompts:
        packed = prepare_batch(cfg, {**prompts, "loss_mask": np.zeros_like(prompts["input_ids"])}, num_micro,
                               vision_shards, stacked)
    return RLBatch(
        prompt_ids=right_align(np.asarray(prompts["input_ids"], np.int32), plen).reshape(a, b, -1),
        prompt_mask=right_align(np.asarray(prompts["attention_mask"], np.int32), plen).reshape(a, b, -1),
        prompt_pos=pos.reshape(a, b, 3, -1).transpose(0, 2, 1, 3),
        completions=np.where(cmask.reshape(a, b * g, n_out) != 0, per_token(tokens, np.int32), 0),
        completion_mask=cmask.reshape(a, b * g, n_out),
        completion_pos=np.ascontiguousarray(cpos, np.int32),
        old_logp=per_token(old_logp, np.float32),
        advantages=np.asarray(advantages, np.float32).reshape(a, b * g),
        rewards=(np.zeros((b_all, g), np.float32) if rewards is None
                 else np.asarray(rewards, np.float32)).reshape(a, b * g),
        off_policy=(np.zeros((b_all, g), bool) if off_policy is None
                    else np.asarray(off_policy, bool)).reshape(a, b * g),
        ref_logp=None if ref_logp is None else per_token(ref_logp, np.float32),
        teacher_logp=None if teacher_logp is None else per_token(teacher_logp, np.float32),
        pixel_values_videos=packed.get("pixel_values_videos"),
        vision_inputs=packed.get("vision_inputs"),
    )


def append_ground_truth(tokens: np.ndarray, lengths: np.ndarray, logprobs: np.ndarray,
                        answers: Sequence[Sequence[int]], pad_id: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TempSamp-R1 §3.2 mix-policy group: G−1 sampled completions [B, G−1, N] plus one ground-truth
    solution per prompt (`answers[b]`: its token ids, EOS included) as the last sample.

    Returns (tokens [B, G, N'], lengths [B, G], old_logp [B, G, N'] (0 for the ground truth: the step
    uses the current policy's log-prob there), off_policy [B, G] bool); N' = max(N, longest answer).
    """
    tokens, lengths, logprobs = np.asarray(tokens), np.asarray(lengths), np.asarray(logprobs, np.float32)
    b, g1, n = tokens.shape
    if len(answers) != b:
        raise ValueError(f"{len(answers)} ground-truth answers for {b} prompts")
    n2 = max(n, max(len(x) for x in answers))
    tok = np.full((b, g1 + 1, n2), pad_id, np.int32)
    lp = np.zeros((b, g1 + 1, n2), np.float32)
    tok[:, :g1, :n], lp[:, :g1, :n] = tokens, logprobs
    for i, ans in enumerate(answers):
        tok[i, g1, :len(ans)] = ans
    lens = np.concatenate([lengths, [[len(x)] for x in answers]], axis=1).astype(np.int32)
    off = np.zeros((b, g1 + 1), bool)
    off[:, g1] = True
    return tok, lens, lp, off


def answer_ids(example: Mapping[str, np.ndarray]) -> list[int]:
    """Ground-truth answer token ids (answer + <|im_end|>) of one processor output made with `answer=`."""
    ids, mask = np.asarray(example["input_ids"]), np.asarray(example["loss_mask"]).astype(bool)
    return [int(t) for t in ids[mask]]
