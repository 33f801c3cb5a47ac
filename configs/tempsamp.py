"""python -m vtg_jax.main --config=configs/tempsamp.py --workdir=/tmp/vtg_tempsamp

TempSamp-R1 (§3.2, eqs. 2-4): GRPO over G-1 on-policy samples plus the ground-truth answer as an
off-policy solution (its old log-prob is the current policy's), with one of the advantage strategies
`tempsamp.mode` = shaping (non-linear reward shaping, the paper's default) | anchor | downscale | mixed.

Args (`--config=configs/tempsamp.py:<arg>`):
  ""        tiny CPU preset on the synthetic benchmark from the shipped demo student (G = 4: 3 on-policy + 1
            ground truth)
  "paper"   TempSamp-R1 App. B / §4: Qwen2.5-VL-7B, 3 on-policy + 1 off-policy solutions, lr 1e-6,
            batch 1 x 4 GPUs x 2 accumulation = 8, 2 epochs, max generated length 2048, IoU + format reward
  "paper_charades"  as "paper" with 8 solutions (7 on-policy + 1), as the paper uses for Charades-STA
"""
from vtg_jax.run.config import TIME_R1_PLAN_SECONDS, TIME_R1_TOTAL_PIXELS, TINY_RL, paper_scale, run_config


def get_config(arg: str = ""):
    if arg == "":
        return run_config("tempsamp", TINY_RL)
    if arg in ("paper", "paper_charades"):
        # §4 "Implementation details": 2 fps and "approximately 2.8 million pixels": Time-R1's clip budget,
        # 3584·28·28 = 2,809,856 pixels (a single frame's budget is at most 768·28·28 = 602,112).
        scale = paper_scale("qwen2.5-vl-7b", template="tempsamp_r1", batch_size=8, rollout_tokens=2048,
                            total_pixels=TIME_R1_TOTAL_PIXELS, video_seconds=TIME_R1_PLAN_SECONDS)
        return run_config("tempsamp", scale, {"steps": 100, "micro_batches": 2, "reward": "tempsamp_r1",
                                              "rollout.num_samples": 8 if arg == "paper_charades" else 4})
    raise ValueError(f"unknown tempsamp config arg {arg!r}: use '', 'paper' or 'paper_charades'")
