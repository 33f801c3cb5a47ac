"""Checkpointer: bitwise round trips (sharded arrays, typed keys, AdamW state, loader state), keep_last,
async saves, resharding onto other meshes, SIGTERM → forced save, fresh start, interrupted / corrupt
checkpoints, failed saves (one error, their background leftovers not printed)."""
import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

from vtg_jax.parallel.rules import DEFAULT_RULES, logical_to_mesh_sharding, make_mesh
from vtg_jax.io.checkpoint import Checkpointer, abstract_like, export_hf

REPO = Path(__file__).resolve().parents[2]
LOADER_STATE = {"version": 1, "num_batches": 3, "skipped": {"too_long": 1},
                "grain": {"next_index": 12, "epoch": 0}, "fingerprint": {"seed": 0}}


def part(names):
    """An initializer whose Param carries logical axis names (placed later, as the model does)."""
    return nnx.with_partitioning(nnx.initializers.normal(0.1), names, eager_sharding=False)


class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.up = nnx.Linear(16, 32, kernel_init=part(("embed", "mlp")), rngs=rngs)
        self.down = nnx.Linear(32, 16, kernel_init=part(("mlp", "embed")), rngs=rngs)

    def __call__(self, x):
        return self.down(jax.nn.gelu(self.up(x)))


def make_state(mesh, seed: int = 0) -> dict:
    """A train-state-like tree on `mesh`: params + AdamW moments after one update (non-zero),
    an int step, a typed key, and extra sharded / bf16 arrays."""
    params = nnx.state(Tiny(nnx.Rngs(seed)), nnx.Param)
    tx = optax.adamw(1e-2)
    opt = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.5, params)
    updates, opt = tx.update(grads, opt, params)
    params = optax.apply_updates(params, updates)
    tree = {"params": params, "opt_state": opt}
    tree = jax.device_put(tree, logical_to_mesh_sharding(tree, mesh, DEFAULT_RULES))
    spec = NamedSharding(mesh, P(("data", "fsdp", "tensor")))
    tree.update(step=7, key=jax.random.split(jax.random.key(seed), 4)[1],
                nested={"w": jax.device_put(jnp.arange(64, dtype=jnp.float32).reshape(16, 4) / 3, spec),
                        "h": jnp.linspace(-1, 1, 24, dtype=jnp.bfloat16).reshape(4, 6),
                        "n": jnp.array(11, jnp.int32)})
    return tree


def host(x):
    return np.asarray(jax.random.key_data(x)) if jnp.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key) \
        else np.asarray(x)


def assert_bitwise(a, b) -> None:
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
        assert getattr(x, "dtype", None) == getattr(y, "dtype", None)
        hx, hy = host(x), host(y)
        assert hx.shape == hy.shape and hx.tobytes() == hy.tobytes()


@pytest.fixture(scope="module")
def mesh8():
    return make_mesh(fsdp=8)


def test_ckpt_round_trip_bitwise(tmp_path, mesh8):
    state = make_state(mesh8)
    with Checkpointer(str(tmp_path), save_every_n_steps=5, config={"lr": 0.1, "name": "t"}) as ck:
        assert ck.save(5, state, loader_state=LOADER_STATE, extra={"best_miou": 0.25})
        ck.wait_until_finished()
        out = ck.restore(target_abstract_state=abstract_like(state))
        meta = ck.read_metadata(5)
    restored, loader, extra, step = out
    assert step == 5 and loader == LOADER_STATE and extra == {"best_miou": 0.25}
    assert_bitwise(state, restored)
    assert isinstance(restored["step"], int) and restored["step"] == 7
    assert jax.tree.map(lambda x: x.sharding, state["params"]) == jax.tree.map(lambda x: x.sharding, restored["params"])
    assert meta["config"] == {"lr": 0.1, "name": "t"} and meta["wall_time"] > 0


def test_ckpt_keep_last_and_interval(tmp_path, mesh8):
    state = make_state(mesh8)
    with Checkpointer(str(tmp_path), save_every_n_steps=2, keep_last=2, async_save=False) as ck:
        saved = [ck.save(s, state) for s in range(1, 9)]
        assert saved == [False, True] * 4
        assert ck.all_steps() == [6, 8] and ck.latest_step() == 8
        assert not ck.save(8, state, force=True)  # already on disk: not rewritten, no error
        assert ck.save(9, state, force=True)
        assert ck.all_steps() == [8, 9]


def test_ckpt_async_save_then_restore_in_new_process_state(tmp_path, mesh8):
    state = make_state(mesh8)
    big = jax.device_put(jnp.arange(2**20, dtype=jnp.float32), NamedSharding(mesh8, P("fsdp")))
    tree = {"state": state, "big": big}
    expect = jax.tree.map(host, tree)
    ck = Checkpointer(str(tmp_path), save_every_n_steps=1, async_save=True)
    assert ck.save(1, tree, loader_state=LOADER_STATE)
    target = abstract_like(tree)
    big.delete()  # the step donates its buffers right after save(): the save must not need them
    ck.wait_until_finished()
    ck.close()
    ck2 = Checkpointer(str(tmp_path), save_every_n_steps=1)  # a restarted run
    restored, loader, _, step = ck2.restore(target_abstract_state=target)
    assert step == 1 and loader == LOADER_STATE
    assert jax.tree.all(jax.tree.map(lambda e, r: e.tobytes() == host(r).tobytes(), expect, restored))
    ck2.close()


@pytest.mark.parametrize("kind", ["2x2x2", "1dev"])
def test_ckpt_restore_onto_other_mesh(tmp_path, mesh8, kind):
    state = make_state(mesh8)
    with Checkpointer(str(tmp_path), save_every_n_steps=1, async_save=False) as ck:
        ck.save(3, state, loader_state=LOADER_STATE)
        if kind == "2x2x2":
            mesh = make_mesh(data=2, fsdp=2, tensor=2)
            shard = logical_to_mesh_sharding({k: state[k] for k in ("params", "opt_state")}, mesh, DEFAULT_RULES)
            rep = NamedSharding(mesh, P())
            shard.update(step=None, key=rep, nested={"w": NamedSharding(mesh, P("tensor", "fsdp")),
                                                     "h": NamedSharding(mesh, P("data")), "n": rep})
        else:
            dev = SingleDeviceSharding(jax.devices()[5])
            shard = jax.tree.map(lambda x: dev if isinstance(x, jax.Array) else None, state)
        target = abstract_like(state, shard)
        restored, loader, _, step = ck.restore(target_abstract_state=target)
    assert_bitwise(state, restored)
    got = jax.tree.map(lambda x: getattr(x, "sharding", None), restored)
    want = jax.tree.map(lambda x: getattr(x, "sharding", None), target)
    assert got == want
    if kind == "2x2x2":
        kernel = restored["params"]["up"]["kernel"].get_value()
        assert kernel.sharding.spec == P("fsdp", "tensor") and len(kernel.addressable_shards) == 8


def test_ckpt_sigterm_forces_save_and_stop(tmp_path):
    ck = Checkpointer(str(tmp_path), save_every_n_steps=100, async_save=True)
    ck.install_preemption_handler()
    try:
        w = w0 = jnp.zeros((16, 4), jnp.float32)
        stopped_at = None
        for step in range(1, 50):  # a tiny fake training loop
            w = w + 1.0
            if step == 4:
                os.kill(os.getpid(), signal.SIGTERM)  # the preemption notice
            loop_state = {"w": w, "step": step}
            stop = ck.should_stop(step)
            ck.save(step, loop_state, loader_state={"pos": step}, force=stop)
            if stop:
                stopped_at = step
                break
        ck.wait_until_finished()
    finally:
        ck.uninstall_preemption_handler()
    assert stopped_at == 4 and ck.should_stop(5)  # stays stopped
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))
    restored, loader, _, step = ck.restore(target_abstract_state=abstract_like({"w": w, "step": 0}))
    assert step == 4 and loader == {"pos": 4} and restored["step"] == 4
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(w0) + 4)
    ck.close()


def test_ckpt_fresh_start(tmp_path):
    ck = Checkpointer(str(tmp_path / "new"), save_every_n_steps=10)
    assert ck.latest_step() is None and ck.all_steps() == []
    assert ck.restore(target_abstract_state={"x": jax.ShapeDtypeStruct((2,), jnp.float32)}) is None
    assert not ck.should_stop(0)
    ck.close()


_CRASH = """
import os, jax, jax.numpy as jnp
from vtg_jax.io.checkpoint import Checkpointer
ck = Checkpointer({path!r}, save_every_n_steps=1, async_save=True)
ck.save(1, {{"x": jnp.ones((256,)), "big": jnp.zeros((2**22,))}}, loader_state={{"pos": 1}})
ck.wait_until_finished()
ck.save(2, {{"x": jnp.full((256,), 2.0), "big": jnp.zeros((2**22,))}}, loader_state={{"pos": 2}})
os._exit(0)  # killed while the async save of step 2 is being written
"""


def test_ckpt_interrupted_save_is_skipped(tmp_path, caplog):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", textwrap.dedent(_CRASH.format(path=str(tmp_path)))],
                   env=env, check=True, timeout=120, capture_output=True)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "1" in left and "2" not in left and any(n.startswith("2.orbax-checkpoint-tmp") for n in left), left
    with caplog.at_level(logging.WARNING):
        ck = Checkpointer(str(tmp_path), save_every_n_steps=1)
    assert "incomplete checkpoint" in caplog.text and "2.orbax-checkpoint-tmp" in caplog.text
    assert ck.latest_step() == 1
    target = {"x": jax.ShapeDtypeStruct((256,), jnp.float32), "big": jax.ShapeDtypeStruct((2**22,), jnp.float32)}
    restored, loader, _, step = ck.restore(target_abstract_state=abstract_like(target))
    assert step == 1 and loader == {"pos": 1} and float(restored["x"][0]) == 1.0
    assert ck.save(2, {"x": jnp.full((256,), 3.0), "big": jnp.zeros((2**22,))})  # step 2 again, cleanly
    ck.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def test_ckpt_corrupt_latest_falls_back(tmp_path, mesh8, caplog):
    state = make_state(mesh8)
    ck = Checkpointer(str(tmp_path), save_every_n_steps=1, async_save=False)
    for s in (1, 2):
        ck.save(s, state, loader_state={"pos": s})
    for f in (tmp_path / "2" / "state").rglob("*"):  # truncated array data / manifests
        if f.is_file():
            f.write_bytes(b"")
    (tmp_path / "3").mkdir()  # a bare step directory (e.g. a half-copied run)
    assert ck.latest_step() == 3
    target = abstract_like(state)
    with caplog.at_level(logging.WARNING):
        restored, loader, _, step = ck.restore(target_abstract_state=target)
    assert step == 1 and loader == {"pos": 1}
    assert_bitwise(state, restored)
    assert "3 does not restore" in caplog.text and "2 does not restore" in caplog.text
    assert ck.latest_step() == 1 and len(list(tmp_path.glob("2.corrupt-*"))) == 1
    assert ck.save(2, state, loader_state={"pos": 22})  # the step can be written again
    assert ck.restore(target_abstract_state=target)[1] == {"pos": 22}
    ck.close()


def test_ckpt_wrong_target_raises_and_keeps_checkpoints(tmp_path):
    ck = Checkpointer(str(tmp_path), save_every_n_steps=1, async_save=False)
    ck.save(1, {"x": jnp.ones((4,))})
    ck.save(2, {"x": jnp.ones((4,))})
    with pytest.raises(Exception):
        ck.restore(target_abstract_state={"y": jax.ShapeDtypeStruct((4,), jnp.float32)})
    assert ck.all_steps() == [1, 2]
    _, loader, extra, step = ck.restore(target_abstract_state={"x": jax.ShapeDtypeStruct((4,), jnp.float32)})
    assert (loader, extra, step) == (None, None, 2)
    ck.close()


def test_ckpt_export_hf(tmp_path):
    from vtg_jax.models.qwen_vl import QwenVL, from_pretrained, get_preset

    model = QwenVL(get_preset("qwen2.5-vl-tiny"), rngs=nnx.Rngs(1))
    export_hf(model, str(tmp_path / "hf"))
    assert (tmp_path / "hf" / "config.json").exists()
    back = from_pretrained(str(tmp_path / "hf"))
    a, b = nnx.state(model, nnx.Param), nnx.state(back, nnx.Param)
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b))


# ------------------------------------------------------------------------------ verified restores
def _flip_bytes(path: Path, n: int = 64) -> None:
    """Inverts `n` bytes in the middle of a file, keeping its size (silent storage corruption)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


def _largest_data_file(step_dir: Path) -> Path:
    return max((f for f in step_dir.rglob("d/*") if f.is_file()), key=lambda f: f.stat().st_size)


def _random_tree(seed: int) -> dict:
    """Incompressible arrays, so their chunks are stored raw and flipped bytes decode silently."""
    k = jax.random.split(jax.random.key(seed))
    return {"w": jax.random.normal(k[0], (512, 512)), "m": jax.random.normal(k[1], (256,)),
            "n": jnp.array(seed, jnp.int32)}


def test_ckpt_flipped_bytes_fail_their_checksums_and_fall_back(tmp_path, caplog):
    """64 inverted bytes inside step 2's array data (same file size) decode without error; the
    checksums saved with the step catch them, step 1 is restored and step 2 moved aside."""
    ck = Checkpointer(str(tmp_path), save_every_n_steps=1, async_save=False)
    t1, t2 = _random_tree(1), _random_tree(2)
    ck.save(1, t1, loader_state={"pos": 1})
    ck.save(2, t2, loader_state={"pos": 2})
    _flip_bytes(_largest_data_file(tmp_path / "2"))
    with caplog.at_level(logging.WARNING):
        restored, loader, _, step = ck.restore(target_abstract_state=abstract_like(t1))
    assert (step, loader) == (1, {"pos": 1})
    assert_bitwise(t1, restored)
    assert "differ from the checksums saved with them" in caplog.text and "['w']" in caplog.text
    assert ck.all_steps() == [1] and len(list(tmp_path.glob("2.corrupt-*"))) == 1
    ck.close()


def test_ckpt_stale_arrays_of_another_step_fail_verification(tmp_path):
    """Step 2's array directory replaced by step 1's (a stale copy, a swapped file): everything
    reads, nothing matches step 2's checksums. Asked for explicitly, the step raises."""
    from vtg_jax.io.checkpoint import CheckpointCorrupt
    import shutil

    ck = Checkpointer(str(tmp_path), save_every_n_steps=1, async_save=False)
    t1, t2 = _random_tree(1), _random_tree(2)
    ck.save(1, t1)
    ck.save(2, t2)
    shutil.rmtree(tmp_path / "2" / "state")
    shutil.copytree(tmp_path / "1" / "state", tmp_path / "2" / "state")
    with pytest.raises(CheckpointCorrupt, match=r"3 array\(s\) differ"):
        ck.restore(2, target_abstract_state=abstract_like(t1))
    assert ck.restore(target_abstract_state=abstract_like(t1))[3] == 1
    ck.close()


def test_ckpt_validate_rejects_a_step_and_unverified_old_steps_restore(tmp_path, caplog):
    """A restored state the caller's `validate` rejects counts as corrupt (fall back, move aside);
    a step saved without checksums (an older vtg_jax) restores with a warning."""
    import json as json_lib

    ck = Checkpointer(str(tmp_path), save_every_n_steps=1, async_save=False)
    t1, t2 = _random_tree(1), _random_tree(2)
    ck.save(1, t1)
    ck.save(2, t2)

    def no_step_two(tree):
        if int(tree["n"]) == 2:
            raise ValueError("step two is not wanted")

    with caplog.at_level(logging.WARNING):
        assert ck.restore(target_abstract_state=abstract_like(t1), validate=no_step_two)[3] == 1
    assert "step two is not wanted" in caplog.text
    meta = next((tmp_path / "1" / "meta").glob("*"))
    if meta.is_dir():
        meta = next(f for f in meta.rglob("*") if f.is_file())
    data = json_lib.loads(meta.read_text())
    del data["checksums"]
    meta.write_text(json_lib.dumps(data))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        restored = ck.restore(target_abstract_state=abstract_like(t1))[0]
    assert_bitwise(t1, restored)
    assert "has no checksums" in caplog.text
    ck.close()


def test_ckpt_failed_async_save_raises_once_at_the_next_save(tmp_path, monkeypatch, caplog):
    """A save whose background write fails surfaces as one CheckpointSaveError at the next `save`,
    naming the cause; Orbax's per-thread error logs after the first are counted, not printed."""
    from vtg_jax.io.checkpoint import CheckpointSaveError
    import orbax.checkpoint as ocp

    ck = Checkpointer(str(tmp_path), save_every_n_steps=1, async_save=True)
    real = ocp.CheckpointManager.save

    def failing_save(self, step, *a, **k):
        if step == 2:
            raise OSError(28, "No space left on device")
        return real(self, step, *a, **k)

    ck.save(1, _random_tree(1))
    monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)
    with pytest.raises(CheckpointSaveError, match="No space left on device"):
        ck.save(2, _random_tree(2))
    assert ck.latest_step() == 1  # still readable for the report, the manager closed
    with pytest.raises(CheckpointSaveError, match="an earlier checkpoint save failed: .*No space left"):
        ck.save(3, _random_tree(3))
    ck.abandon()
    ck.close()
    assert Checkpointer(str(tmp_path), save_every_n_steps=1).all_steps() == [1]


def _closed_loop_error_from_tensorstore() -> None:
    """What each write a failed save leaves in flight does: a TensorStore future awaited in an event loop
    closed before it completes calls that loop from its completion callback, and TensorStore hands the
    resulting RuntimeError to `sys.unraisablehook`."""
    import tensorstore as ts

    promise, future = ts.Promise.new()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    waiter = future.__await__()  # registers the callback that calls loop.call_soon_threadsafe
    asyncio.set_event_loop(None)
    loop.close()
    promise.set_result(1)
    del waiter


class _RaisesWhenDeleted:
    def __del__(self):
        raise ValueError("raised in __del__")


def _raise_in_thread(exc: BaseException) -> None:
    def run():
        raise exc

    t = threading.Thread(target=run, name="raiser")
    t.start()
    t.join()


def test_ckpt_leftovers_of_a_failed_save_are_recorded_not_printed(tmp_path, monkeypatch, caplog):
    """While a Checkpointer is open, the exceptions a failed save leaves on background threads (a closed
    event loop called by TensorStore, a cancellation, an error naming the checkpoint directory) go to
    the debug log, the first one only; any other exception reaches the previous hooks; close()
    restores those hooks."""
    unraisable, in_threads = [], []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: unraisable.append(args.exc_value))
    monkeypatch.setattr(threading, "excepthook", lambda args: in_threads.append(args.exc_value))
    previous = (sys.unraisablehook, threading.excepthook)
    ck = Checkpointer(str(tmp_path), save_every_n_steps=1)
    with caplog.at_level(logging.DEBUG, logger="vtg_jax.io.checkpoint"):
        for _ in range(3):
            _closed_loop_error_from_tensorstore()
        _raise_in_thread(asyncio.CancelledError())
        _raise_in_thread(OSError(27, "File too large", str(tmp_path / "1.orbax-checkpoint-tmp" / "d" / "x")))
        assert unraisable == [] and in_threads == []
        _raise_in_thread(ValueError("not about checkpoints"))
        _RaisesWhenDeleted()  # an unrelated unraisable exception
        ck.close()
    assert [str(e) for e in in_threads] == ["not about checkpoints"]
    assert [str(e) for e in unraisable] == ["raised in __del__"]
    shown = [r.getMessage() for r in caplog.records if "left by a failed checkpoint save" in r.getMessage()]
    assert shown == ["not shown, left by a failed checkpoint save (an unraisable exception): "
                     "RuntimeError: Event loop is closed"]
    assert any("5 exceptions left on background threads" in r.getMessage() for r in caplog.records)
    assert (sys.unraisablehook, threading.excepthook) == previous
    _closed_loop_error_from_tensorstore()  # after close: the previous hook sees it
    assert [str(e) for e in unraisable] == ["raised in __del__", "Event loop is closed"]
