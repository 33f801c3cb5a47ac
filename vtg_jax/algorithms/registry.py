"""One record per algorithm: what a run config of it holds, which frozen models it builds, how it trains,
and which job runs it. `main.py`, pipelines, the loop, the config checks and `vtg_jax.plan` all read it.

Adding a training algorithm = one module in `vtg_jax/algorithms/` with `make_step(config, graphdef, tx,
schedule, **options)` and `make_iteration(ctx)` (see `sft.py`), plus one `Algorithm` entry here.

This module imports no jax: the run configs and their checks read it before anything touches devices.
The step and iteration builders are named "module:function" and imported on first use.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

JOBS = ("train", "eval", "select")


def _never(config: Any) -> bool:
    return False


def _always(config: Any) -> bool:
    return True


def _kl_reference(config: Any) -> bool:
    """GRPO / TempSamp-R1 build the frozen initial policy when their loss has a KL term."""
    return config.grpo.kl != "none"


def _selection_teacher(config: Any) -> bool:
    """Selection scores with the teacher for TVDF, and annotates with it for TVG-R1 when one is set."""
    configured = bool(config.teacher.init_from or config.teacher.preset)
    return config.select.method == "tvdf" or (config.select.method == "tvg_r1" and configured)


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """name: `config.algorithm`; job: which runner runs it ("train" the loop, "eval", "select");
    sections: the config sections of its own, besides those of every run config (`run.config.COMMON_SECTIONS`):
    a run config of it has these and no other;
    uses_teacher / uses_reference(config): whether the run builds a frozen teacher / reference model;
    step / iteration: "module:function" of its step factory and iteration builder (training only);
    done_file: the workdir file that marks a finished run in a pipeline (training: summary.json with
    `finished`); programs: the jitted programs of one iteration, as `vtg_jax.plan` compiles them (a
    rollout's prefill and decode, a frozen model's prefill and scoring pass, the update); the evaluation
    decode is planned for every algorithm; per_host_input: its iteration takes each process's own rows of
    the loader batch (`data.host_input`) and builds the step's global arrays from them, instead of the
    whole batch on every process (gathered by the loop)."""

    name: str
    job: str
    sections: tuple[str, ...]
    uses_teacher: Callable[[Any], bool] = _never
    uses_reference: Callable[[Any], bool] = _never
    step: str = ""
    iteration: str = ""
    done_file: str = "summary.json"
    programs: tuple[str, ...] = ()
    per_host_input: bool = False

    @property
    def trains(self) -> bool:
        return self.job == "train"

    def make_step(self, config: Any, graphdef: Any, tx: Any, schedule: Callable, **options: Any) -> Callable:
        """The jitted step of this algorithm, as the loop runs it and as `vtg_jax.plan` compiles it."""
        return _resolve(self.step, self.name)(config, graphdef, tx, schedule, **options)

    def make_iteration(self, ctx: Any) -> Callable:
        """The host-side iteration around the step: `iterate(state, loader batch, step)`."""
        return _resolve(self.iteration, self.name)(ctx)


def _resolve(path: str, name: str) -> Callable:
    if not path:
        raise ValueError(f"algorithm {name!r} does not train: it has no step or iteration")
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


_TRAIN = ("optim", "checkpoint")
_ROLLOUT = ("rollout_prefill", "rollout_decode")
_REFERENCE = ("reference_prefill", "reference_score")
_TEACHER = ("teacher_prefill", "teacher_score")
ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("sft", "train", _TRAIN, step="vtg_jax.algorithms.sft:make_step",
              iteration="vtg_jax.algorithms.sft:make_iteration", programs=("train_step",), per_host_input=True),
    Algorithm("grpo", "train", _TRAIN + ("rollout", "reward", "grpo", "reference"),
              uses_reference=_kl_reference, step="vtg_jax.algorithms.grpo:make_step",
              iteration="vtg_jax.algorithms.grpo:make_iteration", programs=_ROLLOUT + _REFERENCE + ("train_step",),
              per_host_input=True),
    Algorithm("tempsamp", "train", _TRAIN + ("rollout", "reward", "grpo", "tempsamp", "reference"),
              uses_reference=_kl_reference, step="vtg_jax.algorithms.grpo:make_step",
              iteration="vtg_jax.algorithms.grpo:make_tempsamp_iteration",
              programs=_ROLLOUT + _REFERENCE + ("train_step",), per_host_input=True),
    Algorithm("opd", "train", _TRAIN + ("teacher", "rollout", "reward", "opd"), uses_teacher=_always,
              step="vtg_jax.algorithms.opd:make_step", iteration="vtg_jax.algorithms.opd:make_iteration",
              programs=_ROLLOUT + _TEACHER + ("train_step",), per_host_input=True),
    Algorithm("op_rkd", "train", _TRAIN + ("teacher", "rollout", "opd"), uses_teacher=_always,
              step="vtg_jax.algorithms.opd:make_rkd_step", iteration="vtg_jax.algorithms.opd:make_rkd_iteration",
              programs=_TEACHER + ("train_step",), per_host_input=True),
    Algorithm("op_fkd", "train", _TRAIN + ("teacher", "rollout", "fkd"), uses_teacher=_always,
              step="vtg_jax.algorithms.op_fkd:make_step", iteration="vtg_jax.algorithms.op_fkd:make_iteration",
              programs=("train_step",), per_host_input=True),
    Algorithm("eval", "eval", (), done_file="eval.json"),
    Algorithm("select", "select", ("teacher", "rollout", "select"), uses_teacher=_selection_teacher,
              done_file="selection.json"),
)}
TRAINING = tuple(name for name, a in ALGORITHMS.items() if a.trains)


def get(name: str) -> Algorithm:
    """The record of `name`; an unknown name lists the known ones."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {sorted(ALGORITHMS)}") from None
