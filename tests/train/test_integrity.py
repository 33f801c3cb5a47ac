"""Array checksums (checkpoint verification) and the finiteness checks of the update guard."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vtg_jax.parallel.rules import make_mesh
from vtg_jax.train.integrity import all_finite, checksum_mismatches, nonfinite_leaves, tree_checksums
from vtg_jax.train.update import guarded_update
from vtg_jax.train.state import TrainState


def test_checksums_see_every_single_change_and_ignore_sharding():
    x = jax.random.normal(jax.random.key(0), (64, 32))
    tree = {"x": x, "b": x.astype(jnp.bfloat16), "i": jnp.arange(5), "k": jax.random.key(3),
            "flag": jnp.array([True, False]), "host": np.arange(4.0), "scalar": 3}
    sums = tree_checksums(tree)
    assert set(sums) == {"['x']", "['b']", "['i']", "['k']", "['flag']", "['host']"}  # arrays only
    assert sums["['x']"].startswith("float32[64, 32]:")
    assert checksum_mismatches(sums, tree) == []
    # every one-bit flip of every bit position of one element, and a swap of two elements
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    for k in range(32):
        flipped = jax.lax.bitcast_convert_type(bits.at[7, 3].set(bits[7, 3] ^ jnp.uint32(1 << k)), jnp.float32)
        assert checksum_mismatches(sums, {**tree, "x": flipped}) != []
    swapped = x.at[0, 0].set(x[0, 1]).at[0, 1].set(x[0, 0])
    assert checksum_mismatches(sums, {**tree, "x": swapped})[0].startswith("['x']: saved")
    # the same values on another layout have the same checksum
    mesh = make_mesh(fsdp=8)
    sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp", None)))
    assert tree_checksums({"x": sharded}) == {"['x']": sums["['x']"]}
    assert checksum_mismatches(sums, {"x": x}) == [f"{k}: saved {sums[k]}, restored (absent)"
                                                    for k in sums if k != "['x']"]
    assert checksum_mismatches({}, {"x": x}) == ["['x']: restored but has no saved checksum"]


def test_nonfinite_leaves_and_all_finite():
    tree = {"a": jnp.array([1.0, jnp.nan, jnp.inf]), "b": jnp.ones(3), "c": jnp.arange(3), "d": np.array([-np.inf])}
    assert nonfinite_leaves(tree) == {"['a']": 2, "['d']": 1}
    assert not bool(all_finite(tree)) and bool(all_finite({"b": tree["b"], "c": tree["c"]}))
    assert bool(all_finite({})) and nonfinite_leaves({"c": tree["c"]}) == {}


def _state(mu_value: float) -> tuple[TrainState, optax.GradientTransformation]:
    tx = optax.adam(1e-2)
    params = {"w": jnp.ones((4,)), "b": jnp.zeros((2,))}
    opt = tx.init(params)
    opt = (opt[0]._replace(mu={"w": jnp.full((4,), mu_value), "b": jnp.zeros((2,))}),) + tuple(opt[1:])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt,
                      skipped=jnp.zeros((), jnp.int32)), tx


def test_guard_skips_an_update_that_writes_nonfinite_weights():
    """Finite loss and gradient but a NaN Adam moment (a corrupted restore): the update would make
    the weights NaN, so it is skipped and counted, the state bitwise unchanged."""
    grads = {"w": jnp.full((4,), 0.5), "b": jnp.full((2,), 0.5)}
    bad, tx = _state(float("nan"))
    new, gnorm, skipped = guarded_update(bad, grads, jnp.float32(1.0), tx)
    assert bool(jnp.isfinite(gnorm)) and int(skipped) == 1 and int(new.skipped) == 1 and int(new.step) == 0
    for a, b in zip(jax.tree.leaves((new.params, new.opt_state)), jax.tree.leaves((bad.params, bad.opt_state))):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    good, tx = _state(0.0)
    new, _, skipped = guarded_update(good, grads, jnp.float32(1.0), tx)
    assert int(skipped) == 0 and int(new.step) == 1 and not np.array_equal(new.params["w"], good.params["w"])
