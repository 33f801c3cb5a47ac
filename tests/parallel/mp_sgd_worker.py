"""Worker for test_mesh_distributed.py (run by vtg_jax.parallel.testing, not collected by pytest):
two optax SGD steps of a tiny MLP, parameters sharded by the logical rules over a (data, fsdp, tensor)
mesh, the batch assembled from each process's rows with `host_local_to_global`."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vtg_jax.parallel.distributed import (gather_json, global_to_host, global_to_local, host_local_to_global,
                                          local_batch_slice, max_over_processes)
from vtg_jax.parallel.mesh import mesh_from_config
from vtg_jax.parallel.rules import DEFAULT_RULES, activation_rules, logical_to_spec

NAMES = {"w1": ("embed", "mlp"), "b1": ("mlp",), "w2": ("mlp", "embed")}
BATCH, DIM, HIDDEN = 16, 8, 32


def _global_inputs() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    params = {"w1": rng.normal(size=(DIM, HIDDEN)) / DIM ** 0.5, "b1": rng.normal(size=(HIDDEN,)) * 0.1,
              "w2": rng.normal(size=(HIDDEN, DIM)) / HIDDEN ** 0.5}
    batch = {"x": rng.normal(size=(BATCH, DIM)), "y": rng.normal(size=(BATCH, DIM))}
    as32 = lambda d: {k: v.astype(np.float32) for k, v in d.items()}  # noqa: E731
    return as32(params), as32(batch)


def sgd_steps() -> dict[str, np.ndarray]:
    assert jax.process_count() == int(os.environ["JAX_NUM_PROCESSES"]) and jax.device_count() == 8
    mesh = mesh_from_config({"data": 2, "fsdp": -1, "tensor": 2})
    params_np, batch_np = _global_inputs()
    shardings = {k: NamedSharding(mesh, logical_to_spec(NAMES[k], DEFAULT_RULES, mesh, v.shape))
                 for k, v in params_np.items()}
    params = {k: jax.make_array_from_callback(v.shape, shardings[k], lambda idx, v=v: v[idx])
              for k, v in params_np.items()}
    rows = local_batch_slice(mesh, BATCH)
    local = {**{k: v[rows] for k, v in batch_np.items()}, "scale": np.float32(0.5)}  # scale: same everywhere
    batch = host_local_to_global(local, mesh, {"scale": P()})
    hidden_sharding = NamedSharding(mesh, logical_to_spec(("batch", "mlp"), activation_rules(), mesh))
    tx = optax.sgd(0.1, momentum=0.9)

    def loss_fn(p, b):
        h = jax.nn.gelu(b["x"] @ p["w1"] + p["b1"])
        h = jax.lax.with_sharding_constraint(h, hidden_sharding)
        return b["scale"] * jnp.mean((h @ p["w2"] - b["y"]) ** 2)

    @jax.jit
    def step(p, opt_state, b):
        loss, grads = jax.value_and_grad(loss_fn)(p, b)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    opt_state = jax.jit(tx.init)(params)
    losses = []
    for _ in range(2):
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(loss)
    assert params["w1"].sharding.spec == shardings["w1"].spec, params["w1"].sharding
    assert batch["x"].shape == (BATCH, DIM) and not (jax.process_count() > 1 and batch["x"].is_fully_addressable)
    # What a process put into a global array comes back to it alone; small host values are exchanged.
    np.testing.assert_array_equal(global_to_local(batch["x"], mesh), batch_np["x"][rows])
    p, n = jax.process_index(), jax.process_count()
    assert max_over_processes([p, 10 - p]).tolist() == [n - 1, 10]
    assert gather_json({"p": p, "text": "é" * p}) == [{"p": i, "text": "é" * i} for i in range(n)]
    out = global_to_host({**params, "loss": jnp.stack(losses), "x": batch["x"]})
    # Host-local values are concatenated over processes in process order: the local rows' sums.
    out["row_sums"] = global_to_host(batch_np["x"][rows].sum(axis=1))
    return out


def fail_on_process_1() -> dict[str, np.ndarray]:
    """For the harness's own test: one worker crashes, the other would wait for it forever."""
    if jax.process_index() == 1:
        raise ValueError("worker 1 failed on purpose")
    return {"ok": np.ones(())}


def hang() -> dict[str, np.ndarray]:
    """For the harness's own test: never returns, so only the timeout can end it."""
    import time  # pylint: disable=import-outside-toplevel
    time.sleep(3600)
    return {}
