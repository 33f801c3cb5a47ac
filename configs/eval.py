"""python -m vtg_jax.main --config=configs/eval.py --workdir=/tmp/vtg_eval --config.eval.checkpoint=/tmp/vtg_opd

Greedy evaluation of a checkpoint (an HF directory, or one of our run workdirs: its latest checkpoint)
on the val and test splits: R@0.3/0.5/0.7 and mIoU next to the video-blind baselines, predictions in
<workdir>/predictions/<split>_eval.jsonl, figures in <workdir>/eval.json.

Args: "" (the synthetic benchmark) | "paper" (your data: --config.data.val=... --config.data.frame_store=...
--config.data.tokenizer=<HF dir>; the model's architecture comes from the checkpoint).
"""
from vtg_jax.train.run_config import base_config, paper_scale


def get_config(arg: str = ""):
    c = base_config("eval")
    c.eval.splits = ("val", "test")
    c.eval.num = 0
    if arg == "paper":
        paper_scale(c, preset="")
    elif arg:
        raise ValueError(f"unknown eval config arg {arg!r}: use '' or 'paper'")
    c.lock()
    return c
