"""Rollouts and scoring: prefill each (video) prompt once, share its KV cache among G samples, decode
in one jitted loop; teacher-forced log-probs of given completions (`generate` / `score`).

    from vtg_jax.sampling import generate, score
    out = generate(model, inputs, num_samples=8, max_new_tokens=256, temperature=1.0, eos_token_ids=[eos])
    old_logp = out["logprobs"]                                  # [B, G, N]
    ref_logp = score(ref_model, inputs, out["tokens"], mask)    # [B, G, N]
"""
from vtg_jax.sampling.api import generate, score
from vtg_jax.sampling.host import bucket_length, prepare_prompts
from vtg_jax.sampling.processing import row_keys, sample_step, truncate_logits

__all__ = ["bucket_length", "generate", "prepare_prompts", "row_keys", "sample_step", "score", "truncate_logits"]
