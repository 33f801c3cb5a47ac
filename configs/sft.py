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
from vtg_jax.run.config import TINY_TEACHER, base_config, paper_scale, tvg_r1_sampling


def get_config(arg: str = ""):
    c = base_config("sft")
    c.steps = 1500
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 50
    c.eval.every = 250
    c.checkpoint.every = 250
    if arg == "teacher":
        pass  # the defaults: 1,500 steps of the tiny preset
    elif arg == "teacher_large":  # the same recipe on the 3x larger preset (docs/REPRODUCTION.md, Table 3)
        c.model.preset = TINY_TEACHER
    elif arg == "student_800":
        c.steps = 800
        c.eval.every = 200
        c.checkpoint.every = 200
    elif arg == "tvg_r1":
        paper_scale(c, preset="qwen2.5-vl-7b")
        c.batch_size = 8
        c.data.template = "tvg_r1"
        c.data.answer_format = "<think></think><time>{start:.2f} to {end:.2f}</time>"
        tvg_r1_sampling(c)  # TVG-R1 §4.1: 64 frames of 128x28x28 pixels
        c.eval.every = 0
    elif arg:
        raise ValueError(f"unknown sft config arg {arg!r}: use '', 'teacher', 'teacher_large', 'student_800' or 'tvg_r1'")
    c.lock()
    return c
