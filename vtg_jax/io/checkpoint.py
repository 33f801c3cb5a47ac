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
`check_for_errors()` as one `CheckpointSaveError` naming the cause, once the manager is closed and the
threads the saves started are done (so nothing Orbax does about it comes after the caller's report);
the Checkpointer saves nothing more. The hundreds of lines Orbax's writer threads would log for it are
cut to the first (`_OneStorageError`), and the tracebacks its abandoned writes raise on background
threads are recorded at debug level instead of printed (`_SaveLeftoverHooks`). The loop then stops.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import signal
import sys
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


_CLOSED_LOOP = "Event loop is closed"
# How long a failed save's own threads may take to finish before the failure is reported anyway.
_FAILED_SAVE_THREADS_WAIT_S = 30.0


def _is_abandoned_async_work(exc: Optional[BaseException]) -> bool:
    """True for what work left running by a stopped event loop raises when it completes: the loop is
    closed, or the work was cancelled."""
    if isinstance(exc, (asyncio.CancelledError, concurrent.futures.CancelledError)):
        return True
    return isinstance(exc, RuntimeError) and str(exc) == _CLOSED_LOOP


class _OneStorageError(logging.Filter):
    """Lets the first error Orbax logs from its save threads through and counts the rest.

    Why: one failed save (a full disk) makes Orbax log an error from each of its writer threads and
    asyncio a "Task exception was never retrieved" traceback for every array being written: hundreds
    of lines for one cause, which the Checkpointer reports once as `CheckpointSaveError` anyway.
    A callback that finds its event loop closed (concurrent.futures logs "exception calling callback")
    is such a line too, never the one shown."""

    _LOGGERS = ("absl", "asyncio", "concurrent.futures")

    def __init__(self) -> None:
        super().__init__()
        self.seen = False
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if record.exc_info and _is_abandoned_async_work(record.exc_info[1]):
            self.suppressed += 1
            return False
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


class _SaveLeftoverHooks:
    """`sys.unraisablehook` and `threading.excepthook` that record, at debug level, the exceptions a
    failed save leaves behind on background threads, and pass every other one to the previous hooks.

    Why: Orbax runs each handler's writes in an event loop of its own, which stops at the first failed
    write (a full disk) and is closed with the other writes still in flight. TensorStore completes those
    on its own threads and its completion callback calls the closed loop's `call_soon_threadsafe`:
    one "RuntimeError: Event loop is closed" traceback per array, printed through `sys.unraisablehook`
    (not logging) at any time from the failure, before the loop has even seen it, until the process
    exits. A leftover is such an error, a cancellation, or an error naming the checkpoint directory."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._active = False
        self._lock = threading.Lock()
        self.recorded = 0
        self._previous_unraisablehook: Callable[[Any], Any] = sys.unraisablehook
        self._previous_excepthook: Callable[[Any], Any] = threading.excepthook

    def is_leftover(self, exc: Optional[BaseException]) -> bool:
        return _is_abandoned_async_work(exc) or (exc is not None and self._directory in str(exc))

    def install(self) -> None:
        if self._active:
            return
        self._previous_unraisablehook, sys.unraisablehook = sys.unraisablehook, self._on_unraisable
        self._previous_excepthook, threading.excepthook = threading.excepthook, self._on_thread_exception
        self._active = True

    def uninstall(self) -> None:
        """Restores the previous hooks (where a hook installed later has not replaced ours; if one has,
        ours stays in its chain and passes everything on)."""
        if not self._active:
            return
        self._active = False
        if sys.unraisablehook == self._on_unraisable:
            sys.unraisablehook = self._previous_unraisablehook
        if threading.excepthook == self._on_thread_exception:
            threading.excepthook = self._previous_excepthook
        if self.recorded > 1:
            log.debug("%d exceptions left on background threads by failed checkpoint saves were not shown",
                      self.recorded)

    def _on_unraisable(self, args: Any) -> None:
        if not self._record(args.exc_value, "an unraisable exception"):
            self._previous_unraisablehook(args)

    def _on_thread_exception(self, args: Any) -> None:
        name = args.thread.name if args.thread is not None else "?"
        if not self._record(args.exc_value, f"thread {name}"):
            self._previous_excepthook(args)

    def _record(self, exc: Optional[BaseException], where: str) -> bool:
        """Records `exc` when it is a leftover of a failed save (the first with its message); says whether."""
        if not (self._active and self.is_leftover(exc)):
            return False
        with self._lock:
            self.recorded += 1
            first = self.recorded == 1
        if first:
            log.debug("not shown, left by a failed checkpoint save (%s): %s: %s", where, type(exc).__name__,
                      str(exc)[:500])
        return True


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
        # Installed before any save: a failed save's leftovers start before the failure is reported.
        self._leftovers = _SaveLeftoverHooks(str(self.workdir))
        self._leftovers.install()
        self._manager_closed = False
        self._failure: Optional[str] = None  # the CheckpointSaveError message, once a save failed
        self._save_threads: list[threading.Thread] = []  # threads Orbax started in `save` calls
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
        return bool(self._storage_call(lambda: self._start_save(step, args)))

    def _start_save(self, step: int, args: ocp.args.Composite) -> bool:
        """Orbax's save, remembering the threads it starts (waited for if a save fails). Only non-daemon
        ones: Orbax's are, while the daemon "Dummy" entries stand for TensorStore's own threads, which
        cannot be joined."""
        before = set(threading.enumerate())
        try:
            return self._mngr.save(step, args=args, force=True)
        finally:
            started = [t for t in threading.enumerate() if t not in before and not t.daemon]
            self._save_threads = [t for t in self._save_threads if t.is_alive()] + started

    def check_for_errors(self) -> None:
        """Raises `CheckpointSaveError` if an earlier asynchronous save failed."""
        self._storage_call(self._mngr.check_for_errors)

    def wait_until_finished(self) -> None:
        """Blocks until the pending asynchronous save is committed (call before exiting); raises
        `CheckpointSaveError` if it failed."""
        self._storage_call(self._mngr.wait_until_finished)

    def _storage_call(self, fn: Callable[[], Any]) -> Any:
        """`fn()`; whatever it raises becomes one `CheckpointSaveError`, raised once Orbax's background
        work on the failed save is over. After that every call raises it again."""
        if self._failure is not None:
            raise CheckpointSaveError(f"an earlier checkpoint save failed: {self._failure}")
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 — whatever the storage raised, reported as one error
            self._shut_down_after_failure()
            more = self._quiet.suppressed
            self._failure = (f"saving a checkpoint in {self.workdir} failed: {type(e).__name__}: {str(e)[:1000]}"
                             + (f" ({more} further errors of the same save not shown)" if more else ""))
            raise CheckpointSaveError(self._failure) from e

    def _shut_down_after_failure(self) -> None:
        """Closes the manager and waits (a bounded time) for the threads the saves started, so that
        Orbax is done with the failed save, and has logged what it logs about it, before it is reported."""
        self._close_manager_after_failure()
        deadline = time.monotonic() + _FAILED_SAVE_THREADS_WAIT_S
        for thread in self._save_threads:
            if thread is not threading.current_thread():
                # Thread.join itself: Orbax's thread classes re-raise the save's error from their join.
                threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))
        running = [t.name for t in self._save_threads if t.is_alive()]
        if running:
            log.debug("threads of the failed checkpoint save still running after %.0f s: %s",
                      _FAILED_SAVE_THREADS_WAIT_S, running)

    def _close_manager_after_failure(self) -> None:
        """Closes the Orbax manager once, whatever the failed save left in it."""
        if self._manager_closed:
            return
        self._manager_closed = True
        # wait_until_finished first: it raises a failed save's error once, after which close() gets past it
        # and also stops the manager's metadata and deletion threads.
        for call in (self._mngr.wait_until_finished, self._mngr.close):
            try:
                call()
            except Exception as e:  # noqa: BLE001 — the failure is reported as CheckpointSaveError
                log.debug("closing the checkpoint manager after a failed save: %s", e)

    def close(self) -> None:
        """Waits for the pending save and closes. The log filter and the leftover hooks are removed,
        except when this close reports a failed save (its abandoned writes still complete later)."""
        if self._failure is None:
            self.wait_until_finished()  # a failed save: CheckpointSaveError, the manager closed, hooks kept
        try:
            if not self._manager_closed:
                self._manager_closed = True
                self._mngr.close()
        finally:
            self._leftovers.uninstall()
            self._quiet.uninstall()

    def abandon(self) -> None:
        """After a `CheckpointSaveError`: releases the manager without re-raising the failed save.

        The log filter and the leftover hooks stay for the rest of the process (or until `close()`):
        TensorStore completes the failed save's abandoned writes on its own threads, at any time."""
        self._close_manager_after_failure()

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
