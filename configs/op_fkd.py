"""python -m vtg_jax.main --config=configs/op_fkd.py --workdir=/tmp/vtg_op_fkd

OP-FKD (Video-OPD App. C.2, eqs. 27-29; `vtg_jax.train.distill`): forward KL from the teacher's full
next-token distribution to the student's on ground-truth answers (the teacher runs inside the step).

Args: "" (the demo's tiny student and teacher, CPU) | "paper" (Video-OPD scale, as configs/opd.py:paper).
"""
from vtg_jax.run.config import distillation_scale, run_config


def get_config(arg: str = ""):
    return run_config("op_fkd", distillation_scale("op_fkd", arg))
