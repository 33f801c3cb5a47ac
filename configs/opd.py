"""python -m vtg_jax.main --config=configs/opd.py --workdir=/tmp/vtg_opd

Video-OPD (§3.1, eqs. 5-6; `vtg_jax.train.opd`): one on-policy rollout per prompt, the frozen teacher's
log-probs of the student's tokens as a dense per-token reward, importance-weighted loss.

Args (`--config=configs/opd.py:<arg>`):
  ""        the README demo: the shipped tiny student and teacher on the synthetic benchmark (CPU)
  "paper"   Video-OPD §4.1: Qwen3-VL-8B student, Qwen3-VL-32B (GRPO-trained) teacher, lr 1e-6,
            batch 32, one epoch (--init_from=<student HF dir> --config.teacher.init_from=<teacher HF dir>
            --config.data.train=... --config.data.frame_store=... --config.data.tokenizer=<HF dir>)
"""
from vtg_jax.run.config import distillation_scale, run_config

# reward: reported only (OPD's reward is the teacher's log-prob ratio)
VIDEO_OPD = {"rollout.num_samples": 1, "reward": "iou_only"}


def get_config(arg: str = ""):
    return run_config("opd", distillation_scale("opd", arg), VIDEO_OPD)
