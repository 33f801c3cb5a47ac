"""The runner of each job an algorithm's registry record names (`algorithms.registry.Algorithm.job`):
what runs it, what it prints, and what a pipeline keeps of a finished one.

    result = job_of(config).run(config, workdir)
    print(job_of(config).report(result, config, workdir))
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from vtg_jax.algorithms import registry
from vtg_jax.io.workdir import load_json
from vtg_jax.run.evaluate import evaluate_checkpoint
from vtg_jax.run.loop import train
from vtg_jax.run.report import eval_table, run_report
from vtg_jax.run.select import run_selection, selection_report


@dataclasses.dataclass(frozen=True)
class Job:
    """run(config, workdir) -> result; report(result, config, workdir) -> text;
    kept(workdir) -> what pipeline.json keeps of a finished run in `workdir`."""

    run: Callable[[Any, str], dict]
    report: Callable[[dict, Any, str], str]
    kept: Callable[[str], dict]


def _kept_training(workdir: str) -> dict:
    s = load_json(workdir, "summary.json")
    return {k: s.get(k) for k in ("eval_start", "eval_teacher", "eval", "steps", "wall_s", "baselines")}


def _kept_selection(workdir: str) -> dict:
    s = load_json(workdir, "selection.json")
    return {k: s[k] for k in ("method", "pool", "selected", "skipped", "mean", "pool_mean", "wall_s", "paths")}


JOBS: dict[str, Job] = {
    "train": Job(run=train, report=run_report, kept=_kept_training),
    "eval": Job(run=evaluate_checkpoint, report=lambda result, config, workdir: eval_table(result),
                kept=lambda workdir: load_json(workdir, "eval.json")),
    "select": Job(run=run_selection, report=lambda result, config, workdir: selection_report(result),
                  kept=_kept_selection),
}


def job_of(config: Any) -> Job:
    """The job that runs `config` (its algorithm's registry record says which)."""
    return JOBS[registry.get(config.algorithm).job]
