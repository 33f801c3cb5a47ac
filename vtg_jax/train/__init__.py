"""Training system: train state, optimizer, host batch packing, one step factory per objective.

    from vtg_jax.train import OptimConfig, make_optimizer, init_train_state, prepare_batch, make_sft_step
"""
from vtg_jax.train.batch import prepare_batch
from vtg_jax.train.optim import OptimConfig, make_optimizer
from vtg_jax.train.sft import accumulate_grads, answer_nll_sum, guarded_update, make_sft_step
from vtg_jax.train.state import TrainState, init_train_state, merge_model, num_params, split_model, state_shardings

__all__ = ["OptimConfig", "TrainState", "accumulate_grads", "answer_nll_sum", "guarded_update", "init_train_state",
           "make_optimizer", "make_sft_step", "merge_model", "num_params", "prepare_batch", "split_model",
           "state_shardings"]
