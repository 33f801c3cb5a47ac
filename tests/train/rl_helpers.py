"""Shared tiny setup of the RL step tests (tests/train/test_rl_*.py): prompts, rollouts, batches."""
import jax
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from vtg_jax.data.loader import collate, qwen_vl_buckets
from vtg_jax.data.processor import QwenVLProcessor, build_tiny_tokenizer
from vtg_jax.models.qwen_vl import QwenVL, get_preset
from vtg_jax.sampling import generate
from vtg_jax.train import OptimConfig, init_train_state, make_optimizer
from vtg_jax.rollout.packing import sampler_inputs

CFG = get_preset("qwen2.5-vl-tiny")
BUCKETS = qwen_vl_buckets(tokens=(64, 128), patches=(64,), groups=(4,))
N_NEW = 8


def make_processor(tmp_dir) -> QwenVLProcessor:
    path = build_tiny_tokenizer(str(tmp_dir), CFG.family)
    return QwenVLProcessor(CFG, Tokenizer.from_file(path + "/tokenizer.json"))


def make_prompts(proc, seed, frames=(2, 4, 2, 4), answers=False, size=56):
    """Collated, right-padded batch of prompt-only processor outputs (size x size frames: 56 for
    Qwen2.5-VL, a multiple of 32 for Qwen3-VL); with `answers`, also the ground-truth answer ids and spans."""
    rng = np.random.default_rng(seed)
    exs, gts = [], []
    for i, t in enumerate(frames):
        video = rng.integers(0, 255, (t, size, size, 3), dtype=np.uint8)
        exs.append(proc(video, np.arange(t) / 2.0, f"a red circle appears {i}"))
        if answers:
            full = proc(video, np.arange(t) / 2.0, f"a red circle appears {i}", answer=f"{i}.5 to {i + 1}.0")
            gts.append([int(x) for x in full["input_ids"][full["loss_mask"] == 1]])
    batch = collate(exs, BUCKETS)
    return (batch, gts) if answers else batch


def fresh_model(seed):
    return QwenVL(CFG, rngs=nnx.Rngs(seed))


def init(model, lr=1e-2, total=100):
    tx, schedule = make_optimizer(OptimConfig(lr=lr, warmup_steps=0, total_steps=total, clip_norm=1.0,
                                              weight_decay=0.0))
    state, graphdef, frozen = init_train_state(model, tx, freeze_vision=True)
    return tx, schedule, state, graphdef, frozen


def host_copy(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


def rollout(graphdef, state, frozen, prompts, g, seed, temperature=1.0):
    """Sample g completions per prompt from the CURRENT trained state."""
    model = nnx.merge(graphdef, state.params, frozen)
    return generate(model, sampler_inputs(prompts), num_samples=g, max_new_tokens=N_NEW,
                    temperature=temperature, seed=seed)


def init_sgd(model, lr):
    """Plain SGD state: updates follow the (noisy) expected gradient instead of Adam's per-parameter
    normalisation, which on a sampled-token estimator mostly amplifies the noise."""
    import optax
    tx = optax.sgd(lr)
    state, graphdef, frozen = init_train_state(model, tx, freeze_vision=True)
    return tx, (lambda step: lr), state, graphdef, frozen
