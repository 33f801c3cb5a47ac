"""Every jitted program of one iteration of a recipe, built on abstract inputs and ready to lower.

    run = abstract_run(config, mesh)   # models as ShapeDtypeStructs with their shardings
    for program in iteration_programs(config, run):
        lowered = program.lower()               # traced and lowered by the loop's own step factories

Which programs an algorithm runs is its registry record's `programs` (`algorithms.registry`), as its
iteration in `vtg_jax/algorithms/` runs them: a rollout (shared-prefix prefill + decode loop) for the
sampled-reward and on-policy objectives, teacher / reference scoring (prefill + one teacher-forced
pass) where the objective needs it, the update (the record's `make_step`, the very factory the
loop calls), and the greedy evaluation decode (run every `eval.every` steps, reported apart from the
iteration). Nothing reads weights: models come from `nnx.eval_shape`, optimizer state from
`jax.eval_shape(tx.init)`, and every argument is a `ShapeDtypeStruct` carrying the `NamedSharding`
the loop gives it (parameters by their logical names, batches replicated as `run.loop` passes them).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.core.spmd as core_spmd
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from vtg_jax.algorithms import registry
from vtg_jax.models.qwen_vl import QwenVL
from vtg_jax.models.qwen_vl.config import QwenVLConfig, load_config
from vtg_jax.models.qwen_vl.presets import get_preset
from vtg_jax.parallel.distributed import batch_spec
from vtg_jax.parallel.rules import DEFAULT_RULES, batch_shards, shards_of, sharded_call, vision_shards_for
from vtg_jax.plan import flops as model_flops
from vtg_jax.plan.shapes import VideoGeometry, completion_buffer, rl_batch, sampler_prompts, sft_batch, video_geometry
from vtg_jax.sampling import engine
from vtg_jax.sampling.process_local import prompt_specs
from vtg_jax.run.model_setup import is_hf_dir, model_options, reference_section
from vtg_jax.train.batch import packed_specs
from vtg_jax.train.rl_batch import rl_batch_specs
from vtg_jax.train.optim import make_optimizer
from vtg_jax.run.config import optim_config
from vtg_jax.train.state import TrainState, merge_model, split_model, state_shardings

SDS = jax.ShapeDtypeStruct

# Programs of one iteration per algorithm (then "train_step"); the evaluation decode is listed apart.
EVAL_PROGRAMS = ("eval_prefill", "eval_decode")


@dataclasses.dataclass
class AbstractModel:
    """A model as the loop holds it: graphdef + abstract state (ShapeDtypeStructs with shardings)."""

    cfg: QwenVLConfig
    graphdef: nnx.GraphDef
    state: Any


@dataclasses.dataclass
class AbstractRun:
    """What one run keeps on the devices, abstractly: the policy's train state and frozen part, the
    teacher and reference, plus the geometry of the planned video."""

    config: Any
    mesh: jax.sharding.Mesh
    cfg: QwenVLConfig
    geometry: VideoGeometry
    graphdef: nnx.GraphDef  # the policy's (trainable / frozen split)
    train_state: TrainState  # an evaluation's: no optimizer state (opt_state None)
    frozen: Any
    tx: Any  # None for an evaluation (it has no `optim` section)
    schedule: Optional[Callable]
    teacher: Optional[AbstractModel] = None
    reference: Optional[AbstractModel] = None

    def kernel_attention(self, section: Any) -> bool:
        """Whether the model of `section` runs its self-attention in Pallas kernels on this mesh ("auto"
        or "splash" on a TPU slice), so that its attention FLOPs are missing from XLA's count."""
        tpu = self.mesh.devices.flat[0].platform == "tpu"
        return tpu and model_options(section)["attention_impl"] in ("auto", "splash")

    def causal_skew(self) -> float:
        """Work of the busiest chip's causal attention over the average chip's (`Program.kernel_flops` are
        spread evenly): 1, or (2S - 1) / S under context parallelism over S chips (the `sequence` mesh
        axis): each holds one query chunk against all earlier keys, so the last chunk's chip does the most
        (fused_attention.py)."""
        shards = shards_of("length", self.mesh)
        return (2 * shards - 1) / shards

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def own_rows(self) -> bool:
        """Whether the loop's iteration shards its batch over the batch axes (per-host input to the step and
        the sampler, `algorithms.context.RunContext.packs_own_rows`): each micro-batch fills whole vision
        shards on every batch shard of the mesh; else the batch is replicated."""
        c = self.config
        return vision_shards_for(self.mesh, int(c.batch_size) // int(c.micro_batches)) == batch_shards(self.mesh)

    def with_specs(self, tree: Any, specs: Any) -> Any:
        """ShapeDtypeStructs of `tree` with the NamedShardings of `specs` (a tree of PartitionSpecs)."""
        return jax.tree.map(lambda spec, x: SDS(x.shape, x.dtype, sharding=NamedSharding(self.mesh, spec)),
                            specs, tree, is_leaf=lambda x: isinstance(x, PartitionSpec))

    def policy(self) -> AbstractModel:
        """The policy as the sampler sees it (trainable and frozen parts merged)."""
        graphdef, state = nnx.split(merge_model(self.graphdef, self.train_state.params, self.frozen))
        return AbstractModel(self.cfg, graphdef, state)

    def resident(self) -> dict[str, Any]:
        """Arrays that live on the devices for the whole run, by name (see `Program.arguments`)."""
        out = {"params": self.train_state.params, "frozen": self.frozen}
        if self.tx is not None:
            out["opt_state"] = self.train_state.opt_state
        if self.teacher is not None:
            out["teacher"] = self.teacher.state
        if self.reference is not None:
            out["reference"] = self.reference.state
        return out


@dataclasses.dataclass
class Program:
    """One jitted program: `lower()` traces it; `calls` is how many times one iteration runs the body
    XLA's cost analysis counts once (decode steps of the loop, micro-batches of the update); `arguments`
    names the resident arrays it takes, so the others are added to its memory; `model_flops` per call
    of the whole program (not per loop trip)."""

    name: str
    lower: Callable[[], Any]
    calls: int
    arguments: tuple[str, ...]
    model_flops: float
    in_iteration: bool = True
    after: Optional[str] = None  # a program whose compiled outputs are this one's inputs
    # FLOPs (all chips, all calls) that run inside Pallas kernels (splash attention on TPU), which XLA's
    # cost analysis does not count: the attention part of the model FLOPs, x 3 in an update (causal text
    # attention x `AbstractRun.causal_skew`, so that the per-chip share is the busiest chip's).
    kernel_flops: float = 0.0
    on_compiled: Optional[Callable[[Any, Any], None]] = None  # (compiled, lowered): hands outputs on


def _config_of(section: Any) -> QwenVLConfig:
    """The architecture a model section names, from its preset or its HF directory's config.json
    (no weights read)."""
    opts = model_options(section)
    if section["preset"]:
        return get_preset(section["preset"]).replace(rope_index_rule=opts["rope_index_rule"])
    path = section["init_from"]
    if path and is_hf_dir(path):
        return load_config(path, opts["rope_index_rule"])
    raise ValueError(f"planning needs the architecture: set the section's preset (init_from {path!r} is not an "
                     "HF directory with a config.json)")


def _abstract_module(section: Any, seed: int) -> QwenVL:
    """The section's model, abstract. Its "auto" attention resolves while tracing for the mesh's
    platform (every program is traced under `sharded_call`), not for this host's backend."""
    opts = model_options(section)
    cfg = _config_of(section)
    return nnx.eval_shape(lambda: QwenVL(cfg, dtype=opts["dtype"], param_dtype=opts["param_dtype"],
                                         remat=opts["remat"], attention_impl=opts["attention_impl"], rngs=nnx.Rngs(seed)))


def with_shardings(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """ShapeDtypeStructs of an abstract nnx State / TrainState, each with its NamedSharding."""
    shardings = state_shardings(tree, mesh)
    return jax.tree.map(lambda sh, sub: jax.tree.map(lambda x: SDS(x.shape, x.dtype, sharding=sh), sub),
                        shardings, tree)


def _frozen_model(section: Any, mesh: jax.sharding.Mesh, seed: int) -> AbstractModel:
    module = _abstract_module(section, seed)
    graphdef, state = nnx.split(module)
    return AbstractModel(module.cfg, graphdef, with_shardings(state, mesh))


def abstract_run(config: Any, mesh: jax.sharding.Mesh) -> AbstractRun:
    """The run's models and optimizer state as the loop would build them, abstractly."""
    module = _abstract_module(config.model, int(config.seed))
    graphdef, params, frozen = split_model(module, bool(config.model.freeze_vision))
    algorithm = registry.get(config.algorithm)
    tx, schedule = make_optimizer(optim_config(config)) if algorithm.trains else (None, None)
    scalar = SDS((), jnp.int32)
    opt_state = jax.eval_shape(tx.init, params) if algorithm.trains else None
    state = TrainState(step=scalar, params=params, opt_state=opt_state, skipped=scalar)
    run = AbstractRun(config=config, mesh=mesh, cfg=module.cfg, geometry=video_geometry(config, module.cfg),
                      graphdef=graphdef, train_state=with_shardings(state, mesh), frozen=with_shardings(frozen, mesh),
                      tx=tx, schedule=schedule)
    if algorithm.uses_teacher(config):
        run.teacher = _frozen_model(config.teacher, mesh, int(config.seed) + 1)
    if algorithm.uses_reference(config):
        run.reference = _frozen_model(reference_section(config), mesh, int(config.seed))
    return run


def _replicate(tree: Any, sharding: NamedSharding) -> Any:
    return jax.tree.map(lambda s: SDS(s.shape, s.dtype, sharding=sharding), tree)


def _rules_key() -> tuple:
    return tuple(core_spmd.get_logical_axis_rules() or ())


def _outputs(compiled: Any, lowered: Any) -> Any:
    """A compiled program's outputs as ShapeDtypeStructs with the shardings it produces them in."""
    return jax.tree.map(lambda info, sh: SDS(info.shape, info.dtype, sharding=sh), lowered.out_info,
                        compiled.output_shardings)


class Sampler:
    """Prefill / decode / score programs of one model on `prompts` prompts x `samples` rows each."""

    def __init__(self, run: AbstractRun, model: AbstractModel, prompts: int, samples: int, own_rows: bool):
        """`own_rows`: the prompts (and their rows' ids / completions) come sharded over the batch axes, as
        per-host input gives them (`sampling.process_local`); else replicated. Either way the videos are
        packed per vision shard, as `sampling.generate` packs them on the mesh."""
        self.run, self.model, self.samples = run, model, samples
        self.inputs, self.length = sampler_prompts(model.cfg, run.geometry, prompts,
                                                   vision_shards_for(run.mesh, prompts))
        present = {k: v for k, v in self.inputs.items() if v is not None}
        if own_rows:
            self.inputs.update(run.with_specs(present, prompt_specs(present, run.mesh)))
        else:
            self.inputs = _replicate(self.inputs, run.replicated())
        self.rows = NamedSharding(run.mesh, batch_spec(run.mesh)) if own_rows else run.replicated()
        self.prefilled: Any = None  # set by `prefill_outputs` from the compiled prefill

    def lower_prefill(self, new_tokens: int) -> Any:
        with sharded_call(self.run.mesh, DEFAULT_RULES):
            return engine.prefill.lower(self.model.graphdef, self.model.state, self.inputs,
                                        num_samples=self.samples, cache_len=self.length + new_tokens,
                                        rules_key=_rules_key())

    def prefill_outputs(self, compiled: Any, lowered: Any) -> None:
        self.prefilled = _outputs(compiled, lowered)

    def lower_decode(self, max_new_tokens: int, *, greedy: bool, top_k: int, top_p: float) -> Any:
        p, rows = self.prefilled, self.prefilled["logits"].shape[0]
        rep = self.run.replicated()
        scalar = lambda dtype: SDS((), dtype, sharding=rep)  # noqa: E731
        with sharded_call(self.run.mesh, DEFAULT_RULES):
            return engine.decode.lower(
                self.model.graphdef, self.model.state, p["cache"], p["logits"], p["mask"], p["last_pos"],
                SDS((rows,), jnp.int32, sharding=self.rows), SDS((rows,), jnp.int32, sharding=self.rows),
                scalar(jnp.uint32),
                scalar(jnp.int32), SDS((1,), jnp.int32, sharding=rep), scalar(jnp.float32), scalar(jnp.float32),
                prompt_len=self.length, num_buf=completion_buffer(max_new_tokens), greedy=greedy, top_k=int(top_k),
                use_top_p=top_p < 1.0, pad_id=0, rules_key=_rules_key())

    def lower_score(self, completion_slots: int) -> Any:
        p, rows = self.prefilled, self.prefilled["logits"].shape[0]
        rep = self.run.replicated()
        with sharded_call(self.run.mesh, DEFAULT_RULES):
            return engine.completion_logprobs.lower(
                self.model.graphdef, self.model.state, p["cache"], p["logits"], p["mask"], p["last_pos"],
                SDS((rows, completion_slots), jnp.int32, sharding=self.rows), SDS((), jnp.float32, sharding=rep),
                prompt_len=self.length, chunk_size=None, rules_key=_rules_key())


def _time_mask(config: Any, vocab: int) -> Optional[np.ndarray]:
    """LongVTG-R1's timestamp-token mask: its shape is what the program needs (values from the tokenizer)."""
    return np.zeros((vocab,), bool) if "grpo" in config and config.grpo.kl == "token_aware" else None


def _rollout_samples(config: Any) -> int:
    """Completions sampled per prompt (TempSamp-R1 samples G - 1 and adds the ground truth)."""
    g = int(config.rollout.num_samples)
    return {"opd": 1, "tempsamp": g - 1}.get(config.algorithm, g)


def _train_rows(config: Any) -> int:
    """Completions per prompt in the update's batch."""
    return {"opd": 1, "op_rkd": 1, "op_fkd": 1}.get(config.algorithm, int(config.rollout.num_samples))


def _train_program(run: AbstractRun) -> Program:
    c, geo = run.config, run.geometry
    batch, micro = int(c.batch_size), int(c.micro_batches)
    shards = vision_shards_for(run.mesh, batch // micro)  # as the loop packs (algorithms.context)
    if c.algorithm == "sft":  # no rollout: the loader's answer
        data = sft_batch(run.cfg, geo, batch, micro, shards)
        rows, new = 1, geo.answer_tokens
    else:
        rows, new = _train_rows(c), int(c.rollout.max_new_tokens)
        data = rl_batch(run.cfg, geo, batch, rows, new, micro, ref_logp=run.reference is not None,
                        teacher_logp=c.algorithm in ("opd", "op_rkd"), vision_shards=shards)
    batch_sharding = None if run.own_rows() else run.replicated()
    if batch_sharding is None:  # per-host input: samples sharded over the batch axes, the step takes them so
        specs = (packed_specs(data, batch_spec(run.mesh)) if c.algorithm == "sft"
                 else rl_batch_specs(data, batch_spec(run.mesh)))
        data = (run.with_specs(data, specs) if c.algorithm == "sft"
                else dataclasses.replace(data, **run.with_specs({k: getattr(data, k) for k in specs}, specs)))
    else:
        data = _replicate(data, batch_sharding)
    teacher = run.teacher if c.algorithm == "op_fkd" else None
    shardings_of = lambda tree: jax.tree.map(lambda s: s.sharding, tree)  # noqa: E731
    step = registry.get(c.algorithm).make_step(
        c, run.graphdef, run.tx, run.schedule, time_mask=_time_mask(c, run.cfg.text.vocab_size),
        teacher_graphdef=None if teacher is None else teacher.graphdef,
        teacher_sharding=None if teacher is None else shardings_of(teacher.state),
        state_sharding=shardings_of(run.train_state), frozen_sharding=shardings_of(run.frozen),
        batch_sharding=batch_sharding)
    args = (run.train_state, run.frozen) + (() if teacher is None else (teacher.state,)) + (data,)

    def lower():
        with sharded_call(run.mesh, DEFAULT_RULES):
            return step.jitted.lower(*args)

    vision = model_flops.vision_forward(run.cfg, geo.groups, geo.grid_h, geo.grid_w)
    shared = any(bool(c[s].shared_prefix) for s in ("grpo", "opd") if s in c)
    flops = model_flops.train_step(run.cfg, batch, batch * rows, geo.prompt_tokens, new, vision,
                                   bool(c.model.freeze_vision), shared)
    seq = geo.prompt_tokens + new
    kernel = 0.0
    if run.kernel_attention(c.model):
        # The kernel runs the text self-attention: every row's prompt + completion, or (shared prefix) the
        # prompts alone; the completions' attention to the prompt is XLA's, counted by cost_analysis.
        text_kernel = (batch * model_flops.text_attention(run.cfg.text, model_flops.causal_pairs(geo.prompt_tokens))
                       if shared else
                       batch * rows * model_flops.text_attention(run.cfg.text, model_flops.causal_pairs(seq)))
        kernel = (3 * run.causal_skew() * text_kernel
                  + batch * (1 if c.model.freeze_vision else 3)
                  * model_flops.vision_full_attention(run.cfg, geo.groups, geo.grid_h, geo.grid_w))
    if teacher is not None:  # OP-FKD's teacher forward over the same sequences, inside the step
        t_vision = model_flops.vision_forward(teacher.cfg, geo.groups, geo.grid_h, geo.grid_w)
        flops += model_flops.train_step(teacher.cfg, batch, batch * rows, geo.prompt_tokens, new, t_vision, True) / 3
    names = ("params", "opt_state", "frozen") + (() if teacher is None else ("teacher",))
    return Program("train_step", lower, calls=micro, arguments=names, model_flops=flops, kernel_flops=kernel)


def _sampling_programs(run: AbstractRun, prefix: str, model: AbstractModel, arguments: tuple[str, ...],
                       prompts: int, samples: int, new_tokens: int, *, decode: bool, kernels: bool,
                       greedy: bool = False, in_iteration: bool = True) -> list[Program]:
    """prefill + (decode loop | teacher-forced score) of `model` for `prompts` x `samples` rows; `kernels`:
    its attention runs in Pallas kernels (`AbstractRun.kernel_attention`)."""
    c, geo = run.config, run.geometry
    sampler = Sampler(run, model, prompts, samples, own_rows=in_iteration and run.own_rows())
    slots = completion_buffer(new_tokens)
    vision = model_flops.vision_forward(model.cfg, geo.groups, geo.grid_h, geo.grid_w)
    attention = prompts * (run.causal_skew()
                           * model_flops.text_attention(model.cfg.text, model_flops.causal_pairs(geo.prompt_tokens))
                           + model_flops.vision_full_attention(model.cfg, geo.groups, geo.grid_h, geo.grid_w))
    pre = Program(f"{prefix}_prefill", lambda: sampler.lower_prefill(slots), calls=1, arguments=arguments,
                  model_flops=model_flops.prefill(model.cfg, prompts, geo.prompt_tokens, vision),
                  in_iteration=in_iteration, on_compiled=sampler.prefill_outputs,
                  kernel_flops=attention if kernels else 0.0)
    rows = prompts * samples
    tail_flops = model_flops.completions(model.cfg, rows, geo.prompt_tokens, new_tokens)
    if decode:  # greedy (an evaluation) samples nothing: top-k / top-p off; a rollout's from its section
        top_k = 0 if greedy or c.rollout.top_k is None else int(c.rollout.top_k)
        top_p = 1.0 if greedy else float(c.rollout.top_p)
        tail = Program(f"{prefix}_decode", lambda: sampler.lower_decode(new_tokens, greedy=greedy, top_k=top_k,
                                                                        top_p=top_p),
            calls=new_tokens, arguments=arguments, model_flops=tail_flops, in_iteration=in_iteration,
            after=pre.name)
    else:
        # Teacher forcing reads the shared prompt prefix in the splash kernel (a decode step does not).
        prefix_pairs = rows * model_flops.text_attention(model.cfg.text, new_tokens * geo.prompt_tokens)
        tail = Program(f"{prefix}_score", lambda: sampler.lower_score(slots), calls=1, arguments=arguments,
                       model_flops=tail_flops, in_iteration=in_iteration, after=pre.name,
                       kernel_flops=prefix_pairs if kernels else 0.0)
    return [pre, tail]


def iteration_programs(run: AbstractRun) -> list[Program]:
    """Every program of one iteration of `run.config`'s algorithm, in the order the loop runs them,
    then the evaluation decode (not part of the iteration)."""
    c = run.config
    algorithm = registry.get(c.algorithm)
    if algorithm.job not in ("train", "eval"):
        plannable = sorted(name for name, a in registry.ALGORITHMS.items() if a.job in ("train", "eval"))
        raise ValueError(f"no plan for algorithm {c.algorithm!r}; plannable: {plannable}")
    names = set(algorithm.programs)
    batch = int(c.batch_size)
    policy_args = ("params", "frozen")
    out: list[Program] = []
    if "rollout_prefill" in names:
        out += _sampling_programs(run, "rollout", run.policy(), policy_args, batch, _rollout_samples(c),
                                  int(c.rollout.max_new_tokens), decode=True, kernels=run.kernel_attention(c.model))
    if run.teacher is not None and "teacher_prefill" in names:
        # OPD scores the student's rollout; OP-RKD the ground-truth answer (its buffer: the answer's length)
        new_t = int(c.rollout.max_new_tokens) if c.algorithm == "opd" else run.geometry.answer_tokens
        out += _sampling_programs(run, "teacher", run.teacher, ("teacher",), batch, 1, new_t, decode=False,
                                  kernels=run.kernel_attention(c.teacher))
    if run.reference is not None and "reference_prefill" in names:
        out += _sampling_programs(run, "reference", run.reference, ("reference",), batch,
                                  int(c.rollout.num_samples), int(c.rollout.max_new_tokens), decode=False,
                                  kernels=run.kernel_attention(reference_section(c)))
    if c.algorithm != "eval":
        out.append(_train_program(run))
    if tuple(c.eval.splits):
        e = c.eval
        out += _sampling_programs(run, "eval", run.policy(), policy_args, int(e.batch_size), 1,
                                  int(e.max_new_tokens), decode=True, greedy=True, in_iteration=False,
                                  kernels=run.kernel_attention(c.model))
    return out
