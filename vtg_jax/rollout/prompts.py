"""Loader batches (made with answers, `data.loader`) split into what a rollout needs: the prompts alone
and the ground-truth completion ids. The rewards' ground truth is in the batch itself: `batch["span"]`
[B, 2] (each record's first span) and `batch["duration"]` [B] (`data.run_data.RecordTransform`).

    prompts = prompt_only(batch)           # answers masked out; sampler_inputs(prompts) feeds the sampler
    answers = answer_token_lists(batch)    # [[ids of "12.5 to 17.8<|im_end|>"], ...]
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from vtg_jax.rollout.packing import answer_ids


def prompt_only(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The prompts of a right-padded batch made with answers: tokens from the first answer token on
    are masked out (attention_mask 0, ids 0); positions are kept (the prompt's ids are a prefix), and
    every other key (record_index, span, duration, the video arrays) passes through unchanged."""
    loss = np.asarray(batch["loss_mask"]).astype(bool)
    if not loss.any(axis=1).all():
        raise ValueError("every example needs answer tokens (loss_mask) to split off its prompt")
    first = loss.argmax(axis=1)
    keep = np.arange(loss.shape[1])[None, :] < first[:, None]
    out = dict(batch)
    out["input_ids"] = np.where(keep, batch["input_ids"], 0)
    out["attention_mask"] = np.where(keep, batch["attention_mask"], 0)
    out["loss_mask"] = np.zeros_like(batch["loss_mask"])
    if "mm_token_type_ids" in batch:
        out["mm_token_type_ids"] = np.where(keep, batch["mm_token_type_ids"], 0)
    return out


def answer_token_lists(batch: Mapping[str, np.ndarray]) -> list[list[int]]:
    """Ground-truth completion ids (answer + <|im_end|>) of each row of a batch made with answers."""
    rows = zip(batch["input_ids"], batch["loss_mask"])
    return [answer_ids({"input_ids": ids, "loss_mask": mask}) for ids, mask in rows]

