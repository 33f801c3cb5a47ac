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
At paper scale set --config.steps to your data's epoch (100 unless the paper gives a count).
"""
from vtg_jax.run.config import (TIME_R1_PLAN_SECONDS, TIME_R1_TOTAL_PIXELS, TINY_RL, TVG_R1_FRAMES, paper_scale,
                                run_config, video_opd_scale)


def get_config(arg: str = ""):
    if arg == "":
        return run_config("grpo", TINY_RL)
    if arg == "video_opd":
        return run_config("grpo", video_opd_scale(), {"steps": 100, "rollout.num_samples": 8})
    if arg == "tvg_r1":  # TVG-R1 §4.1: maximum response length 2048
        return run_config("grpo", paper_scale("qwen2.5-vl-7b", template="tvg_r1", rollout_tokens=2048,
                                              **TVG_R1_FRAMES),
                          {"steps": 600, "rollout.num_samples": 8, "reward": "tvg_r1"})
    if arg == "time_r1":  # 2 fps (paper_scale) and Time-R1's clip budget
        return run_config("grpo", paper_scale("qwen2.5-vl-7b", template="tempsamp_r1_cot",
                                              total_pixels=TIME_R1_TOTAL_PIXELS, video_seconds=TIME_R1_PLAN_SECONDS),
                          {"steps": 100, "rollout.num_samples": 8, "reward": "time_r1", "grpo.kl": "k3",
                           "grpo.beta": 0.04})
    raise ValueError(f"unknown grpo config arg {arg!r}: use '', 'video_opd', 'tvg_r1' or 'time_r1'")
