"""python -m vtg_jax.main --config=configs/longvtg.py --workdir=/tmp/vtg_longvtg

LongVTG-R1 (§3.2-3.3): GRPO with the token-aware KL (eq. 4-5: beta_text = 0.04 on text tokens,
beta_time = 0 on timestamp tokens) and the CenDist + IoU reward (eq. 7, alpha = 0.8) with the
<timestamp> format term.

Args (`--config=configs/longvtg.py:<arg>`):
  ""        tiny CPU preset on the synthetic benchmark from the shipped demo student
  "paper"   LongVTG-R1 §4.1: Qwen2.5-VL-7B, G = 8, lr 1e-6, batch 32, the <timestamp> prompt
"""
from vtg_jax.run.config import base_config, paper_scale, tiny_rl


def get_config(arg: str = ""):
    c = base_config("grpo")
    c.reward = "longvtg_r1"
    c.grpo.kl = "token_aware"
    c.grpo.beta_text = 0.04
    c.grpo.beta_time = 0.0
    tiny_rl(c)
    c.data.answer_format = "<timestamp>{start:.1f} to {end:.1f}</timestamp>"
    if arg == "paper":
        paper_scale(c, preset="qwen2.5-vl-7b")
        c.data.template = "longvtg_r1"
        c.rollout.num_samples = 8
        c.eval.every = 0
        c.plan.video_seconds = 1200.0  # a 20-minute video (§4's long-video benchmarks; Fig. 4's example)
    elif arg:
        raise ValueError(f"unknown longvtg config arg {arg!r}: use '' or 'paper'")
    c.lock()
    return c
