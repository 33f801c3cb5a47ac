"""The training loop behind `python -m vtg_jax.main --config=configs/<recipe>.py --workdir=W`.

    loader -> iteration (sampler -> rewards -> frozen-model scores -> jitted step) -> metrics -> checkpoint

What a run writes to its workdir:
    checkpoints/<step>/    Orbax: TrainState + PRNG key, the loader's iterator state, the config
    run_config.json       the config as run
    metrics.jsonl, tb/     every step's metrics (TensorBoard events), plots/*.png at the end
    predictions/<split>_step<k>.jsonl   greedy answers of each evaluation
    hf/                    the final policy in Hugging Face format (transformers loads it)
    summary.json           final evaluation, steps, wall time, skipped updates / examples

Resume: a run restarted with the same workdir restores the latest readable checkpoint (state,
optimizer, step, PRNG key, loader position) and continues; since rollouts are seeded by (key, step)
and the loader resumes mid-epoch, the continued run is bitwise the uninterrupted one on CPU
(tests/run/test_loop.py kills a run with SIGKILL to check). SIGTERM (a preemption) saves and exits.

Parallelism: parameters, optimizer state and frozen models are sharded over the (data, fsdp, tensor)
mesh by their logical names, and the model's activation constraints split the computation over the
batch axes inside the step. Input is per host (`data.host_input`): with several processes each reads
and decodes only the rows of every global batch that its devices hold (`parallel.distributed.
process_rows`), so the processes' batches together are the one-process batch (`data/read` counts each
process's records). Every algorithm's iteration then works on its own rows when the mesh lets each
process hold whole vision shards (`RunContext.packs_own_rows`): SFT packs them into its share of the
step's global arrays (`parallel.host_local_to_global`); the RL iterations sample, reward, score and
pack them the same way (`sampling.process_local`); otherwise the rows are gathered
(`RunContext.host_batch`). Evaluation splits its records over the processes alike (`eval.loop`).
"""
from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import time
import zlib
from typing import Any

import jax
import numpy as np

from jax.sharding import NamedSharding, PartitionSpec

from vtg_jax.algorithms import registry
from vtg_jax.algorithms.context import RunContext
from vtg_jax.data.run_data import RunData
from vtg_jax.io.checkpoint import Checkpointer, CheckpointSaveError, export_hf, jsonable_config
from vtg_jax.io.metrics_log import MetricsLogger
from vtg_jax.io.workdir import load_json, save_json
from vtg_jax.io.workdir_lock import WorkdirLock
from vtg_jax.parallel.distributed import global_to_host, is_main_process, process_rows
from vtg_jax.run.config import optim_config
from vtg_jax.run.config_checks import require_complete
from vtg_jax.run.data_setup import make_train_loader, missing_summary
from vtg_jax.run.evaluate import baselines, run_evaluations
from vtg_jax.run.model_setup import (CHECKPOINT_DIR, HF_EXPORT_DIR, build_model, checkpoint_tree, reference_section,
                                       restore_train_state)
from vtg_jax.run.preamble import OpenRun, open_run
from vtg_jax.run.resume import config_changes
from vtg_jax.train.integrity import nonfinite_leaves
from vtg_jax.train.optim import make_optimizer
from vtg_jax.train.state import init_train_state, merge_model, state_shardings

log = logging.getLogger(__name__)
# OSErrors that mean the workdir's storage failed (no space, quota, read-only, I/O): the run stops cleanly.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG)
KEY_METRICS = ("loss/total", "reward/total", "rl/kl_ref", "rl/reverse_kl", "eval/mIoU")


def load_metrics(run_data: RunData) -> dict[str, int]:
    """What reading each records file read, kept, dropped and fixed, as `data/<split>/<count>` metrics
    (e.g. `data/train/dropped/bad_number`); logged once, with the first metrics line of a run."""
    stats = getattr(run_data, "load_stats", None) or {}
    return {f"data/{split}/{key}": value for split, st in stats.items() for key, value in st.as_dict().items()}


def _context(config: Any, run: OpenRun, rng: np.ndarray) -> tuple[Any, RunContext]:
    """The initial train state (sharded over the mesh) and the iteration builders' context."""
    mesh, model, run_data = run.mesh, run.model, run.run_data
    msg = missing_summary(run_data)
    if msg:
        log.warning(msg)
    tx, schedule = make_optimizer(optim_config(config))
    state, graphdef, frozen = init_train_state(model, tx, freeze_vision=config.model.freeze_vision)
    shardings: dict[str, Any] = {}
    if mesh is not None:
        shardings = dict(state_sharding=state_shardings(state, mesh), frozen_sharding=state_shardings(frozen, mesh),
                         batch_sharding=NamedSharding(mesh, PartitionSpec()))
        state = jax.device_put(state, shardings["state_sharding"])
    if run.teacher is not None and run.teacher.cfg.text.vocab_size != model.cfg.text.vocab_size:
        raise ValueError("teacher and student must share a vocabulary (same tokenizer)")
    reference = None
    if registry.get(config.algorithm).uses_reference(config):
        # the initial policy computing as config.reference says; "model" names its checkpoint fields in errors
        reference = build_model(reference_section(config), seed=config.seed, mesh=mesh, name="model")
    rows = None  # one process reads every row
    if mesh is not None and jax.process_count() > 1:
        rows = tuple(process_rows(mesh, int(config.batch_size), int(config.micro_batches)))
    ctx = RunContext(config=config, model_cfg=model.cfg, graphdef=graphdef, frozen=frozen, tx=tx, schedule=schedule,
                     run_data=run_data, seed=int(rng[-1]), mesh=mesh, teacher=run.teacher, reference=reference,
                     rows=rows, **shardings)
    return state, ctx


def _data_metrics(loader: Any, ctx: RunContext, batch: dict, gathered: bool) -> dict[str, float]:
    """The loader's counts (`data/read`: records this process read) with `data/read_all` (every process's)
    and `data/batch_crc`, a checksum of the global batch's record indices (equal in every process layout);
    `batch`: the iteration's batch, the whole one when `gathered`, else this process's rows."""
    out = dict(loader.metrics())
    index = np.asarray(batch["record_index"], np.int64)
    if not gathered:  # only the indices of the other processes' rows are fetched
        index = np.asarray(ctx.host_batch({"record_index": index})["record_index"], np.int64)
    if ctx.rows is not None:
        out["data/read_all"] = int(np.sum(global_to_host(np.asarray([out["data/read"]], np.int64))))
    else:
        out["data/read_all"] = out["data/read"]
    out["data/batch_crc"] = float(zlib.crc32(index.tobytes()))
    return out


class RunFailed(RuntimeError):
    """The run stopped on an error it has reported (summary.json written, `finished: false`)."""


class ResumeConfigChanged(ValueError):
    """A resumed run's config differs from its checkpoint's in keys a resume may not change."""


def _resume_config_changes(ckpt: Any, config: Any, workdir: str, step: int) -> dict[str, Any]:
    """The config keys this resumed run changes against checkpoint `step`'s (outside
    `run.resume.RESUMABLE_CHANGES`): an error unless `config.resume_changed_config`, then logged and
    appended to config_changes.jsonl."""
    saved = ckpt.read_metadata(step)["config"]
    if saved is None:  # a checkpoint written without its config (not by this loop)
        return {}
    changes = config_changes(saved, jsonable_config(config))
    if saved["steps"] != config.steps:
        log.warning("steps changed from %s to %s on resume: the learning-rate schedule now spans %s steps",
                    saved["steps"], config.steps, config.steps)
    if not changes:
        return {}
    shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
    if not config.resume_changed_config:
        raise ResumeConfigChanged(
            f"{workdir} resumes from step {step}, whose config differs in {len(changes)} key(s): {shown}. "
            "Rerun with the checkpoint's values, use another --workdir, or pass "
            "--config.resume_changed_config=True to continue with the change")
    log.warning("resuming from step %d with a changed config (resume_changed_config=True): %s", step, shown)
    if is_main_process():
        with open(os.path.join(workdir, "config_changes.jsonl"), "a") as f:
            f.write(json.dumps({"step": step, "wall_time": time.time(),
                                "changed": {k: list(v) for k, v in changes.items()}}, default=str) + "\n")
    return changes


def train(config: Any, workdir: str) -> dict[str, Any]:
    """Runs `config` in `workdir` (resuming if it holds checkpoints); returns the summary.

    Holds the workdir's lock (`workdir_lock.WorkdirLock`) for the whole run: a second run on the same
    workdir raises `WorkdirBusy` naming this one. Raises `RunFailed` (after writing summary.json)
    when a checkpoint save failed or the final weights are not finite, and before anything else
    `run_config.IncompleteConfig` / FileNotFoundError for missing fields / paths (`require_complete`)."""
    require_complete(config)
    with WorkdirLock(workdir):
        return _train(config, workdir)


def _train(config: Any, workdir: str) -> dict[str, Any]:
    t_start = time.time()
    # run_config.json is written once the checkpoint's config is known to agree (_resume_config_changes)
    with open_run(config, workdir, save_config=False) as run:
        return _run(config, workdir, run, t_start)


def _run(config: Any, workdir: str, run: OpenRun, t_start: float) -> dict[str, Any]:
    mesh, run_data = run.mesh, run.run_data
    rng = np.asarray(jax.random.key_data(jax.random.key(config.seed)))
    state, ctx = _context(config, run, rng)
    own_rows = None if ctx.rows is None else ctx.rows[jax.process_index()]
    loader = make_train_loader(run_data, config.data, batch_size=config.batch_size, seed=config.seed, rows=own_rows)
    ckpt = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), save_every_n_steps=config.checkpoint.every,
                        keep_last=config.checkpoint.keep, async_save=config.checkpoint.async_save,
                        config=config)
    start = 0
    restored = restore_train_state(ckpt, state)
    startup = load_metrics(run_data)  # merged into this process's first metrics line, then cleared
    if restored is not None:
        state, rng, loader_state, start = restored
        changes = _resume_config_changes(ckpt, config, workdir, start)
        if changes:
            startup["resume/config_changed"] = len(changes)
        rng = np.asarray(rng)
        if loader_state is not None:
            loader.set_state(loader_state)
        log.info("resumed from step %d", start)
    save_json(workdir, "run_config.json", config.to_dict())
    ctx = dataclasses.replace(ctx, seed=int(rng[-1]))  # a resumed run samples from its checkpointed key
    logger = MetricsLogger(workdir, total_steps=config.steps, start_step=start, is_main_process=is_main_process(),
                           key_metrics=KEY_METRICS, progress=config.log.progress)
    ckpt.install_preemption_handler()
    final_eval: dict[str, float] = {}
    last_metrics: dict[str, float] = dict(logger.last_logged)  # a resume that logs nothing keeps these
    errors: list[str] = []  # why the run did not finish (reported once, in summary.json and RunFailed)
    step = start
    record = registry.get(config.algorithm)
    iterate = record.make_iteration(ctx)
    policy = lambda: merge_model(ctx.graphdef, state.params, ctx.frozen)  # noqa: E731
    if start == 0 and config.eval.at_start and config.eval.splits:
        final_eval = run_evaluations(policy(), run_data, config, workdir, 0, mesh)
        save_json(workdir, "eval_start.json", final_eval)
        last_metrics = logger.log(0, {**startup, **final_eval})
        startup = {}
    teacher_done = os.path.exists(os.path.join(workdir, "eval_teacher.json"))
    if ctx.teacher is not None and config.eval.splits and not teacher_done:
        save_json(workdir, "eval_teacher.json",
                  run_evaluations(ctx.teacher, run_data, config, workdir, 0, mesh, tag="teacher_"))
    try:
        for step in range(start + 1, config.steps + 1):
            rows = next(loader)  # this process's rows of the global batch (all of them on one process)
            t0 = time.perf_counter()
            batch = rows if record.per_host_input else ctx.host_batch(rows)
            state, metrics = iterate(state, batch, step)
            # The step is dispatched asynchronously: wait for it, so that the time covers its compute
            # (the metrics are read on the host right after anyway).
            state, metrics = jax.block_until_ready((state, metrics))
            metrics = {**metrics, **_data_metrics(loader, ctx, batch, gathered=not record.per_host_input),
                       "time/iteration_s": time.perf_counter() - t0}
            every = config.eval.every  # None: only at the end
            evaluate_now = bool(config.eval.splits) and (
                (every is not None and step % every == 0) or step == config.steps)
            if evaluate_now:
                final_eval = run_evaluations(policy(), run_data, config, workdir, step, mesh)
                metrics.update(final_eval)
            if step % config.log.every == 0 or step == config.steps or evaluate_now:
                last_metrics = logger.log(step, {**startup, **metrics})
                startup = {}
            ckpt.save(step, checkpoint_tree(state, rng), loader_state=loader.get_state())
            if ckpt.should_stop(step):
                ckpt.save(step, checkpoint_tree(state, rng), loader_state=loader.get_state(), force=True)
                log.warning("stopping at step %d on request (preemption); resume with the same workdir", step)
                break
        else:
            ckpt.save(config.steps, checkpoint_tree(state, rng), loader_state=loader.get_state(), force=True)
        ckpt.close()
    except (CheckpointSaveError, OSError) as e:  # storage failed (full disk): stop here, once, saying what to do
        if isinstance(e, OSError) and e.errno not in STORAGE_ERRNOS:
            raise
        errors.append(f"{e}. Stopped at step {step}; the latest complete checkpoint is step "
                      f"{ckpt.latest_step()}. Fix the storage (free space?) and rerun the same command")
        log.error("%s", errors[-1])
        ckpt.abandon()
    loader.close()
    bad = nonfinite_leaves(state.params)
    if bad:  # the update guard makes this unreachable; never export or call finished what it would miss
        errors.append(f"the final parameters hold non-finite values ({sum(bad.values())} in {sorted(bad)[:5]}): "
                      "not exported")
        log.error("%s", errors[-1])
    done = step >= config.steps and not errors
    if done and config.checkpoint.export_hf:
        # Every process: with parameters spanning hosts (FSDP over processes) the export gathers each tensor
        # in a collective; process 0 alone would wait forever for the others (only process 0 writes).
        export_hf(policy(), os.path.join(workdir, HF_EXPORT_DIR))
    try:
        plots = logger.finish(plot=config.log.plots and done)
    except OSError as e:
        plots = []
        if not errors:
            raise
        log.debug("closing the metrics files after a storage error: %s", e)
    summary = {"algorithm": config.algorithm, "eval_start": load_json(workdir, "eval_start.json"),
               "eval_teacher": load_json(workdir, "eval_teacher.json"), "baselines": baselines(run_data, config),
               "steps": int(step), "finished": bool(done),
               "wall_s": round(time.time() - t_start, 1), "eval": final_eval,
               "skipped_updates": int(jax.device_get(state.skipped)), "data": loader.metrics(), "plots": plots,
               "data_load": {split: st.as_dict() for split, st in run_data.load_stats.items()},
               "last_metrics": last_metrics, "errors": errors,
               "hf_export": os.path.join(workdir, HF_EXPORT_DIR) if done and config.checkpoint.export_hf else None}
    try:
        save_json(workdir, "summary.json", summary)
    except OSError as e:
        if not errors:
            raise
        errors.append(f"summary.json not written either ({e})")
    if errors:
        raise RunFailed("; ".join(errors))
    return summary
