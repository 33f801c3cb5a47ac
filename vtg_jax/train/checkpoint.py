"""Orbax checkpoints of the training loop: state pytree + per-process loader state + JSON metadata.

Why a wrapper: the loop should not know Orbax. It hands over any pytree (the TrainState of
`train/state.py`, or anything else: nnx.State, optax states, typed PRNG keys, Python scalars) and gets
it back on the shardings of a target tree, so a run saved on one mesh resumes on another (Orbax
reshards on read). Per step directory (`workdir/<step>/`):

    state/   Orbax StandardSave of the pytree (OCDBT, every process writes its own shards)
    loader/  process_<i>-of-<n>.json: each process's Grain iterator state (each reads its own shard)
    meta/    JSON: step, wall time, the run config, the caller's `extra` and a checksum of every array

Verified restores: `save` records each array's content checksum (`integrity.tree_checksums`, computed
on device) in meta/, which Orbax commits in the same atomic rename as the arrays. `restore` recomputes
them on the restored arrays and treats a mismatch (flipped bits in a data file of the same size, a
stale or swapped file) like an unreadable step; so does a restored state the caller's `validate`
rejects (e.g. non-finite parameters). Checkpoints written before checksums existed restore with a
warning that they are not verified.

Saves are asynchronous: `save` returns once arrays are copied to host (so the step may donate its
buffers right after); `wait_until_finished()` must run before the process exits.

Preemption: `install_preemption_handler()` turns SIGTERM into a flag; the loop asks `should_stop(step)`
at every step boundary, then force-saves and exits. With several processes the hosts must agree on the
stop step, so the answer comes from JAX's preemption sync point (when jax.distributed runs the
preemption service, which then owns SIGTERM) or from an all-gather of the local flags.

Interrupted saves leave `<step>.orbax-checkpoint-tmp*` directories, which Orbax ignores; they are
reported and cleaned. A finalised step that does not restore (truncated files, an empty step
directory) is skipped with a warning in favour of the previous one and then moved aside to
`<step>.corrupt-<time>` (only once an older step restored with the same target, so a wrong target
raises instead of discarding good checkpoints).

A failed asynchronous save (a full disk, a revoked bucket) surfaces at the next `save` or
`check_for_errors()` as one `CheckpointSaveError` naming the cause; the hundreds of lines Orbax's
writer threads would log for it are cut to the first (`_OneStorageError`). The loop then stops.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as ocm

from vtg_jax.train.integrity import checksum_mismatches, tree_checksums

log = logging.getLogger(__name__)

_STATE, _LOADER, _META = "state", "loader", "meta"
_TMP_MARK = ".orbax-checkpoint-tmp"


class CheckpointCorrupt(ValueError):
    """A step that restored but does not verify (checksum mismatch, or rejected by `validate`)."""


class CheckpointSaveError(RuntimeError):
    """An asynchronous save failed after `save` returned (reported at the next boundary)."""


class _OneStorageError(logging.Filter):
    """Lets the first error Orbax logs from its save threads through and counts the rest.

    Why: one failed save (a full disk) makes Orbax log an error from each of its writer threads and
    asyncio a "Task exception was never retrieved" traceback for every array being written: hundreds
    of lines for one cause, which the Checkpointer reports once as `CheckpointSaveError` anyway."""

    _LOGGERS = ("absl", "asyncio")

    def __init__(self) -> None:
        super().__init__()
        self.seen = False
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        text = record.getMessage() if record.name == "asyncio" else record.pathname
        if "orbax" not in text:
            return True
        if not self.seen:
            self.seen = True
            record.exc_info, record.exc_text = None, None  # the message names the cause; the loop reports it
            return True
        self.suppressed += 1
        return False

    def install(self) -> None:
        for name in self._LOGGERS:
            logging.getLogger(name).addFilter(self)

    def uninstall(self) -> None:
        for name in self._LOGGERS:
            logging.getLogger(name).removeFilter(self)


class _LoaderStateHandler(ocp.CheckpointHandler):
    """One JSON file per JAX process: each process reads a different data shard, so each has its own
    iterator position (Orbax's JsonCheckpointHandler writes on the primary host only)."""

    @staticmethod
    def _file(directory: epath.Path) -> epath.Path:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    def save(self, directory: epath.Path, args: "LoaderSave") -> None:
        self._file(directory).write_text(json.dumps(args.state))

    def restore(self, directory: epath.Path, args: Optional["LoaderRestore"] = None) -> Optional[dict]:
        path = self._file(directory)
        if not path.exists():
            log.warning("no loader state %s (saved with another process count?); the data order restarts",
                        path)
            return None
        return json.loads(path.read_text())

    def metadata(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(_LoaderStateHandler, for_save=True)
@dataclasses.dataclass
class LoaderSave(ocp.args.CheckpointArgs):
    state: Optional[dict]


@ocp.args.register_with_handler(_LoaderStateHandler, for_restore=True)
@dataclasses.dataclass
class LoaderRestore(ocp.args.CheckpointArgs):
    pass


def abstract_like(tree: Any, shardings: Any = None) -> Any:
    """Restore target for `tree`: a ShapeDtypeStruct (with sharding) per array, other leaves as they are.

    `shardings` places the restored arrays on another mesh: a tree of `jax.sharding.Sharding` (None:
    keep) matching `tree` or a prefix of it, e.g. `logical_to_mesh_sharding(...)`, which has one
    sharding per nnx Variable. Without it each array keeps its current sharding.
    """
    def one(x: Any, sharding: Any = None) -> Any:
        if not isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) and not (sharding and isinstance(x, np.ndarray)):
            return x  # Python scalars, and numpy arrays restored as numpy
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding or getattr(x, "sharding", None))

    if shardings is None:
        return jax.tree.map(one, tree)
    return jax.tree.map(lambda s, sub: jax.tree.map(lambda x: one(x, s), sub), shardings, tree,
                        is_leaf=lambda s: s is None or isinstance(s, jax.sharding.Sharding))


def jsonable_config(config: Any) -> Any:
    """An ml_collections ConfigDict / dataclass / mapping as plain JSON (unknown leaves as strings)."""
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return json.loads(json.dumps(config, default=str))


def _preemption_sync_manager_active() -> bool:
    """True when jax.distributed runs the preemption service (it then owns SIGTERM)."""
    from jax._src import distributed  # no public accessor for the sync manager

    state = distributed.global_state
    return state.client is not None and getattr(state, "preemption_sync_manager", None) is not None


class Checkpointer:
    """Periodic asynchronous checkpoints of the training state in `workdir`, the last `keep_last` kept.

    Every process calls every method (saves and restores are collective).
    """

    def __init__(self, workdir: str, *, save_every_n_steps: int, keep_last: Optional[int] = 3,
                 async_save: bool = True, config: Any = None) -> None:
        if save_every_n_steps < 1:
            raise ValueError(f"save_every_n_steps must be >= 1, got {save_every_n_steps}")
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None (keep all), got {keep_last}")
        self.workdir = epath.Path(workdir)
        self._config = jsonable_config(config)
        self._report_interrupted_saves()
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=ocm.AnySavePolicy([ocm.FixedIntervalPolicy(save_every_n_steps),
                                                    ocm.PreemptionCheckpointingPolicy()]),
            preservation_policy=ocm.LatestN(keep_last),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self._quiet = _OneStorageError()
        self._quiet.install()
        self._mngr = ocp.CheckpointManager(self.workdir, options=options, item_names=(_STATE, _LOADER, _META))
        self._stop = threading.Event()
        self._stopping = False
        self._prev_handlers: dict[int, Any] = {}

    # ---- saving -------------------------------------------------------------------------------
    def save(self, step: int, state: Any, *, loader_state: Optional[dict] = None, extra: Optional[dict] = None,
             force: bool = False) -> bool:
        """Starts a save when `step` is a multiple of `save_every_n_steps` (or at a preemption sync
        point, or with `force`); returns whether one started. A step already on disk is not rewritten."""
        step = int(step)
        self.check_for_errors()
        if step in self._mngr.all_steps():
            return False
        if not force and not self._mngr.should_save(step):
            return False  # no checksums to compute for a step that is not saved
        meta = {"step": step, "wall_time": time.time(), "config": self._config, "extra": extra,
                "checksums": tree_checksums(state)}
        args = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state), _LOADER: LoaderSave(loader_state),
                                     _META: ocp.args.JsonSave(meta)})
        # Decided above (force=True: Orbax would ask the save policy and the preemption sync point again).
        # Orbax's save first waits for the previous asynchronous one, so its failure can surface here.
        return bool(self._storage_call(lambda: self._mngr.save(step, args=args, force=True)))

    def check_for_errors(self) -> None:
        """Raises `CheckpointSaveError` if an earlier asynchronous save failed."""
        self._storage_call(self._mngr.check_for_errors)

    def wait_until_finished(self) -> None:
        """Blocks until the pending asynchronous save is committed (call before exiting); raises
        `CheckpointSaveError` if it failed."""
        self._storage_call(self._mngr.wait_until_finished)

    def _storage_call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 — whatever the storage raised, reported as one error
            more = self._quiet.suppressed
            raise CheckpointSaveError(
                f"saving a checkpoint in {self.workdir} failed: {type(e).__name__}: {str(e)[:1000]}"
                + (f" ({more} further errors of the same save not shown)" if more else "")) from e

    def close(self) -> None:
        try:
            self.wait_until_finished()
        finally:
            self._mngr.close()
            self._quiet.uninstall()

    def abandon(self) -> None:
        """After a `CheckpointSaveError`: releases the manager without re-raising the failed save."""
        try:
            self._mngr.close()
        except Exception as e:  # noqa: BLE001 — already reported as CheckpointSaveError
            log.debug("closing the checkpoint manager after a failed save: %s", e)
        # The filter stays: writer threads of the failed save may still be logging their errors.

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- restoring ----------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        """Committed steps, re-read from disk (another process / a restart may have written some);
        while a save is in flight the manager's own list is kept, so that save is not forgotten."""
        if not self._mngr.is_saving_in_progress():
            self._mngr.reload()
        return sorted(self._mngr.all_steps())

    def latest_step(self) -> Optional[int]:
        """Latest committed step on disk (None on a fresh start)."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def restore(self, step: Optional[int] = None, *, target_abstract_state: Any,
                validate: Optional[Callable[[Any], None]] = None
                ) -> Optional[tuple[Any, Optional[dict], Optional[dict], int]]:
        """(state, loader_state, extra, step) of `step` (default: the latest good one), with the
        arrays placed as in `target_abstract_state` (see `abstract_like`); None when there is none.

        A step is good when it reads, its arrays match the checksums saved with it, and `validate`
        (called with the restored state) does not raise. With `step=None`, a step that is not good is
        skipped with a warning for the previous one; if none is, the latest step's error is raised
        (e.g. a target of the wrong shapes).
        """
        if step is not None:
            return self._restore_step(int(step), target_abstract_state, validate)
        steps = self.all_steps()
        bad: list[int] = []
        first_error: Optional[BaseException] = None
        for s in reversed(steps):
            try:
                out = self._restore_step(s, target_abstract_state, validate)
            except Exception as e:  # noqa: BLE001 — any unreadable checkpoint: fall back, re-raise below
                log.warning("checkpoint %s does not restore (%s: %s); falling back to the previous step",
                            self._mngr.directory / str(s), type(e).__name__, str(e)[:500])
                bad.append(s)
                first_error = first_error or e
                continue
            self._quarantine(bad)
            return out
        if first_error is not None:
            raise first_error
        return None

    def _restore_step(self, step: int, target: Any, validate: Optional[Callable[[Any], None]] = None
                      ) -> tuple[Any, Optional[dict], Optional[dict], int]:
        args = ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(target), _LOADER: LoaderRestore(),
                                     _META: ocp.args.JsonRestore()})
        out = self._mngr.restore(step, args=args)
        meta = out[_META] or {}
        where = self._mngr.directory / str(step)
        if "checksums" not in meta:
            log.warning("checkpoint %s has no checksums (written by an older vtg_jax): restored unverified", where)
        else:
            bad = checksum_mismatches(meta["checksums"], out[_STATE])
            if bad:
                raise CheckpointCorrupt(f"checkpoint {where}: {len(bad)} array(s) differ from the checksums "
                                        f"saved with them (corrupted on storage?): " + "; ".join(bad[:5]))
        if validate is not None:
            try:
                validate(out[_STATE])
            except Exception as e:  # noqa: BLE001 — the caller's rejection, reported with the step
                raise CheckpointCorrupt(f"checkpoint {where}: {e}") from e
        return out[_STATE], out[_LOADER], meta.get("extra"), step

    def read_metadata(self, step: int) -> dict:
        """The JSON saved with `step`: step, wall_time, config, extra (no arrays are read)."""
        return self._mngr.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META]

    def _quarantine(self, steps: list[int]) -> None:
        """Moves unreadable newer steps aside so later saves at those steps do not collide and the
        evidence stays for inspection."""
        if not steps:
            return
        if jax.process_index() == 0:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for s in steps:
                src = self._mngr.directory / str(s)
                if src.exists():
                    src.rename(self._mngr.directory / f"{s}.corrupt-{stamp}")
                    log.warning("moved unreadable checkpoint %s aside to %s.corrupt-%s", src, s, stamp)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("vtg_jax_checkpoint_quarantine")
        self._mngr.reload()

    def _report_interrupted_saves(self) -> None:
        if not self.workdir.exists():
            return
        tmp = sorted(p.name for p in self.workdir.iterdir() if _TMP_MARK in p.name)
        if tmp:
            log.warning("incomplete checkpoint directories in %s (a save was interrupted): %s; they are "
                        "ignored and removed, resuming from the latest complete step", self.workdir, tmp)

    # ---- preemption ---------------------------------------------------------------------------
    def install_preemption_handler(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
        """Makes SIGTERM (a preemption notice) set a flag that `should_stop` reports, instead of killing
        the process mid-step. Not installed when jax.distributed's preemption service is active: it
        already catches SIGTERM and `should_stop` asks its sync point. Call from the main thread."""
        if _preemption_sync_manager_active():
            log.info("jax preemption service active: SIGTERM is handled by its sync point")
            return

        def on_signal(signum: int, frame: Any) -> None:
            del frame
            log.warning("received signal %d: saving at the next step boundary, then stopping", signum)
            self._stop.set()

        for sig in signals:
            self._prev_handlers[sig] = signal.signal(sig, on_signal)

    def uninstall_preemption_handler(self) -> None:
        """Restores the signal handlers replaced by `install_preemption_handler`."""
        for sig, prev in self._prev_handlers.items():
            signal.signal(sig, prev)
        self._prev_handlers.clear()

    def request_stop(self) -> None:
        """Asks the loop to save and stop at the next boundary, as a SIGTERM would (with several
        processes: call it on every one, or the hosts may stop at different steps)."""
        self._stop.set()

    def should_stop(self, step: int) -> bool:
        """True once this run must save and exit; call at every step boundary on every process (the
        hosts agree on the step). Stays True once it has been."""
        if not self._stopping:
            self._stopping = self._agree_on_stop(int(step))
        return self._stopping

    def _agree_on_stop(self, step: int) -> bool:
        from jax.experimental import multihost_utils

        local = self._stop.is_set()
        if local and jax.process_count() == 1:
            return True
        if _preemption_sync_manager_active():  # must be asked at every step on every host
            return bool(multihost_utils.reached_preemption_sync_point(step)) or local
        if jax.process_count() == 1:
            return False
        return bool(np.asarray(multihost_utils.process_allgather(np.asarray(local))).any())


def export_hf(model: Any, path: str, **kwargs: Any) -> None:
    """Writes `model` (a QwenVL with trained and frozen parts merged) as a Hugging Face directory.
    Every process must call it when parameters span hosts (only process 0 writes)."""
    from vtg_jax.models.qwen_vl import save_pretrained  # lazily: checkpoints need no model code

    save_pretrained(model, path, **kwargs)
