"""A paper's recipe as stages: `python -m vtg_jax.main --config=configs/pipeline.py:<name> --workdir=W`.

A pipeline config holds `order` (stage names) and `stages.<name>`, each a complete run config (select,
sft, grpo, opd, tempsamp, eval, ...) run in `W/<name>`. Stages are chained by these rules, applied to
fields left empty (a field already set is kept, so any link can be overridden on the command line):

  * `model.init_from` ""      -> the current policy: the last finished training stage's workdir, or the
                                 pipeline's `init_from` before any (`--init_from` sets it);
  * `data.train_subset` ""    -> (training stages) the `selected.jsonl` of a selection stage run since
                                 the previous training stage, if any;
  * `data.cache_dir` ""       -> the pipeline's `cache_dir` or `W/data`: the benchmark is made once;
  * `eval.checkpoint` ""      -> (eval stages) the current policy.

The pipeline's `seed` (when >= 0) replaces every stage's seed (one command per seed of a table row), and
its `teacher.init_from` (when set) every teacher that a stage uses (distillation stages, selection), so
that one flag swaps the teacher of a whole recipe.
A field may also name a stage's output: "@r1_select" (its selected.jsonl), "@tvg_select/rl" (its
rl.jsonl), "@sft" (its workdir); `select.exclude` takes a comma-separated list of those.

Resume: a finished stage (summary.json / selection.json / eval.json present and complete) is not rerun;
an unfinished training stage resumes from its own checkpoints. The pipeline writes `W/pipeline.json`:
each stage's kind, inputs, wall time and results (evaluations, selection stats).
"""
from __future__ import annotations

import os
import time
from typing import Any

from vtg_jax.algorithms import registry
from vtg_jax.io.workdir import load_json, save_json
from vtg_jax.run.config_checks import require_complete
from vtg_jax.run.jobs import job_of


def _stage_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, name)


def resolve_ref(value: str, workdir: str, stages: Any) -> str:
    """"@stage" / "@stage/subset" -> a path in the pipeline's workdir; anything else unchanged."""
    if not value.startswith("@"):
        return value
    name, _, subset = value[1:].partition("/")
    if name not in stages:
        raise ValueError(f"{value!r} names no stage of this pipeline (stages: {list(stages)})")
    stage_dir = _stage_dir(workdir, name)
    if stages[name].algorithm == "select":
        return os.path.join(stage_dir, f"{subset or 'selected'}.jsonl")
    if subset:
        raise ValueError(f"{value!r}: only selection stages have subsets")
    return stage_dir


def _finished(stage: Any, stage_dir: str) -> bool:
    algorithm = registry.get(stage.algorithm)
    if algorithm.trains:
        return bool((load_json(stage_dir, algorithm.done_file) or {}).get("finished"))
    return os.path.exists(os.path.join(stage_dir, algorithm.done_file))


def _link(stage: Any, workdir: str, config: Any, policy: str, pending_subset: str) -> dict:
    """Fills the empty chained fields of `stage` (in place); returns the inputs used."""
    stages = config.stages
    with stage.unlocked():
        if config.seed >= 0:
            stage.seed = config.seed
        if stage.algorithm == "eval":
            stage.eval.checkpoint = resolve_ref(stage.eval.checkpoint or policy, workdir, stages)
        else:
            stage.model.init_from = resolve_ref(stage.model.init_from or policy, workdir, stages)
        if registry.get(stage.algorithm).trains:
            stage.data.train_subset = resolve_ref(stage.data.train_subset or pending_subset, workdir, stages)
        if stage.algorithm == "select":
            stage.select.exclude = ",".join(resolve_ref(v.strip(), workdir, stages)
                                            for v in stage.select.exclude.split(",") if v.strip())
        # every stage that has a teacher: distillation, and selection (TVDF scores with it, TVG-R1 annotates)
        if "teacher" in registry.get(stage.algorithm).sections:
            if config.teacher.init_from:
                stage.teacher.init_from = config.teacher.init_from
            stage.teacher.init_from = resolve_ref(stage.teacher.init_from, workdir, stages)
        stage.data.cache_dir = stage.data.cache_dir or config.cache_dir or os.path.join(workdir, "data")
    return {"init_from": stage.eval.checkpoint if stage.algorithm == "eval" else stage.model.init_from,
            "train_subset": stage.data.train_subset if registry.get(stage.algorithm).trains else None}


def run_pipeline(config: Any, workdir: str) -> dict[str, Any]:
    """Runs the stages of `config` in order (skipping finished ones); returns pipeline.json's content.
    Every stage's missing fields are named before the first stage runs (`run_config.require_complete`)."""
    require_complete(config)
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    unknown = [n for n in config.order if n not in config.stages]
    if unknown:
        raise ValueError(f"order names stages {unknown} that are not in config.stages")
    policy, pending_subset = config.model.init_from, ""
    report: dict[str, Any] = {"name": config.name, "stages": {}}
    for name in config.order:
        stage = config.stages[name]
        stage_dir = _stage_dir(workdir, name)
        inputs = _link(stage, workdir, config, policy, pending_subset)
        t_stage = time.time()
        ran = not _finished(stage, stage_dir)
        if ran:
            print(f"[pipeline {config.name}] stage {name} ({stage.algorithm}) -> {stage_dir}", flush=True)
            job_of(stage).run(stage, stage_dir)
        report["stages"][name] = {"algorithm": stage.algorithm, "inputs": inputs, "ran_now": ran,
                                  "stage_wall_s": round(time.time() - t_stage, 1), **job_of(stage).kept(stage_dir)}
        if stage.algorithm == "select":
            pending_subset = os.path.join(stage_dir, "selected.jsonl")
        elif registry.get(stage.algorithm).trains:
            policy, pending_subset = stage_dir, ""
        save_json(workdir, "pipeline.json", report)  # after every stage: a partial run shows its progress
    report["wall_s"] = round(time.time() - t0, 1)
    save_json(workdir, "pipeline.json", report)
    return report


def pipeline_report(report: dict) -> str:
    """One line per stage: what it did and its headline figure."""
    lines = [f"pipeline {report['name']} ({report.get('wall_s', 0)} s)"]
    for name, st in report["stages"].items():
        if st["algorithm"] == "select":
            what = f"selected {st['selected']} of {st['pool']} ({st['method']})"
        elif st["algorithm"] == "eval":
            what = "  ".join(f"{split} mIoU {v['model'].get('mIoU', float('nan')):.3f}"
                             for split, v in st.items() if isinstance(v, dict) and "model" in v)
        else:
            ev, ev0 = st.get("eval") or {}, st.get("eval_start") or {}
            start = f"{ev0['eval/mIoU']:.3f} -> " if "eval/mIoU" in ev0 else ""  # none: the previous stage's end
            what = (f"{st['steps']} steps  eval mIoU {start}{ev.get('eval/mIoU', float('nan')):.3f}  "
                    f"R@0.5 {ev.get('eval/R@0.5', float('nan')):.3f}")
        lines.append(f"  {name:<16} {st['algorithm']:<8} {what}  ({st['stage_wall_s']} s)")
    return "\n".join(lines)
