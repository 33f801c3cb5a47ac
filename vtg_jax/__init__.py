"""vtg_jax: post-training Qwen-VL video language models for temporal video grounding in JAX/Flax."""

__version__ = "0.1.0"
