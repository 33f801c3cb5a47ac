"""python -m vtg_jax.main --config=configs/eval.py --workdir=/tmp/vtg_eval --config.eval.checkpoint=/tmp/vtg_opd

Greedy evaluation of a checkpoint (an HF directory, one of our run workdirs: its latest checkpoint, or
<run workdir>/checkpoints/<step>: that kept step) on the whole val and test splits: R@0.3/0.5/0.7 and mIoU
next to the video-blind baselines, predictions in <workdir>/predictions/<split>_eval.jsonl and a page of them
to open in a browser (<split>_eval.html: timelines, frames, sortable), figures in <workdir>/eval.json;
--config.eval.export_hf=True also writes the model to <workdir>/hf (Hugging Face format: how
vtg_jax/assets/synthetic_student was made from step 1,000 of the teacher's run).

Args: "" (the synthetic benchmark) | "paper" (your data: --config.data.val=... --config.data.frame_store=...
--config.data.tokenizer=<HF dir>; the model's architecture comes from the checkpoint; frames as qwen-vl-utils
samples them at 2 fps, <= 768 frames) | "timelens" (the same with TimeLens' <= 448 frames).
"""
from vtg_jax.run.config import TIMELENS_MAX_FRAMES, paper_scale, run_config

SPLITS = {"eval.splits": ("val", "test")}


def get_config(arg: str = ""):
    if arg == "":
        return run_config("eval", SPLITS, {"eval.num": None})  # the whole splits
    if arg == "paper":
        return run_config("eval", paper_scale(""), SPLITS)
    if arg == "timelens":
        return run_config("eval", paper_scale("", max_frames=TIMELENS_MAX_FRAMES), SPLITS)
    raise ValueError(f"unknown eval config arg {arg!r}: use '', 'paper' or 'timelens'")
