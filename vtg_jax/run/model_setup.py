"""Models of a run from config sections: the policy (`config.model`) and frozen models (`config.teacher`).

A section names its model one of three ways:
* `init_from` = a Hugging Face directory (config.json + safetensors): `from_pretrained`, each tensor
  placed straight onto its sharding;
* `init_from` = one of our run workdirs: the latest checkpoint's parameters, on the architecture that
  run trained (read from the checkpoint's saved config), or its exported `hf/` directory when the
  run finished; `<workdir>/checkpoints/<step>` picks an earlier kept step (e.g. the demo's student is
  step 1,000 of its teacher's run);
* `preset` (random init from `seed`) — the embedded default's tiny models; a real-size preset only with
  `random_init=True`.

Every key build_model uses is read strictly (`model_options`): a section without one is an error naming
it, never a silent default (a teacher once loaded float32 weights where bfloat16 was meant).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from vtg_jax.io.checkpoint import Checkpointer, abstract_like
from vtg_jax.models.qwen_vl import QwenVL
from vtg_jax.models.qwen_vl.config import QwenVLConfig
from vtg_jax.models.qwen_vl.convert import from_pretrained
from vtg_jax.models.qwen_vl.presets import get_preset
from vtg_jax.models.qwen_vl.size import REAL_SIZE_PARAMETERS, parameter_count
from vtg_jax.parallel.rules import DEFAULT_RULES, shard_model
from vtg_jax.run.config import CHECKPOINT_DIR, COMPUTE_KEYS, optim_config
from vtg_jax.run.resume import upgrade_saved_config
from vtg_jax.train.integrity import nonfinite_leaves
from vtg_jax.train.optim import make_optimizer
from vtg_jax.train.state import init_train_state, merge_model

HF_EXPORT_DIR = "hf"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name: str) -> Any:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}") from None


def required_key(section: Any, key: str, name: str) -> Any:
    """`section[key]`; a KeyError naming the section (`name`, e.g. "teacher") and its keys when absent."""
    if key not in section:
        raise KeyError(f"config section {name!r} has no {key!r} (it has: {', '.join(sorted(section.keys()))})")
    return section[key]


def model_options(section: Any, name: str = "model") -> dict[str, Any]:
    """How a section's model computes, as build_model uses it: `dtype` (activations) and `param_dtype`
    (jnp dtypes), `remat`, `attention_impl` and `rope_index_rule` (strings)."""
    return {"dtype": dtype_of(required_key(section, "dtype", name)),
            "param_dtype": dtype_of(required_key(section, "param_dtype", name)),
            **{k: str(required_key(section, k, name)) for k in ("remat", "attention_impl", "rope_index_rule")}}


def reference_section(config: Any) -> dict:
    """The GRPO reference model's section: the initial policy (`model`'s preset, init_from, random_init
    and rope rule: same weights, same seed), computing as `reference` says (dtype, param_dtype, remat,
    attention_impl: frozen, so bfloat16 parameters at paper scale and no remat)."""
    out = {k: required_key(config.model, k, "model") for k in ("preset", "init_from", "random_init", "rope_index_rule")}
    out.update({k: required_key(config.reference, k, "reference") for k in COMPUTE_KEYS})
    return out


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


def _from_run_checkpoint(path: str, section: Any, name: str, *, mesh: Any, rules: Any,
                         step: Optional[int] = None) -> QwenVL:
    """The parameters of checkpoint `step` (default: the latest) of run `path`, on the architecture that
    run trained (restored through the same TrainState target as a resume, then merged back into a module),
    computing as `section` says. They are restored in the dtype the run saved them in (the checksums
    cover it) and then cast to `section`'s param_dtype."""

    with Checkpointer(os.path.join(path, CHECKPOINT_DIR), save_every_n_steps=1, keep_last=None) as ckpt:
        if step is None:
            step = ckpt.latest_step()
            if step is None:
                raise FileNotFoundError(f"run directory {path!r} has no checkpoint yet")
        elif step not in ckpt.all_steps():
            raise FileNotFoundError(f"run directory {path!r} has no checkpoint {step}: kept {ckpt.all_steps()}")
        saved = upgrade_saved_config(ckpt.read_metadata(step)["config"])
        # random_init: the template's values are replaced by the checkpoint's
        template = dict(saved["model"], random_init=True,
                        **{k: required_key(section, k, name) for k in ("dtype", "remat", "attention_impl")})
        model = build_model(template, seed=int(saved["seed"]), mesh=mesh, rules=rules, name=name)
        tx, _ = make_optimizer(optim_config(saved))
        state, graphdef, frozen = init_train_state(model, tx, freeze_vision=bool(saved["model"]["freeze_vision"]))
        restored = restore_train_state(ckpt, state, step)[0]
        model = merge_model(graphdef, restored.params, frozen)
    param_dtype = jnp.dtype(model_options(section, name)["param_dtype"])
    params = nnx.state(model, nnx.Param)
    if any(x.dtype != param_dtype for x in jax.tree.leaves(params)):
        nnx.update(model, jax.tree.map(lambda x: x.astype(param_dtype), params))
    return model


def checkpoint_tree(state: Any, rng: Any) -> dict:
    """What a run checkpoints: the TrainState and the run's PRNG key data (uint32)."""
    return {"state": state, "rng": rng}


def require_finite_state(tree: Any) -> None:
    """Raises ValueError naming the leaves when a restored TrainState's parameters or optimizer state
    hold NaN / inf: training on from them would only write more (the checkpoint is then treated as
    corrupt and the previous step restored)."""
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
    tree = checkpoint_tree(state, jnp.zeros((2,), jnp.uint32))
    out = ckpt.restore(step, target_abstract_state=abstract_like(tree), validate=require_finite_state)
    if out is None:
        return None
    restored, loader_state, _, at = out
    return restored["state"], restored["rng"], loader_state, at


def build_model(section: Any, *, seed: int, mesh: Optional[jax.sharding.Mesh] = None, rules: Any = None,
                name: str = "model") -> QwenVL:
    """The model a config section describes (see the module docstring), placed on `mesh` if given.
    `name` is the section's place in the run config ("model", "teacher"), for the error messages."""
    rules = rules if rules is not None else DEFAULT_RULES
    opts = model_options(section, name)
    act, param, remat, impl = opts["dtype"], opts["param_dtype"], opts["remat"], opts["attention_impl"]
    rule = opts["rope_index_rule"]
    path = required_key(section, "init_from", name)
    if path:
        run_step = run_checkpoint_step(path)  # checked first: a step not kept names the kept ones
        if run_step is None and not os.path.isdir(path):
            raise FileNotFoundError(f"init_from {path!r} is not a directory")
        if run_step is not None:
            model = _from_run_checkpoint(run_step[0], section, name, mesh=mesh, rules=rules, step=run_step[1])
        elif is_hf_dir(path):
            model = from_pretrained(path, dtype=act, mesh=mesh, rules=rules, rope_index_rule=rule,
                                    param_dtype=param, remat=remat)
        elif is_hf_dir(os.path.join(path, HF_EXPORT_DIR)) and not is_run_dir(path):
            model = from_pretrained(os.path.join(path, HF_EXPORT_DIR), dtype=act, mesh=mesh, rules=rules,
                                    rope_index_rule=rule, param_dtype=param, remat=remat)
        elif is_run_dir(path):
            model = _from_run_checkpoint(path, section, name, mesh=mesh, rules=rules)
        else:
            raise FileNotFoundError(f"init_from {path!r} is neither an HF directory (config.json), a run "
                                    f"workdir (with {CHECKPOINT_DIR}/) nor one of its {CHECKPOINT_DIR}/<step>")
        model.set_attention_impl(impl)
        return model
    preset = required_key(section, "preset", name)
    if not preset:
        raise ValueError(f"config section {name!r} needs `preset` or `init_from`")
    cfg: QwenVLConfig = dataclasses.replace(get_preset(preset), rope_index_rule=rule)
    size, random_init = parameter_count(cfg), required_key(section, "random_init", name)
    if size > REAL_SIZE_PARAMETERS and not random_init:
        given = "--init_from" if name == "model" else f"--config.{name}.init_from"
        raise ValueError(f"config section {name!r}: preset {preset!r} is a real-size model ({size / 1e9:.1f}B "
                         f"parameters) and init_from is empty: pass its checkpoint ({given}=<HF directory or "
                         f"run workdir>), or --config.{name}.random_init=True to start it from random weights")
    model = QwenVL(cfg, dtype=act, param_dtype=param, remat=remat, attention_impl=impl, rngs=nnx.Rngs(seed))
    if mesh is not None:
        shard_model(model, mesh, rules)
    return model
