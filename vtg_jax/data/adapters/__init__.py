"""Per-format annotation adapters; the public entry point is `vtg_jax.data.datasets`."""
