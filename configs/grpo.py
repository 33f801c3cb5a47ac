"""python -m vtg_jax.main --config=configs/grpo.py --workdir=/tmp/vtg_grpo

GRPO (`vtg_jax.train.grpo`): G rollouts per prompt, group-normalised rewards, clipped policy gradient,
optional KL to the frozen initial policy.

Args (`--config=configs/grpo.py:<arg>`):
  ""          tiny CPU preset on the synthetic benchmark, IoU reward, G = 4, no KL from the shipped
              demo student, vtg_jax/assets/synthetic_student)
  "video_opd" Video-OPD's GRPO baseline (§4.1, App. D.1): Qwen3-VL-8B, lr 1e-6, batch 32, 8 rollouts, IoU,
              2 fps, <= 768 frames, <= 8,192 video tokens
  "tvg_r1"    TVG-R1 (§4.1): Qwen2.5-VL-7B, beta 0, reward 0.9 tIoU + 0.1 format, 64 frames, 600 steps
  "time_r1"   Time-R1-style: Qwen2.5-VL-7B, tIoU + <think>/<answer> format reward, k3 KL beta 0.04, 2 fps,
              total_pixels 3584*28*28
"""
from vtg_jax.run.config import (TIME_R1_PLAN_SECONDS, TIME_R1_TOTAL_PIXELS, VIDEO_OPD_PLAN_SECONDS,
                                      VIDEO_OPD_TOTAL_PIXELS, base_config, paper_scale, tiny_rl, tvg_r1_sampling)


def get_config(arg: str = ""):
    c = base_config("grpo")
    tiny_rl(c)
    if arg == "video_opd":
        paper_scale(c, preset="qwen3-vl-8b")
        c.data.template = "video_opd"
        c.data.total_pixels = VIDEO_OPD_TOTAL_PIXELS
        c.plan.video_seconds = VIDEO_OPD_PLAN_SECONDS
    elif arg == "tvg_r1":
        paper_scale(c, preset="qwen2.5-vl-7b")
        c.reward = "tvg_r1"
        c.data.template = "tvg_r1"
        tvg_r1_sampling(c)
        c.rollout.max_new_tokens = 2048  # TVG-R1 §4.1: maximum response length
        c.steps = 600
    elif arg == "time_r1":
        paper_scale(c, preset="qwen2.5-vl-7b")
        c.reward = "time_r1"
        c.data.template = "tempsamp_r1_cot"
        c.grpo.kl = "k3"
        c.grpo.beta = 0.04
        c.data.total_pixels = TIME_R1_TOTAL_PIXELS  # and 2 fps (paper_scale)
        c.plan.video_seconds = TIME_R1_PLAN_SECONDS
    elif arg:
        raise ValueError(f"unknown grpo config arg {arg!r}: use '', 'video_opd', 'tvg_r1' or 'time_r1'")
    if arg:
        c.rollout.num_samples = 8
        c.eval.every = 0
    c.lock()
    return c
