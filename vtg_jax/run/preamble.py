"""What every job (train, eval, select) does first: check the config, make the workdir, lay out the
devices, build the policy (and teacher) and read the data.

    with open_run(config, workdir) as run:      # run.mesh, run.model, run.teacher, run.run_data
        ...                                     # inside the mesh's logical-axis scope
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Any, Iterator, Optional

import jax

from vtg_jax.data.run_data import RunData
from vtg_jax.io.workdir import save_json
from vtg_jax.parallel.distributed import is_main_process
from vtg_jax.parallel.mesh import mesh_from_config
from vtg_jax.parallel.rules import DEFAULT_RULES, sharded_call
from vtg_jax.run.config_checks import require_complete, uses_teacher
from vtg_jax.run.data_setup import build_run_data
from vtg_jax.run.model_setup import build_model

log = logging.getLogger(__name__)


def run_mesh(config: Any) -> Optional[jax.sharding.Mesh]:
    """The configured mesh, or None on a single device (no sharding machinery at all)."""
    return mesh_from_config(config.mesh) if jax.device_count() > 1 else None


def sharded_scope(mesh: Optional[jax.sharding.Mesh]) -> Any:
    """The logical-axis-rules scope of `mesh` (nothing on a single device)."""
    return sharded_call(mesh, DEFAULT_RULES) if mesh is not None else contextlib.nullcontext()


def show_progress(config: Any) -> bool:
    return is_main_process() and bool(config.log.progress)


def log_load_stats(run_data: RunData) -> None:
    """What reading each records file dropped or fixed: a warning when anything was, else info."""
    for split, st in run_data.load_stats.items():
        if st.num_dropped or sum(st.fixed.values()):
            log.warning("%s records: %s (bad lines are listed above as file:line)", split, st.as_dict())
        else:
            log.info("%s records: %s", split, st.as_dict())


@dataclasses.dataclass(frozen=True)
class OpenRun:
    """A job's devices, models and data (see `open_run`)."""

    mesh: Optional[jax.sharding.Mesh]
    model: Any
    teacher: Any
    run_data: RunData


@contextlib.contextmanager
def open_run(config: Any, workdir: str, *, policy: Any = None, save_config: bool = True) -> Iterator[OpenRun]:
    """Checks `config` (`run.config_checks.require_complete`), makes `workdir` (with run_config.json unless
    `save_config` is False), builds the policy from `policy` (a model section; default `config.model`)
    and, when the algorithm uses one, the teacher, reads the data, and holds the mesh's scope."""
    require_complete(config)
    os.makedirs(workdir, exist_ok=True)
    if save_config:
        save_json(workdir, "run_config.json", config.to_dict())
    mesh = run_mesh(config)
    with sharded_scope(mesh):
        model = build_model(config.model if policy is None else policy, seed=config.seed, mesh=mesh)
        teacher = None
        if uses_teacher(config):
            teacher = build_model(config.teacher, seed=config.seed + 1, mesh=mesh, name="teacher")
        run_data = build_run_data(model.cfg, config.data, workdir, progress=show_progress(config))
        log_load_stats(run_data)
        yield OpenRun(mesh=mesh, model=model, teacher=teacher, run_data=run_data)
