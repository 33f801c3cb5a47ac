"""Training system: train state, optimizer, host batch packing, one step factory per objective.

    from vtg_jax.train import OptimConfig, make_optimizer, init_train_state, prepare_batch, make_sft_step

The names are imported on first use (PEP 562): the run configs (`vtg_jax.run.config`) and their
checks load without jax, so that a CLI run with an incomplete config stops in a fraction of a second.
"""
import importlib

_WHERE = {"prepare_batch": "batch", "OptimConfig": "optim", "make_optimizer": "optim",
          "accumulate_grads": "update", "answer_nll_sum": "sft", "guarded_update": "update", "make_sft_step": "sft",
          "RLBatch": "rl_batch", "TrainState": "state", "init_train_state": "state", "merge_model": "state",
          "num_params": "state", "split_model": "state", "state_shardings": "state"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
