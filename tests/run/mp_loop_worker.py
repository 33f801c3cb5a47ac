"""Worker for test_loop_multiprocess.py (run by vtg_jax.parallel.testing, not collected by pytest): a
few training steps of a recipe through `vtg_jax.run.loop.train` on a 2x2x2 (data, fsdp, tensor) mesh,
in however many processes the harness starts. Env: VTG_TEST_CACHE (pre-built synthetic data),
VTG_TEST_OUT (run directories; one per layout, named by the coordinator port)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from loop_helpers import tiny  # noqa: E402

KEYS = ("loss/total", "train/grad_norm", "pg/ratio_mean", "rl/reverse_kl", "reward/total", "rl/kl_ref",
        "rl/finish_eos", "reward/parse_fail_count")
EVAL_KEYS = ("eval/mIoU", "eval/R@0.3", "eval/n", "eval/skipped", "eval/parse_failures")


def _run(name: str, **overrides) -> dict:
    from vtg_jax.run.loop import train

    port = os.environ["JAX_COORDINATOR_ADDRESS"].rsplit(":", 1)[1]
    workdir = os.path.join(os.environ["VTG_TEST_OUT"], f"{name}_{port}")
    settings = dict(steps=2, batch_size=8, mesh__data=2, mesh__fsdp=2, mesh__tensor=2, eval__splits=())
    c = tiny(name, os.environ["VTG_TEST_CACHE"], **{**settings, **overrides})
    summary = train(c, workdir)
    assert summary["finished"] and summary["steps"] == 2
    out = {k: summary["last_metrics"][k] for k in KEYS if k in summary["last_metrics"]}
    out.update({k: v for k, v in summary["eval"].items() if k in EVAL_KEYS})
    # Per-host input: this process read its share of the 2 x 8 records (1/2 of them in 2 processes, all
    # in 1), every process together all of them; the share times the process count is 1 in every layout.
    import jax

    read, every = summary["data"]["data/read"], summary["last_metrics"]["data/read_all"]
    assert read * jax.process_count() == every == 2 * 8, (read, every)
    out["data/read_share_x_processes"] = read * jax.process_count() / (2 * 8)
    out["data/batch_crc"] = summary["last_metrics"]["data/batch_crc"]
    return out


def opd_steps() -> dict:
    return _run("opd", optim__lr=1e-2)


def tempsamp_steps() -> dict:
    # G - 1 samples + the ground truth (answers of different lengths on each process), a KL to the reference
    return _run("tempsamp", optim__lr=1e-2, grpo__kl="k3", grpo__beta=0.04)


def tempsamp_cp_steps() -> dict:
    # context parallelism: fsdp 2 x sequence 2 x tensor 2 (one batch shard per process), ground-truth rows
    return _run("tempsamp", optim__lr=1e-2, grpo__kl="k3", grpo__beta=0.04, mesh__data=1, mesh__fsdp=2,
                mesh__sequence=2)


def sft_steps() -> dict:
    """SFT, then the final evaluation of 8 val records in batches of 4: per host, each process prepares
    (decodes) the records p, p + n, ... of the split, counted here at `eval.loop.prompt_batches`."""
    import jax

    import vtg_jax.eval.loop as eval_loop

    prepared = []
    every_record = eval_loop.prompt_batches

    def counting(run_data, split, records, *args, **kwargs):
        prepared.append(len(records))
        return every_record(run_data, split, records, *args, **kwargs)

    eval_loop.prompt_batches = counting
    # fsdp 2 x tensor 4: one batch shard (one vision shard) per process, whose packed share keeps its shard
    # axis; every parameter spans the hosts, so the final HF export gathers each tensor in a collective every
    # process must join (it hung when process 0 exported alone)
    out = _run("sft", optim__lr=1e-2, eval__splits=("val",), eval__num=8, eval__batch_size=4, mesh__data=1,
               mesh__fsdp=2, mesh__tensor=4)
    assert len(prepared) == 1, prepared
    out["eval/prepared_share_x_processes"] = prepared[0] * jax.process_count() / 8
    return out
