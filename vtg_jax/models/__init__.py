"""Model families. Qwen2.5-VL / Qwen3-VL live in `vtg_jax.models.qwen_vl`."""
