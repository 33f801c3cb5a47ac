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
from vtg_jax.run.config import (DEMO, TVG_R1_FRAMES, VIDEO_OPD_TOTAL_PIXELS, paper_scale, run_config,
                                selection)


def get_config(arg: str = ""):
    method, _, scale = (arg or "tvdf").partition(",")
    if scale == "":
        return run_config("select", DEMO, selection(method))
    if scale != "paper":
        raise ValueError(f"unknown select config arg {arg!r}: use '<method>' or '<method>,paper'")
    if method == "tvg_r1":  # the whole pool, annotated
        return run_config("select", paper_scale("qwen2.5-vl-7b", teacher="qwen2.5-vl-7b", template="tvg_r1",
                                                **TVG_R1_FRAMES),
                          selection(method, num=0, batch_size=8))
    # Video-OPD §4.1: 2,500 samples for OPD and GRPO
    return run_config("select", paper_scale("qwen3-vl-8b", teacher="qwen3-vl-32b", template="video_opd",
                                            total_pixels=VIDEO_OPD_TOTAL_PIXELS),
                      selection(method, num=2500, batch_size=8))
