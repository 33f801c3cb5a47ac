"""Nothing lost, nothing silently wrong, end to end: a checkpoint corrupted on storage or holding NaN
is not resumed from (the run falls back and ends bitwise where an uninterrupted one does), two runs
never share a workdir, a resume never silently changes the config, a failed save stops the run once
and quietly, and summary.json keeps the last metrics after a resume."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from loop_helpers import REPO, read_metrics, tiny

STEPS = 4


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from vtg_jax.run.data_setup import load_tokenizer, prepare_synthetic

    path = str(tmp_path_factory.mktemp("cache"))
    prepare_synthetic(tiny("sft", path).data, "qwen2_5_vl", path, progress=False)
    load_tokenizer("", "qwen2_5_vl", path)  # written once here (the full-disk test's run cannot write it)
    return path


def _config(cache: str, **overrides):
    kw = dict(steps=STEPS, batch_size=2, eval__splits=(), checkpoint__every=1, checkpoint__keep=None,
              checkpoint__async_save=False, optim__lr=1e-2)
    kw.update(overrides)
    return tiny("sft", cache, **kw)


@pytest.fixture(scope="module")
def full_run(cache, tmp_path_factory):
    """An uninterrupted 4-step SFT run, every step checkpointed and kept."""
    from vtg_jax.run.loop import train

    workdir = str(tmp_path_factory.mktemp("full") / "run")
    summary = train(_config(cache), workdir)
    assert summary["finished"]
    return workdir


def _copy_cut(full: str, dst: Path, keep_steps: tuple[int, ...]) -> str:
    """The full run as if it had been killed after its last kept step."""
    shutil.copytree(full, dst)
    for p in (dst / "checkpoints").iterdir():
        if int(p.name) not in keep_steps:
            shutil.rmtree(p)
    shutil.rmtree(dst / "hf")
    (dst / "summary.json").unlink()
    return str(dst)


def _weights(workdir: str) -> dict[str, np.ndarray]:
    return load_file(os.path.join(workdir, "hf", "model.safetensors"))


def _assert_same_weights(a: str, b: str) -> None:
    wa, wb = _weights(a), _weights(b)
    assert sorted(wa) == sorted(wb)
    for k in wa:
        assert wa[k].tobytes() == wb[k].tobytes(), k
        assert np.isfinite(wa[k]).all()


def _flip_bytes_in_array_data(step_dir: Path, n: int = 64) -> None:
    """Inverts n bytes in the middle of the step's largest array-data file (same size)."""
    f = max((f for f in (step_dir / "state").rglob("d/*") if f.is_file()), key=lambda f: f.stat().st_size)
    data = bytearray(f.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    f.write_bytes(bytes(data))


def _inject_nan_in_adam_moment(workdir: str, step: int, cache: str) -> None:
    """Rewrites checkpoint `step` with one NaN in an Adam first moment, as a run without the update
    guard would have saved it: the checksums are valid, the values are not."""
    from ml_collections import ConfigDict

    from vtg_jax.io.checkpoint import Checkpointer
    from vtg_jax.run.model_setup import build_model, checkpoint_tree
    from vtg_jax.train.optim import make_optimizer
    from vtg_jax.run.config import optim_config
    from vtg_jax.train.state import init_train_state

    with open(os.path.join(workdir, "run_config.json")) as f:
        config = ConfigDict(json.load(f))
    state, _, _ = init_train_state(build_model(config.model, seed=0), make_optimizer(optim_config(config))[0],
                                   freeze_vision=config.model.freeze_vision)
    from vtg_jax.io.checkpoint import abstract_like

    ckdir = os.path.join(workdir, "checkpoints")
    with Checkpointer(ckdir, save_every_n_steps=1, async_save=False, config=config) as ck:
        tree = checkpoint_tree(state, jnp.zeros((2,), jnp.uint32))
        restored, loader_state, _, _ = ck.restore(step, target_abstract_state=abstract_like(tree))
    adam = restored["state"].opt_state[1][0]  # optax.chain(clip, adamw): (ScaleByAdamState, ...)
    leaf = jax.tree.leaves(adam.mu)[0]
    mu = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan) if x is leaf else x, adam.mu)
    opt_state = list(restored["state"].opt_state)
    opt_state[1] = (adam._replace(mu=mu),) + tuple(opt_state[1][1:])
    bad = restored["state"].replace(opt_state=type(restored["state"].opt_state)(opt_state))
    shutil.rmtree(os.path.join(ckdir, str(step)))
    with Checkpointer(ckdir, save_every_n_steps=1, async_save=False, config=config) as ck:
        ck.save(step, checkpoint_tree(bad, restored["rng"]), loader_state=loader_state, force=True)


def test_corrupt_and_nonfinite_checkpoints_are_not_resumed(full_run, cache, tmp_path, caplog):
    """Killed after step 3, with step 3's array data corrupted on storage (64 flipped bytes, same size)
    and step 2 holding a NaN Adam moment: the resume rejects both (moved aside), restarts from step 1
    and ends with weights bitwise equal to the uninterrupted run's; with only the NaN step left, the
    run refuses to start and exports nothing."""
    from vtg_jax.run.loop import train

    work = _copy_cut(full_run, tmp_path / "broken", keep_steps=(1, 2, 3))
    _flip_bytes_in_array_data(Path(work) / "checkpoints" / "3")
    _inject_nan_in_adam_moment(work, 2, cache)
    with caplog.at_level("WARNING"):
        summary = train(_config(cache), work)
    assert summary["finished"] and summary["steps"] == STEPS and summary["skipped_updates"] == 0
    assert "differ from the checksums saved with them" in caplog.text
    assert "non-finite values in the restored training state: 1 in 1 arrays" in caplog.text
    assert sorted(p.name.split(".")[0] for p in Path(work, "checkpoints").glob("*.corrupt-*")) == ["2", "3"]
    _assert_same_weights(full_run, work)
    assert [r["step"] for r in read_metrics(work)] == list(range(1, STEPS + 1))

    only_nan = _copy_cut(full_run, tmp_path / "nan", keep_steps=(1,))
    _inject_nan_in_adam_moment(only_nan, 1, cache)
    with pytest.raises(ValueError, match="non-finite values in the restored training state"):
        train(_config(cache), only_nan)
    assert not os.path.exists(os.path.join(only_nan, "hf"))


def _tree_digest(workdir: str) -> dict[str, str]:
    return {str(p.relative_to(workdir)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(Path(workdir).rglob("*")) if p.is_file()}


def test_resume_with_changed_config_stops_naming_the_key(full_run, cache, tmp_path):
    """A resume with another learning rate stops before touching anything, naming `optim.lr`; with
    `resume_changed_config=True` it continues and the change is logged. Changing `steps` or logging is
    allowed; summary.json of a resume keeps the last logged metrics."""
    from vtg_jax.run.loop import ResumeConfigChanged, train

    work = str(tmp_path / "run")
    shutil.copytree(full_run, work)
    before = _tree_digest(work)
    with pytest.raises(ResumeConfigChanged, match=r"optim\.lr: 0\.01 -> 0\.02"):
        train(_config(cache, optim__lr=2e-2), work)
    assert _tree_digest(work) == before

    summary = train(_config(cache, log__every=2), work)  # nothing left to do: resumed at the last step
    last = {k: v for k, v in read_metrics(work)[-1].items() if k not in ("step", "wall_time")}
    assert summary["finished"] and summary["last_metrics"] == last and last["loss/total"] > 0

    summary = train(_config(cache, optim__lr=2e-2, steps=STEPS + 1, resume_changed_config=True), work)
    assert summary["finished"] and summary["steps"] == STEPS + 1
    rows = read_metrics(work)
    assert rows[-1]["step"] == STEPS + 1 and rows[-1]["resume/config_changed"] == 1
    with open(os.path.join(work, "config_changes.jsonl")) as f:
        change = json.loads(f.readline())
    assert change["step"] == STEPS and change["changed"] == {"optim.lr": [0.01, 0.02]}


def _cli(workdir: str, cache: str, steps: int, lr: float = 1e-2) -> list[str]:
    return [sys.executable, "-m", "vtg_jax.main", "--config=configs/sft.py", f"--workdir={workdir}",
            "--config.model.preset=qwen2.5-vl-tiny", "--config.model.init_from=", f"--config.data.cache_dir={cache}",
            "--config.data.synthetic.preset=short", "--config.data.synthetic.num_train=16",
            "--config.data.synthetic.min_duration=6", "--config.data.synthetic.max_duration=8",
            "--config.data.synthetic.min_span=1.0", "--config.data.synthetic.max_span=2.0",
            "--config.data.synthetic.num_val=8", "--config.data.synthetic.num_test=4", f"--config.steps={steps}",
            "--config.batch_size=2", "--config.eval.splits=()", "--config.checkpoint.every=1",
            "--config.log.progress=False", "--config.log.plots=False", f"--config.optim.lr={lr}"]


def test_second_run_on_a_workdir_exits_at_once_naming_the_first(cache, tmp_path):
    """While one run trains, a second command on its workdir (another learning rate) exits non-zero
    naming the first's host and pid, and the first finishes undisturbed with its own config."""
    work = str(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(_cli(work, cache, 12), cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not os.path.exists(os.path.join(work, "vtg_jax.lock")) and time.time() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        second = subprocess.run(_cli(work, cache, 12, lr=5e-2), cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=300)
        assert first.poll() is None, "the first run ended before the second started"
        assert second.returncode == 1
        assert "in use by another run: host " in second.stderr and f"pid {first.pid}" in second.stderr
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
    assert first.returncode == 0, err[-2000:]
    with open(os.path.join(work, "run_config.json")) as f:
        assert json.load(f)["optim"]["lr"] == 1e-2
    assert [r["step"] for r in read_metrics(work)] == list(range(1, 13))
    assert not os.path.exists(os.path.join(work, "vtg_jax.lock"))


def test_failed_checkpoint_save_stops_the_run_once(full_run, cache, tmp_path):
    """Storage that refuses writes past 64 KiB (RLIMIT_FSIZE, as a full disk would): the first
    checkpoint's background save fails, the run stops at the next step boundary with one error naming
    the cause and what to do, exit code 1, summary.json `finished: false` — a handful of log lines,
    not one per array, and none of the tracebacks the failed save's abandoned writes raise on
    TensorStore's threads ("Event loop is closed"), however late they come."""
    del full_run  # compiled the same training step into the session's compilation cache, read below
    work = str(tmp_path / "run")
    # Writes past the limit fail with EFBIG (SIGXFSZ ignored); both survive the exec into the run.
    limited = ("import os, resource, signal, sys\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
               "resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))\n"
               "os.execv(sys.executable, [sys.executable] + sys.argv[1:])\n")
    cmd = [sys.executable, "-c", limited] + _cli(work, cache, STEPS)[1:] + ["--config.checkpoint.async_save=True"]
    # The session's compilation cache is only read (its writes would fail): with this process's matmul
    # precision the run's training step is the one full_run compiled, found there instead of compiled.
    precision = jax.config.jax_default_matmul_precision  # set by conftest.py in this process only
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1e9",
           **({"JAX_DEFAULT_MATMUL_PRECISION": str(precision)} if precision else {})}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    final = [ln for ln in lines if ln.startswith("error: saving a checkpoint in")]
    assert len(final) == 1 and "Fix the storage" in final[0], proc.stderr[-3000:]
    assert len(lines) <= 12, proc.stderr[-5000:]
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr, proc.stderr[-5000:]
    with open(os.path.join(work, "summary.json")) as f:
        summary = json.load(f)
    assert not summary["finished"] and summary["steps"] <= 2 and summary["hf_export"] is None
    assert summary["errors"] and "saving a checkpoint" in summary["errors"][0]
