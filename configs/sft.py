"""python -m vtg_jax.main --config=configs/sft.py --workdir=/tmp/vtg_sft

Supervised fine-tuning: token-mean cross-entropy on the answer tokens (`vtg_jax.train.sft`).

Args (`--config=configs/sft.py:<arg>`):
  ""          the tiny student preset on the synthetic benchmark from random init (CPU, ~12 min)
  "teacher"   the README demo's teacher (vtg_jax/assets/synthetic_teacher): the same, 1,500 steps
  "teacher_large"  the same on the larger tiny preset (hidden 192, 6 layers): Table 3's other teacher
  "student_800"  docs/REPRODUCTION.md's student (vtg_jax/assets/synthetic_student_800): 800 steps on their
              own cosine; it never learned to see blue, cyan or green objects (README "The demo"). The
              demo's student is the "teacher" run's checkpoint at step 1,000 (vtg_jax/assets/README.md)
  "tvg_r1"    TVG-R1 cold start (App. B): Qwen2.5-VL-7B, lr 1e-6, batch 8, one epoch of your data
              (--init_from=<HF dir> --config.data.train=... --config.data.frame_store=...
               --config.data.tokenizer=<HF dir> --config.steps=<records / 8>)
"""
from vtg_jax.run.config import TINY_TEACHER, TVG_R1_FRAMES, paper_scale, run_config


def tiny_sft(steps: int, every: int) -> dict:
    """The tiny presets from random init: `steps` at lr 3e-3 after 50 warmup steps, evaluated and
    checkpointed `every` steps."""
    return {"steps": steps, "optim.lr": 3e-3, "optim.warmup_steps": 50, "eval.every": every,
            "checkpoint.every": every}


def get_config(arg: str = ""):
    if arg in ("", "teacher"):  # the README demo's teacher: 1,500 steps of the tiny preset
        return run_config("sft", tiny_sft(1500, 250))
    if arg == "teacher_large":  # the same recipe on the 3x larger preset (docs/REPRODUCTION.md, Table 3)
        return run_config("sft", tiny_sft(1500, 250), {"model.preset": TINY_TEACHER})
    if arg == "student_800":
        return run_config("sft", tiny_sft(800, 200))
    if arg == "tvg_r1":  # TVG-R1 §4.1: 64 frames of 128x28x28 pixels
        return run_config("sft", paper_scale("qwen2.5-vl-7b", template="tvg_r1", batch_size=8, **TVG_R1_FRAMES),
                          {"steps": 1500, "data.answer_format": "<think></think><time>{start:.2f} to {end:.2f}</time>"})
    raise ValueError(f"unknown sft config arg {arg!r}: use '', 'teacher', 'teacher_large', 'student_800' or 'tvg_r1'")
