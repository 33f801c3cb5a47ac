"""Evaluation inside a run (every `eval.every` steps) and the eval recipe (`configs/eval.py`)."""
from __future__ import annotations

import os
from typing import Any, Optional

from absl import logging

from vtg_jax.data.frame_store import FrameStore
from vtg_jax.data.run_data import RunData
from vtg_jax.eval.baselines import trivial_baselines
from vtg_jax.eval.loop import evaluate
from vtg_jax.io.checkpoint import export_hf
from vtg_jax.io.predictions_page import read_predictions, write_predictions_page
from vtg_jax.io.workdir import save_json
from vtg_jax.parallel.distributed import is_main_process
from vtg_jax.run.model_setup import HF_EXPORT_DIR
from vtg_jax.run.preamble import open_run


def run_evaluations(model: Any, run_data: RunData, config: Any, workdir: str, step: int, mesh: Any,
                    tag: str = "") -> dict[str, float]:
    """Greedy evaluation on every configured split; the first split's figures are `eval/<metric>`,
    the others `eval/<split>/<metric>`. Predictions go to predictions/<split>_step<step>.jsonl (and .html)."""
    out: dict[str, float] = {}
    for k, split in enumerate(config.eval.splits):
        if not run_data.splits.get(split):
            continue
        m = evaluate_split(model, run_data, config, split, workdir, f"{tag}{split}_step{step}", mesh, {"step": step})
        prefix = "eval/" if k == 0 else f"eval/{split}/"
        out.update({prefix + key: float(v) for key, v in m.items() if isinstance(v, (int, float))})
    return out


def evaluate_split(model: Any, run_data: RunData, config: Any, split: str, workdir: str, name: str, mesh: Any,
                    extra: Optional[dict] = None) -> dict[str, float]:
    """`eval.loop.evaluate` with the config's eval settings; predictions to predictions/<name>.jsonl and
    their page (`io.predictions_page`) to predictions/<name>.html."""
    path = os.path.join(workdir, "predictions", f"{name}.jsonl") if is_main_process() else None
    metrics = evaluate(model, run_data, split, batch_size=config.eval.batch_size, num=config.eval.num,
                       max_new_tokens=config.eval.max_new_tokens, out_path=path, mesh=mesh, extra=extra)
    if path:
        write_page(path, metrics, run_data.store_path, title=f"Predictions: {name}",
                   subtitle=f"split {split} · {workdir}")
    return metrics


def write_page(jsonl_path: str, metrics: dict, store_path: str, title: str, subtitle: str) -> Optional[str]:
    """The predictions page next to `jsonl_path` (same name, .html), or None: the page is a view of the
    jsonl, so failing to write it is logged and the run goes on."""
    page = os.path.splitext(jsonl_path)[0] + ".html"
    try:
        return write_predictions_page(page, read_predictions(jsonl_path), metrics=metrics, title=title,
                                      subtitle=subtitle, store=FrameStore(store_path))
    except Exception as e:  # noqa: BLE001 (whatever goes wrong, an evaluation never fails on its page)
        logging.warning("predictions page %s not written: %s: %s", page, type(e).__name__, e)
        return None


def split_baselines(run_data: RunData, config: Any, split: str) -> dict:
    """Video-blind baselines (`eval.baselines.trivial_baselines`) of the records an eval of `split` scores."""
    recs = run_data.splits[split]
    num = config.eval.num  # None: the whole split
    return trivial_baselines(recs if num is None else recs[:num], run_data.splits["train"] or None)


def baselines(run_data: RunData, config: Any) -> Optional[dict]:
    """The baselines of the first configured split that has records (the one reported as `eval/`)."""
    for split in config.eval.splits:
        if run_data.splits.get(split):
            return split_baselines(run_data, config, split)
    return None


def evaluate_checkpoint(config: Any, workdir: str) -> dict[str, Any]:
    """The eval recipe: `config.eval.checkpoint` (an HF directory, one of our run workdirs or its
    checkpoints/<step>) on the configured splits, next to the video-blind baselines of the same records;
    writes <workdir>/eval.json and predictions/<split>_eval.jsonl (and its .html page), and with
    `eval.export_hf` the model to <workdir>/hf."""
    section = dict(config.model.to_dict(), init_from=config.eval.checkpoint)
    # open_run names --config.eval.checkpoint, the eval splits' files, ... when missing
    with open_run(config, workdir, policy=section, save_config=False) as run:
        model, run_data = run.model, run.run_data
        results: dict[str, Any] = {"checkpoint": config.eval.checkpoint}
        for split in config.eval.splits:
            if run_data.splits.get(split):
                m = evaluate_split(model, run_data, config, split, workdir, f"{split}_eval", run.mesh)
                results[split] = {"model": m, "baselines": split_baselines(run_data, config, split)}
        if config.eval.export_hf:
            results["hf_export"] = os.path.join(workdir, HF_EXPORT_DIR)
            export_hf(model, results["hf_export"])
    save_json(workdir, "eval.json", results)
    return results
