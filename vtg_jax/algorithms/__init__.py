"""The algorithms: one module each (its step factory and host-side iteration) and the registry that
names them (`registry.ALGORITHMS`). Import `vtg_jax.algorithms.registry` without jax."""
