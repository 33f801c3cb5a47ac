"""python -m vtg_jax.main --config=configs/select.py --workdir=/tmp/vtg_select

Model-scored data selection (`vtg_jax.run.select`); writes selected.jsonl for `--config.data.train_subset`
of a later run (or a stage of configs/pipeline.py, which chains them).

Args (`--config=configs/select.py:<method>[,paper]`):
  "" / "tvdf"   Video-OPD TVDF (§3.2, App. B): TRPV on the teacher's top-k IoU, DBTP by aggregated reverse KL,
                Top-k (`select.trpv_threshold`, `select.dbtp` kl | iou_gap | random, `select.strategy`
                topk | dsus | bbds | gwds)
  "time_r1"     Time-R1 Gaussian difficulty sampling over the policy's IoU (Video-OPD App. D.1)
  "tvg_r1"      TVG-R1 §3.1: the annotator's (teacher's) answers split into coldstart (IoU > 0.8, answer
                kept as the SFT target) and rl (IoU >= 0.4, not in coldstart)
Without ",paper" on the shipped tiny student and teacher and the synthetic benchmark; with it at the
papers' scale: 2,500 records (Video-OPD §4.1) scored by Qwen3-VL-8B / -32B (tvdf, time_r1) or the whole pool
annotated by your teacher checkpoint with the TVG-R1 prompt (tvg_r1; TVG-R1 used Gemini-2.5-Pro), on
your data (--init_from, --config.teacher.init_from, --config.data.train, .frame_store, .tokenizer).
"""
from vtg_jax.run.config import (VIDEO_OPD_TOTAL_PIXELS, base_config, demo_models, paper_scale,
                                      selection_setting, tvg_r1_sampling)


def get_config(arg: str = ""):
    method, _, scale = (arg or "tvdf").partition(",")
    if scale not in ("", "paper"):
        raise ValueError(f"unknown select config arg {arg!r}: use '<method>' or '<method>,paper'")
    c = base_config("select")
    if scale == "paper":
        if method == "tvg_r1":
            paper_scale(c, preset="qwen2.5-vl-7b", teacher="qwen2.5-vl-7b")
            c.data.template = "tvg_r1"
            tvg_r1_sampling(c)
        else:
            paper_scale(c, preset="qwen3-vl-8b", teacher="qwen3-vl-32b")
            c.data.template = "video_opd"
            c.data.total_pixels = VIDEO_OPD_TOTAL_PIXELS
    else:
        demo_models(c)
    selection_setting(c, method)
    if scale == "paper":
        c.select.num = 0 if method == "tvg_r1" else 2500  # Video-OPD §4.1: 2,500 samples for OPD and GRPO
        c.select.batch_size = 8
    c.lock()
    return c
