"""python -m vtg_jax.main --config=configs/longvtg.py --workdir=/tmp/vtg_longvtg

LongVTG-R1 (§3.2-3.3): GRPO with the token-aware KL (eq. 4-5: beta_text = 0.04 on text tokens,
beta_time = 0 on timestamp tokens) and the CenDist + IoU reward (eq. 7, alpha = 0.8) with the
<timestamp> format term.

Args (`--config=configs/longvtg.py:<arg>`):
  ""        tiny CPU preset on the synthetic benchmark from the shipped demo student
  "paper"   LongVTG-R1 §4.1: Qwen2.5-VL-7B, G = 8, lr 1e-6, batch 32, the <timestamp> prompt. Its 20-minute
            videos (~106k-token prompts) fit a v5p-128 with context parallelism (README "Scale"):
            --config.mesh.sequence=2 --config.mesh.tensor=4 --config.micro_batches=4
            --config.grpo.shared_prefix=True
"""
from vtg_jax.run.config import TINY_RL, paper_scale, run_config

LONGVTG_R1 = {"reward": "longvtg_r1", "grpo.kl": "token_aware", "grpo.beta_text": 0.04, "grpo.beta_time": 0.0,
              "data.answer_format": "<timestamp>{start:.1f} to {end:.1f}</timestamp>"}


def get_config(arg: str = ""):
    if arg == "":
        return run_config("grpo", TINY_RL, LONGVTG_R1)
    if arg == "paper":  # a plan for a 20-minute video (§4's long-video benchmarks; Fig. 4's example)
        return run_config("grpo", paper_scale("qwen2.5-vl-7b", template="longvtg_r1", video_seconds=1200.0),
                          LONGVTG_R1, {"steps": 100, "rollout.num_samples": 8})
    raise ValueError(f"unknown longvtg config arg {arg!r}: use '' or 'paper'")
