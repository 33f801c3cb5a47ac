"""Logical axis rules -> mesh shardings (vtg_jax/parallel/rules.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from vtg_jax.parallel.rules import (DEFAULT_RULES, activation_rules, logical_axes, logical_to_mesh_sharding,
                                    logical_to_spec, make_mesh, shards_of)


def test_activation_rules_free_the_batch_axes():
    rules = dict(activation_rules(DEFAULT_RULES))
    assert rules["batch"] == ("data", "fsdp")
    assert rules["embed"] is None and rules["mlp"] == "tensor"


def test_logical_to_spec():
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    assert logical_to_spec(("embed", "mlp"), DEFAULT_RULES, mesh) == P("fsdp", "tensor")
    assert logical_to_spec(("batch", "length", "embed"), DEFAULT_RULES, mesh) == P(("data", "fsdp"), None, None)
    assert logical_to_spec((None, "unknown"), DEFAULT_RULES, mesh) == P(None, None)
    assert logical_to_spec(("embed", "heads"), DEFAULT_RULES, mesh, shape=(3, 4)) == P(None, "tensor")
    # The sequence axis splits activations' `length` (context parallelism), never parameters; at size 1
    # it is left out of every spec.
    cp = make_mesh(fsdp=2, sequence=2, tensor=2)
    assert logical_to_spec(("batch", "length", "embed"), activation_rules(DEFAULT_RULES), cp) == P("fsdp", "sequence", None)
    assert logical_to_spec(("embed", "mlp"), DEFAULT_RULES, cp) == P("fsdp", "tensor")
    assert logical_to_spec(("batch", "length"), DEFAULT_RULES, make_mesh(data=8)) == P("data", None)
    assert logical_axes("length", cp) == ("sequence",) and shards_of("length", cp) == 2
    assert logical_axes("batch", cp) == ("fsdp",) and shards_of("length", make_mesh(data=8)) == 1
    # uneven (activation constraints): a dim shorter than its shard count stays whole, a longer one splits
    acts = activation_rules(DEFAULT_RULES)
    assert logical_to_spec(("batch", "length"), acts, cp, (4, 1), uneven=True) == P("fsdp", None)
    assert logical_to_spec(("batch", "length"), acts, cp, (4, 5), uneven=True) == P("fsdp", "sequence")
    assert logical_to_spec(("batch", "length"), acts, cp, (4, 5)) == P("fsdp", None)


def test_logical_to_mesh_sharding_places_a_module():
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    layer = nnx.Linear(4, 6, kernel_init=nnx.with_partitioning(nnx.initializers.ones, ("embed", "mlp"),
                                                                 eager_sharding=False),
                       use_bias=False, rngs=nnx.Rngs(0))
    state = nnx.state(layer)
    placed = jax.device_put(state, logical_to_mesh_sharding(state, mesh))
    kernel = placed["kernel"].get_value()
    assert kernel.sharding.spec == P("fsdp", "tensor")
    assert jnp.array_equal(kernel, jnp.ones((4, 6)))
