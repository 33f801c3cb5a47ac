"""The tables a run prints at its end (README demo: teacher / student before / student after / baselines)."""
from __future__ import annotations

import os
from typing import Any, Optional

COLUMNS = ("R@0.3", "R@0.5", "R@0.7", "mIoU")


def _row(name: str, m: Optional[dict], prefix: str = "") -> Optional[str]:
    if not m or f"{prefix}mIoU" not in m:
        return None
    cells = " | ".join(f"{float(m[prefix + c]):.3f}" for c in COLUMNS)
    n = m.get(f"{prefix}n")
    return f"| {name} | {cells} | {'' if n is None else int(n)} |"


def metrics_table(rows: list[tuple[str, Optional[dict], str]], baselines: Optional[dict] = None,
                  title: str = "") -> str:
    """Markdown table of (name, metrics, key prefix) rows, then the best video-blind baselines."""
    lines = [f"| {title} | " + " | ".join(COLUMNS) + " | n |", "|---|" + "---|" * (len(COLUMNS) + 1)]
    lines += [r for r in (_row(*row) for row in rows) if r]
    if baselines:
        best = sorted(baselines.items(), key=lambda kv: -kv[1]["mIoU"])[:3]
        for name, m in best:
            lines.append(f"| baseline: {name} | " + " | ".join(f"{m[c]:.3f}" for c in COLUMNS) + " | |")
    return "\n".join(lines)


def run_report(summary: dict[str, Any], config: Any, workdir: str) -> str:
    """What `python -m vtg_jax.main --config=...` prints at the end of a training run."""
    algo = summary["algorithm"]
    policy = "student" if summary.get("eval_teacher") else "policy"
    split = config.eval.splits[0] if config.eval.splits else "?"
    rows = [("teacher", summary.get("eval_teacher"), "eval/"),
            (f"{policy} before", summary.get("eval_start"), "eval/"),
            (f"{policy} after {summary['steps']} {algo} steps", summary.get("eval"), "eval/")]
    out = [f"{algo}: {summary['steps']} steps in {summary['wall_s']:.0f} s "
           f"({'finished' if summary['finished'] else 'stopped early; rerun the same command to resume'}); "
           f"skipped updates {summary['skipped_updates']}, skipped examples {summary['data'].get('data/skipped', 0)}",
           metrics_table(rows, summary.get("baselines"), title=f"greedy on {split}")]
    if summary.get("plots"):
        out.append(f"plots: {os.path.join(workdir, 'plots')}  metrics: {os.path.join(workdir, 'metrics.jsonl')}")
    if summary.get("hf_export"):
        out.append(f"final policy (Hugging Face format): {summary['hf_export']}")
    return "\n".join(out)


def eval_table(results: dict[str, Any]) -> str:
    """What the eval recipe prints: one table per split."""
    out = [f"checkpoint: {results['checkpoint']}"]
    for split, r in results.items():
        if isinstance(r, dict) and "model" in r:
            out.append(metrics_table([("model", r["model"], "")], r["baselines"], title=f"greedy on {split}"))
            out.append(f"parse failures: {int(r['model'].get('parse_failures', 0))}, "
                       f"skipped videos: {int(r['model'].get('skipped', 0))}")
    if results.get("hf_export"):
        out.append(f"model (Hugging Face format): {results['hf_export']}")
    return "\n".join(out)
