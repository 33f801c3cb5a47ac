"""Tiny run configs for the loop tests (the recipes in configs/ shrunk to seconds on a CPU)."""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]


def load_recipe(name: str, arg: str = ""):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def tiny(name: str, cache_dir: str, **overrides):
    """configs/<name>.py with the tiny preset, a 16-video synthetic set and short schedules.
    `overrides` use dotted keys with "__" for "." (e.g. optim__lr=1e-2)."""
    return shrink(load_recipe(name), cache_dir, tiny_models=True, **overrides)


def shrink(c, cache_dir: str, *, tiny_models: bool, **overrides):
    """`c` (a recipe config) cut to seconds: tiny data and schedules; random tiny models if asked."""
    with c.unlocked():
        if tiny_models:
            c.model.preset = "qwen2.5-vl-tiny"
            c.model.init_from = ""
            if "teacher" in c:
                c.teacher.preset = "qwen2.5-vl-tiny"
                c.teacher.init_from = ""
        c.data.cache_dir = cache_dir
        c.data.synthetic.preset = "short"
        c.data.synthetic.min_duration, c.data.synthetic.max_duration = 6, 8
        c.data.synthetic.min_span, c.data.synthetic.max_span = 1.0, 2.0
        c.data.synthetic.num_train, c.data.synthetic.num_val, c.data.synthetic.num_test = 16, 8, 4
        c.steps, c.batch_size = 2, 4
        if "rollout" in c:
            c.rollout.max_new_tokens = 12
        c.eval.every, c.eval.num, c.eval.batch_size, c.eval.at_start = None, 4, 4, False
        c.eval.splits = ("val",)
        c.eval.max_new_tokens = 12
        if "checkpoint" in c:
            c.checkpoint.every = 2
        c.log.progress = False
        c.log.plots = False
        for key, value in overrides.items():
            *parents, leaf = key.split("__")
            target = c
            for p in parents:
                target = target[p]
            target[leaf] = value
    return c


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
