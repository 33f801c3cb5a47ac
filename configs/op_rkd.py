"""python -m vtg_jax.main --config=configs/op_rkd.py --workdir=/tmp/vtg_op_rkd

OP-RKD (Video-OPD App. C.1, eqs. 23-25): the OPD loss on ground-truth answers instead of rollouts
(pi_old = the current policy), the teacher's log-probs of the ground-truth tokens as reward.

Args: "" (the demo's tiny student and teacher, CPU) | "paper" (Video-OPD scale, as configs/opd.py:paper).
"""
from vtg_jax.run.config import distillation_scale, run_config


def get_config(arg: str = ""):
    return run_config("op_rkd", distillation_scale("op_rkd", arg),
                      {"opd.aggregation": "seq-mean-token-sum"})  # eq. 25: E_tau sum_t
