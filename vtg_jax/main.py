"""Entry point: `python -m vtg_jax.main --config=configs/<recipe>.py --workdir=...`.

The recipe configs and the training loop behind `--config` are not built yet. Until they land, this
entry point says what exists and what is still to come, and runs a smoke check of the math library and
the tiny Qwen-VL models on this machine.
"""
from absl import app

_STATUS = """vtg_jax {version}
Built:
  vtg_jax.losses           log-probs/entropy, aggregation, clipped PG (GRPO/GSPO/dual-clip), KL k1/k2/k3,
                           exact and token-aware subset KL, on-policy distillation (OPD, OP-RKD, OP-FKD, GKD)
  vtg_jax.rl               group advantages, TempSamp-R1 mixed-policy shaping
  vtg_jax.rewards          answer parsing, IoU / tIoU / CenDist, format and highlight rewards
  vtg_jax.eval             R@m, mIoU, QVHighlights mAP / HIT@1
  vtg_jax.curriculum       TVDF (TRPV, DBTP; DSUS/Top-k/BBDS/GWDS), Time-R1 Gaussian sampling, TVG-R1 filters
  vtg_jax.models.qwen_vl   Qwen2.5-VL / Qwen3-VL in Flax NNX, HF checkpoint import/export
  vtg_jax.data             synthetic benchmark, decord extraction, frame store, adapters, processor, loader
  vtg_jax.sampling         prefill-once KV-cache sampler with G samples per prompt, scoring
  vtg_jax.train            SFT / GRPO / OPD / OP-RKD / OP-FKD / TempSamp steps, checkpoints, logging
  vtg_jax.parallel, launch mesh, multi-host, TPU / multi-host / SLURM launchers
Not built yet: recipe configs (configs/), the training loop behind --config, evaluation loop, demo.
"""


def main(argv):
    del argv
    import vtg_jax
    from vtg_jax import smoke

    print(_STATUS.format(version=vtg_jax.__version__))
    smoke.run()


if __name__ == "__main__":
    app.run(main)
