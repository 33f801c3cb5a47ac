"""Checks of a run config that run before anything touches devices (the CLI, `train`, `evaluate_checkpoint`,
selection, pipelines), without jax: a config missing a checkpoint, the data or the tokenizer stops with
one message naming every missing field as its command-line flag; then a knob of `run.config.OFF` set to 0
(it meant off before; off is None now) and paths that do not exist are named.
"""
from __future__ import annotations

import os
from typing import Any

from vtg_jax.algorithms import registry
from vtg_jax.models.qwen_vl.size import is_real_size
from vtg_jax.run.config import CHECKPOINT_DIR, OFF

POLICY_FLAG = "--init_from (config.model.init_from)"
ZERO_IS_A_VALUE = ("select.trpv_threshold",)  # tau >= 0 keeps every record: what None does


class IncompleteConfig(ValueError):
    """A run config misses fields a run needs (a checkpoint, the data, the tokenizer); the message names
    every one of them as its command-line flag."""


def needs_checkpoint(section: Any) -> bool:
    """True when a model section names no weights to start from: no `init_from`, and no preset or a
    real-size one without `random_init` (a tiny preset random-initialises, as the tests and demo do)."""
    if section.init_from:
        return False
    return not section.preset or (is_real_size(section.preset) and not section.random_init)


def uses_teacher(c: Any) -> bool:
    """Whether run config `c` builds its teacher (`registry.Algorithm.uses_teacher`)."""
    return registry.get(c.algorithm).uses_teacher(c)


def _run_needs(c: Any, where: str, policy_set: bool, teacher_set: bool) -> list[tuple[str, str]]:
    """(flag, the random-init flag that would also do, or "") of each field run config `c` misses;
    `where` is its place in the config ("" or "stages.<name>."), `policy_set` / `teacher_set` say that
    a pipeline fills the policy's checkpoint / the teacher's init_from."""
    out = []
    if c.algorithm == "eval":
        if not (c.eval.checkpoint or policy_set):
            out.append((POLICY_FLAG if where else "--config.eval.checkpoint", ""))
    elif not policy_set and needs_checkpoint(c.model):
        out.append((POLICY_FLAG, f"--config.{where}model.random_init=True" if c.model.preset else ""))
    if uses_teacher(c) and not teacher_set and needs_checkpoint(c.teacher):
        random = f"--config.{where}teacher.random_init=True" if c.teacher.preset else ""
        out.append((f"--config.{where}teacher.init_from", random))
    d = c.data
    if not d.synthetic.enabled:
        splits = ("train",) if c.algorithm in registry.TRAINING + ("select",) else tuple(c.eval.splits)
        out += [(f"--config.{where}data.{k}", "") for k in (*splits, "frame_store") if not d[k]]
        # "" = the tiny tokenizer, made for the tiny presets' 1,024-token vocabulary (tests, the demo's models)
        tiny_policy = bool(c.model.preset) and not is_real_size(c.model.preset)
        if not d.tokenizer and not tiny_policy:
            out.append((f"--config.{where}data.tokenizer", ""))
    return out


def _pipeline_needs(config: Any) -> list[tuple[str, str]]:
    """What the stages of a pipeline miss, leaving out the fields the pipeline fills itself
    (`run.pipeline`: each stage's policy from `--init_from` or the last training stage, every teacher
    from the pipeline's `teacher.init_from`, which is also the one flag named for missing teachers)."""
    out: list[tuple[str, str]] = []
    teachers: dict[str, str] = {}  # stage -> its random-init flag
    policy_set = bool(config.model.init_from)
    for name in config.order:
        stage = config.stages[name]
        own_policy = stage.eval.checkpoint if stage.algorithm == "eval" else stage.model.init_from
        teacher_set = bool(config.teacher.init_from)
        for flag, random in _run_needs(stage, f"stages.{name}.", policy_set or bool(own_policy), teacher_set):
            if flag.endswith(".teacher.init_from"):
                teachers[name] = random
            elif flag not in [f for f, _ in out]:  # the pipeline's --init_from is named once
                out.append((flag, random))
        policy_set = policy_set or stage.algorithm in registry.TRAINING  # its workdir is the next policy
    if teachers:
        random = ", ".join(r for r in teachers.values() if r)
        out.append((f"--config.teacher.init_from (the teacher of stages {', '.join(teachers)})", random))
    return out


def _needs(config: Any) -> list[tuple[str, str]]:
    return _pipeline_needs(config) if config.algorithm == "pipeline" else _run_needs(config, "", False, False)


def missing_fields(config: Any) -> list[str]:
    """The command-line flags of the fields `config` (a run or pipeline config) misses, e.g.
    ["--init_from (config.model.init_from)", "--config.teacher.init_from", "--config.data.train"]."""
    return [flag for flag, _ in _needs(config)]


def zero_offs(config: Any) -> list[str]:
    """The dotted keys of `run.config.OFF` that `config` (a run or pipeline config) sets to 0."""
    if config.algorithm == "pipeline":
        return [f"stages.{name}.{k}" for name in config.order for k in zero_offs(config.stages[name])]
    out = []
    for key in OFF:
        section, leaf = key.split(".")
        if key not in ZERO_IS_A_VALUE and section in config and config[section][leaf] == 0:
            out.append(key)
    return out


def _given_paths(config: Any) -> list[tuple[str, str]]:
    """(config key, path) of the files and directories `config` names for a run to read: checkpoints
    and data, not the ones a pipeline makes itself ("@stage" references, stage workdirs)."""
    if config.algorithm == "pipeline":
        out = [("model.init_from", config.model.init_from), ("teacher.init_from", config.teacher.init_from)]
        for name in config.order:
            out += [(f"stages.{name}.{k}", v) for k, v in _given_paths(config.stages[name])]
        return [(k, v) for k, v in out if v and not v.startswith("@")]
    out = [("eval.checkpoint" if config.algorithm == "eval" else "model.init_from",
            config.eval.checkpoint if config.algorithm == "eval" else config.model.init_from)]
    if uses_teacher(config):
        out.append(("teacher.init_from", config.teacher.init_from))
    d = config.data
    keys = ("train_subset",) if d.synthetic.enabled else ("train", "val", "test", "frame_store", "tokenizer",
                                                         "train_subset")
    out += [(f"data.{k}", d[k]) for k in keys]
    if config.algorithm == "select":
        out += [("select.exclude", p.strip()) for p in config.select.exclude.split(",")]
    return [(k, v) for k, v in out if v and not v.startswith("@")]


def _absent(key: str, path: str) -> bool:
    if key.endswith("data.tokenizer"):
        return not os.path.isfile(os.path.join(path, "tokenizer.json"))
    if os.path.exists(path):
        return False
    # <run workdir>/checkpoints/<step> of a step not kept: build_model names the kept steps
    parent = os.path.dirname(os.path.normpath(path))
    return not (os.path.basename(parent) == CHECKPOINT_DIR and os.path.isdir(parent))


def require_complete(config: Any) -> None:
    """Stops a run before it touches devices or builds a model: raises `IncompleteConfig` naming every
    field `config` misses as its flag, then ValueError naming the knobs set to 0 where off is None, then
    FileNotFoundError naming every path it gives that does not exist (a tokenizer directory without
    tokenizer.json counts as missing)."""
    needs = _needs(config)
    if needs:
        message = (f"the run config misses {len(needs)} field(s); set "
                   + ", ".join(flag for flag, _ in needs))
        random = [r for _, r in needs if r]
        if random:
            message += (". A real-size preset starts from its checkpoint: for random weights instead pass "
                        + ", ".join(random))
        raise IncompleteConfig(message)
    zeros = zero_offs(config)
    if zeros:
        said = ", ".join(f"config.{k} (None: {OFF['.'.join(k.split('.')[-2:])]})" for k in zeros)
        raise ValueError(f"0 no longer means off: set {said} to None (--config.<key>=None) or to a number")
    absent = [f"config.{key} {path!r}" + (" (no tokenizer.json)" if key.endswith("data.tokenizer") else "")
              for key, path in _given_paths(config) if _absent(key, path)]
    if absent:
        raise FileNotFoundError(f"the run config names {len(absent)} path(s) that do not exist: "
                                + ", ".join(absent))
