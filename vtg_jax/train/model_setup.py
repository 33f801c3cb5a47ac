"""Models of a run from config sections: the policy (`config.model`) and frozen models (`config.teacher`).

A section names its model one of three ways:
* `init_from` = a Hugging Face directory (config.json + safetensors): `from_pretrained`, each tensor
  placed straight onto its sharding;
* `init_from` = one of our run workdirs: the latest checkpoint's parameters, on the architecture that
  run trained (read from the checkpoint's saved config), or its exported `hf/` directory when the
  run finished; `<workdir>/checkpoints/<step>` picks an earlier kept step (e.g. the demo's student is
  step 1,000 of its teacher's run);
* `preset` (random init from `seed`) — the embedded default's tiny models.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from vtg_jax.models.qwen_vl import QwenVL
from vtg_jax.models.qwen_vl.config import QwenVLConfig
from vtg_jax.models.qwen_vl.presets import get_preset
from vtg_jax.parallel.rules import DEFAULT_RULES, shard_model

CHECKPOINT_DIR = "checkpoints"
HF_EXPORT_DIR = "hf"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name: str) -> Any:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}") from None


def _get(section: Any, key: str, default: Any) -> Any:
    return section[key] if key in section else default


def is_hf_dir(path: str) -> bool:
    """config.json next to safetensors weights (a run workdir has neither)."""
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        f.endswith(".safetensors") or f.endswith(".safetensors.index.json") for f in os.listdir(path))


def is_run_dir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, CHECKPOINT_DIR))


def run_checkpoint_step(path: str) -> Optional[tuple[str, int]]:
    """(run workdir, step) when `path` is `<run workdir>/checkpoints/<step>`, else None."""
    parent, step = os.path.split(os.path.normpath(path))
    run, name = os.path.split(parent)
    return (run, int(step)) if step.isdigit() and name == CHECKPOINT_DIR and is_run_dir(run) else None


def _from_run_checkpoint(path: str, *, dtype: Any, mesh: Any, rules: Any, step: Optional[int] = None) -> QwenVL:
    """The parameters of checkpoint `step` (default: the latest) of run `path`, on the architecture that
    run trained (restored through the same TrainState target as a resume, then merged back into a module)."""
    from vtg_jax.train.checkpoint import Checkpointer
    from vtg_jax.train.optim import make_optimizer
    from vtg_jax.train.run_config import optim_config
    from vtg_jax.train.state import init_train_state, merge_model

    with Checkpointer(os.path.join(path, CHECKPOINT_DIR), save_every_n_steps=1, keep_last=None) as ckpt:
        if step is None:
            step = ckpt.latest_step()
            if step is None:
                raise FileNotFoundError(f"run directory {path!r} has no checkpoint yet")
        elif step not in ckpt.all_steps():
            raise FileNotFoundError(f"run directory {path!r} has no checkpoint {step}: kept {ckpt.all_steps()}")
        saved = ckpt.read_metadata(step)["config"]
        model = build_model(saved["model"], seed=int(saved.get("seed", 0)), mesh=mesh, rules=rules, dtype=dtype)
        tx, _ = make_optimizer(optim_config(saved))
        state, graphdef, frozen = init_train_state(model, tx, freeze_vision=bool(saved["model"]["freeze_vision"]))
        restored = restore_train_state(ckpt, state, step)[0]
        return merge_model(graphdef, restored.params, frozen)


def checkpoint_tree(state: Any, rng: Any) -> dict:
    """What a run checkpoints: the TrainState and the run's PRNG key data (uint32)."""
    return {"state": state, "rng": rng}


def require_finite_state(tree: Any) -> None:
    """Raises ValueError naming the leaves when a restored TrainState's parameters or optimizer state
    hold NaN / inf: training on from them would only write more (the checkpoint is then treated as
    corrupt and the previous step restored)."""
    from vtg_jax.train.integrity import nonfinite_leaves

    state = tree["state"]
    bad = nonfinite_leaves({"params": state.params, "opt_state": state.opt_state})
    if bad:
        shown = ", ".join(f"{k} ({n})" for k, n in list(bad.items())[:5])
        raise ValueError(f"non-finite values in the restored training state: {sum(bad.values())} in "
                         f"{len(bad)} arrays: {shown}")


def restore_train_state(ckpt: Any, state: Any, step: Optional[int] = None) -> Optional[tuple]:
    """(state, rng, loader_state, step) restored onto `state`'s shardings, or None on a fresh start.
    Only a step whose arrays verify and whose parameters and optimizer state are finite is restored
    (see `Checkpointer.restore`)."""
    from vtg_jax.train.checkpoint import abstract_like

    tree = checkpoint_tree(state, jnp.zeros((2,), jnp.uint32))
    out = ckpt.restore(step, target_abstract_state=abstract_like(tree), validate=require_finite_state)
    if out is None:
        return None
    restored, loader_state, _, at = out
    return restored["state"], restored["rng"], loader_state, at


def build_model(section: Any, *, seed: int, mesh: Optional[jax.sharding.Mesh] = None, rules: Any = None,
                dtype: Any = None) -> QwenVL:
    """The model a config section describes (see the module docstring), placed on `mesh` if given."""
    from vtg_jax.models.qwen_vl.convert import from_pretrained

    rules = rules if rules is not None else DEFAULT_RULES
    act = dtype if dtype is not None else dtype_of(_get(section, "dtype", "float32"))
    param = dtype_of(_get(section, "param_dtype", "float32")) if dtype is None else act
    remat = _get(section, "remat", "none")
    impl = _get(section, "attention_impl", "auto")
    rule = _get(section, "rope_index_rule", "original")
    path = _get(section, "init_from", "")
    if path:
        run_step = run_checkpoint_step(path)  # checked first: a step not kept names the kept ones
        if run_step is None and not os.path.isdir(path):
            raise FileNotFoundError(f"init_from {path!r} is not a directory")
        if run_step is not None:
            model = _from_run_checkpoint(run_step[0], dtype=act, mesh=mesh, rules=rules, step=run_step[1])
        elif is_hf_dir(path):
            model = from_pretrained(path, dtype=act, mesh=mesh, rules=rules, rope_index_rule=rule,
                                    param_dtype=param, remat=remat)
        elif is_hf_dir(os.path.join(path, HF_EXPORT_DIR)) and not is_run_dir(path):
            model = from_pretrained(os.path.join(path, HF_EXPORT_DIR), dtype=act, mesh=mesh, rules=rules,
                                    rope_index_rule=rule, param_dtype=param, remat=remat)
        elif is_run_dir(path):
            model = _from_run_checkpoint(path, dtype=act, mesh=mesh, rules=rules)
        else:
            raise FileNotFoundError(f"init_from {path!r} is neither an HF directory (config.json), a run "
                                    f"workdir (with {CHECKPOINT_DIR}/) nor one of its {CHECKPOINT_DIR}/<step>")
        model.set_attention_impl(impl)
        return model
    name = _get(section, "preset", "")
    if not name:
        raise ValueError("a model section needs `preset` or `init_from`")
    cfg: QwenVLConfig = dataclasses.replace(get_preset(name), rope_index_rule=rule)
    model = QwenVL(cfg, dtype=act, param_dtype=param, remat=remat, attention_impl=impl, rngs=nnx.Rngs(seed))
    if mesh is not None:
        shard_model(model, mesh, rules)
    return model
