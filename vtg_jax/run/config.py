"""The run config schema, and the blocks recipes are composed of.

A run config is an ml_collections ConfigDict. `configs/<recipe>.py:<arg>` returns
`run_config(algorithm, *blocks)`: `base_config(algorithm)` (the schema, with its defaults) and then each
block, a {dotted key: value} dict, in order. A block only adds: a key set by one block and again by a
later one is an error, so a recipe reads top to bottom as the values it runs (the CPU-demo blocks
`TINY_RL` / `DEMO` and the `paper_scale(...)` block are alternatives chosen up front, never stacked).
The result is locked: `--config.optim.lr=1e-5` works, `--config.optim.lrr=1e-5` fails naming the keys.

Sections: every run config has `COMMON_SECTIONS`; an algorithm adds its registry record's `sections`
(`algorithms.registry`), and has no other (an OPD config has no `grpo`: `--config.grpo.beta=0.1` fails).

    algorithm         sft | grpo | opd | op_rkd | op_fkd | tempsamp | eval | select
    model             the trained policy: `init_from` (an HF directory or one of our run workdirs, whose
                      latest checkpoint is read) or `preset` (random init; a real-size preset only with
                      `random_init=True`); dtypes, remat, attention kernel
    teacher           OPD / OP-RKD / OP-FKD / selection teacher, named the same two ways (never trained)
    reference         how the GRPO reference model (the frozen initial policy: `model`'s weights) computes
    data              synthetic benchmark (generated and extracted once into `data.cache_dir`) or your
                      own jsonl + frame store + tokenizer; prompt template, answer format, buckets
    rollout           sampling for RL / OPD (G, max new tokens, temperature, top-p / top-k)
    grpo / opd / fkd / tempsamp / reward   loss and reward settings (the step factories' configs)
    optim, checkpoint training only: AdamW + warmup-cosine (`train.optim.OptimConfig`), Orbax checkpoints
    mesh, distributed parallel layout (`parallel.mesh`, `parallel.distributed`)
    eval, log, plan   evaluation, logging, what `python -m vtg_jax.plan` plans for
    select            model-scored data selection (`run.select`)

"Off" is None, never 0 (`OFF`: e.g. `eval.num` None = the whole split, `checkpoint.keep` None = keep every
checkpoint, `rollout.top_k` None = no top-k). These keys are typed placeholders, so a number is set as
usual (`--config.grpo.kl_clamp=0.2`); ml_collections' flag parsers read no None for a typed field, so the
entry points take `--config.<key>=None` themselves (`run.cli`: the flag is taken out before absl parses
the others and applied after). A 0 in one of them is refused (`run.config_checks`), where it used to mean
off; a config saved with 0 reads as None (`run.resume.upgrade_saved_config`).

Pipelines (`configs/pipeline.py`) chain such configs as stages (`run.pipeline`). Checks that run before
anything touches devices: `run.config_checks.require_complete`; resumes: `run.resume`.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import ml_collections
from ml_collections.config_dict import FieldReference

from vtg_jax.algorithms import registry

SELECT_METHODS = ("tvdf", "time_r1", "tvg_r1")  # `run.select`
CHECKPOINT_DIR = "checkpoints"  # a run workdir's Orbax checkpoints
# How a model computes (not what it is): the keys of the `reference` section, also in `model` and `teacher`.
COMPUTE_KEYS = ("dtype", "param_dtype", "remat", "attention_impl")
# What every run config holds, whatever its algorithm (the registry record adds the algorithm's own).
COMMON_SECTIONS = ("algorithm", "seed", "resume_changed_config", "steps", "batch_size", "micro_batches", "model",
                   "data", "mesh", "distributed", "eval", "log", "plan")
# Knobs whose None means off / all / a default (what None does); before, 0 meant that.
OFF = {"grpo.eps_low": "no lower clip", "grpo.eps_high": "no upper clip", "grpo.kl_clamp": "no clamp",
       "grpo.dual_clip": "no dual clip", "opd.eps_low": "no lower clip", "opd.eps_high": "no upper clip",
       "fkd.top_k": "the whole vocabulary", "rollout.top_k": "no top-k truncation",
       "eval.num": "the whole split", "eval.every": "only at the end", "checkpoint.keep": "every checkpoint",
       "select.pool": "the whole train split", "select.trpv_threshold": "TRPV off (every record is reliable)",
       "data.nframes": "frames by fps", "data.min_pixels": "the sampling rule's default",
       "data.max_pixels": "the sampling rule's default", "data.total_pixels": "the sampling rule's default",
       "plan.text_tokens": "vtg_jax.plan.shapes' default"}

# The embedded default's models (vtg_jax/models/qwen_vl/presets.py) and data (the synthetic benchmark).
TINY_STUDENT = "qwen2.5-vl-synthetic"
TINY_TEACHER = "qwen2.5-vl-synthetic-teacher"
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
DEMO_STUDENT = os.path.join(ASSETS, "synthetic_student")
DEMO_TEACHER = os.path.join(ASSETS, "synthetic_teacher")

# Per-paper frame budgets of qwen-vl-utils (`total_pixels` bounds the whole clip: tokens = total / factor²).
TIME_R1_TOTAL_PIXELS = 3584 * 28 * 28  # Time-R1's training script: 3,584 video tokens of Qwen2.5-VL
VIDEO_OPD_TOTAL_PIXELS = 8192 * 32 * 32  # Video-OPD §4.1 / App. D.1: at most 8,192 video tokens (Qwen3-VL)
TIMELENS_MAX_FRAMES = 448  # TimeLens' evaluation: 2 fps, at most 448 frames
TVG_R1_FRAMES = dict(nframes=64, max_pixels=128 * 28 * 28)  # TVG-R1 §4.1, training and inference
# The clip a plan assumes for a per-clip token budget: the longest video the budget still holds at 2 fps
# (qwen-vl-utils' per-frame floor of 128 tokens takes over beyond it): ~60 s for Video-OPD's 8,192 tokens,
# ~30 s (Charades-STA's typical query video) for Time-R1's 3,584.
VIDEO_OPD_PLAN_SECONDS = 60.0
TIME_R1_PLAN_SECONDS = 30.0


def _off(value: Any, kind: type) -> FieldReference:
    """A knob of `OFF`: `kind`, or None (off); typed, so the command line sets numbers even where None."""
    return FieldReference(value, field_type=kind)


def _section(**values: Any) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(values)


def model_section(role: str) -> ml_collections.ConfigDict:
    """A model section: "model" (the trained policy), "teacher" (a frozen model, named as the policy is)
    or "reference" (how the GRPO reference, the frozen initial policy, computes: `COMPUTE_KEYS` only).

    random_init: a real-size preset without init_from starts from random weights only when True (a forgotten
    --init_from would otherwise initialise billions of parameters on the host); the tiny presets always may.
    Frozen models are never differentiated: remat "none"."""
    compute = dict(dtype="float32", param_dtype="float32", remat="none", attention_impl="auto")
    if role == "reference":
        return _section(**compute)
    if role not in ("model", "teacher"):
        raise ValueError(f"unknown model section role {role!r}: use 'model', 'teacher' or 'reference'")
    trained = dict(freeze_vision=False) if role == "model" else {}
    return _section(preset=TINY_STUDENT if role == "model" else "", init_from="", random_init=False,
                    rope_index_rule="original", **compute, **trained)


def _data() -> ml_collections.ConfigDict:
    return _section(
        cache_dir="",  # "" = <workdir>/data; share one between runs to generate/extract once
        # The CPU default: level 1 (one object appears) made learnable by a tiny model in minutes (see
        # README "The demo"): 12-16 s videos, 1-2 s events on whole seconds (= the 2-frame groups at
        # 2 fps), one grey background and large objects, so that only the object tells the answer.
        synthetic=_section(
            enabled=True, preset="default", level=1, seed=0, num_train=2000, num_val=200, num_test=200,
            # SyntheticConfig fields replacing the preset's (None: the preset's value)
            min_duration=12, max_duration=16, min_span=1.0, max_span=2.0, grid=1.0, size=_off(None, int),
            plain_background=True, object_scale=3.0),
        train="", val="", test="",  # jsonl of GroundingRecord (used when synthetic.enabled is False)
        train_subset="",  # a jsonl of records (e.g. a selection's selected.jsonl): train on those qids only
        frame_store="",  # `python -m vtg_jax.data.extract` output for those records
        tokenizer="",  # a directory with tokenizer.json; "" = the tiny tokenizer (synthetic runs only)
        # Frame sampling (vtg_jax/data/frame_sampling.py; a real run's frame store must have been extracted
        # with these values). The demo keeps the HF processors' rule its shipped checkpoints were trained
        # on; paper recipes use qwen-vl-utils' (paper_scale). None = the rule's default for a pixel budget.
        sampling="transformers", fps=2.0, nframes=_off(None, int), min_frames=4, max_frames=768,
        min_pixels=_off(3136, int), max_pixels=_off(3136, int),  # synthetic videos stay 56x56 for Qwen2.5
        total_pixels=_off(None, int),
        template="synthetic_short", system="", interleave_timestamps="true",  # auto: Qwen3 yes, Qwen2.5 no
        answer_format="{start:.1f} to {end:.1f}",  # the SFT / ground-truth answer text
        token_buckets=(), patch_buckets=(), group_buckets=(),  # () = one bucket at the longest example
        read_threads=1, worker_count=0)


SECTIONS = {  # name -> its defaults (a fresh ConfigDict each call)
    "model": lambda: model_section("model"),
    "teacher": lambda: model_section("teacher"),
    "reference": lambda: model_section("reference"),
    "data": _data,
    "rollout": lambda: _section(num_samples=8, max_new_tokens=16, temperature=1.0, top_p=1.0,
                                top_k=_off(None, int)),
    # a RewardSpec preset in vtg_jax.rewards (tvg_r1, time_r1, tempsamp_r1, longvtg_r1, ...) or weighted terms
    "reward": lambda: "iou_only",
    "grpo": lambda: _section(eps_low=_off(0.2, float), eps_high=_off(0.2, float), aggregation="token-mean",
                             kl="none", beta=0.0, beta_text=0.04, beta_time=0.0, kl_clamp=_off(None, float),
                             dual_clip=_off(None, float), ratio_level="token", adv_std="biased",
                             shared_prefix=False),  # the update runs each prompt once (train/rl_batch.py)
    "opd": lambda: _section(gamma=0.0, aggregation="token-mean", eps_low=_off(None, float),
                            eps_high=_off(None, float), shared_prefix=False),
    "fkd": lambda: _section(aggregation="seq-mean-token-sum", top_k=_off(None, int), topk_mode="renormalized"),
    "tempsamp": lambda: _section(  # TempSamp-R1 §3.2 eqs. 2-4 (rl.tempsamp_advantages)
        mode="shaping", downscale=0.8, lam_off=1.2, tau=0.8, alpha1=0.01, alpha2=1.0),
    "optim": lambda: _section(lr=1e-3, warmup_steps=20, end_lr_ratio=0.0, weight_decay=0.01, b1=0.9, b2=0.95,
                              eps=1e-8, clip_norm=1.0),
    "mesh": lambda: _section(data=-1, fsdp=1, sequence=1, tensor=1),  # parallel/mesh.py
    # None: jax.distributed's own detection and the JAX_* environment (launch/); local_device_ids "0,1"
    "distributed": lambda: _section(mode="", coordinator_address=_off(None, str), num_processes=_off(None, int),
                                    process_id=_off(None, int), local_device_ids=_off(None, str)),
    "checkpoint": lambda: _section(every=100, keep=_off(3, int), async_save=True, export_hf=True),
    "eval": lambda: _section(
        every=_off(None, int), at_start=True, splits=("val",), num=_off(200, int), batch_size=16,
        max_new_tokens=16,
        # eval recipe: an HF directory, one of our run workdirs or its checkpoints/<step>; export_hf writes
        # the evaluated model to <workdir>/hf (our checkpoint -> Hugging Face format)
        checkpoint="", export_hf=False),
    "log": lambda: _section(every=1, progress=True, plots=True),
    # What `python -m vtg_jax.plan` compiles for (never read by a run): a video of `video_seconds` at
    # source_height x source_width, `source_fps`, sampled by this config's `data` rule; the prompt's text
    # besides the video (None = vtg_jax.plan.shapes' default) and the answer's length in tokens.
    "plan": lambda: _section(video_seconds=16.0, source_fps=30.0, source_height=56, source_width=56,
                             text_tokens=_off(None, int), answer_tokens=16),
    "select": lambda: _section(
        method="tvdf", num=200, pool=_off(None, int),  # pool: the first N candidates of the train split
        samples=4, topk=4, temperature=1.0, batch_size=16,  # answers sampled per record; top-k by log-prob
        # tvdf: TRPV threshold; DBTP score kl | iou_gap | random; GWDS's c = 0.9, sigma = 0.2 (App. B.4)
        # are on the eq. 12 IoU-gap scale, so pair strategy=gwds with dbtp=iou_gap
        trpv_threshold=_off(0.5, float), dbtp="kl", strategy="topk",
        eps1=0.8, eps2=0.4,  # tvg_r1 (TVG-R1 §4.1)
        exclude=""),  # comma-separated selected.jsonl files whose records are not candidates
}


def sections_of(algorithm: str) -> tuple[str, ...]:
    """The top-level keys of a run config of `algorithm`: `COMMON_SECTIONS` and its record's `sections`."""
    return COMMON_SECTIONS + registry.get(algorithm).sections


def base_config(algorithm: str) -> ml_collections.ConfigDict:
    """The sections of `algorithm` with their defaults, CPU-sized on the synthetic benchmark (unlocked)."""
    c = ml_collections.ConfigDict()
    c.algorithm = algorithm
    c.seed = 0
    # A resumed run whose config differs from its checkpoint's outside RESUMABLE_CHANGES stops and names
    # the keys; True continues anyway and logs the change (resume/config_changed, config_changes.jsonl).
    c.resume_changed_config = False
    c.steps = 200  # optimizer updates (of training; the length of the learning-rate schedule)
    c.batch_size = 16  # prompts per update, all processes together
    c.micro_batches = 1  # gradient accumulation: batch_size / micro_batches prompts per forward
    for name in sections_of(algorithm):
        if name not in c:
            c[name] = SECTIONS[name]()
    return c


def _known_section(name: str) -> bool:
    return name in SECTIONS or name in COMMON_SECTIONS


def run_config(algorithm: str, *blocks: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """`base_config(algorithm)` with each block ({dotted key: value}) applied in order, locked.

    A key of a section `algorithm` does not have is left out (a shared block serves several algorithms,
    e.g. `paper_scale`'s teacher dtypes); a key set by two blocks is an error, so that no block undoes
    another; a key the schema does not have is an error naming the valid ones."""
    c = base_config(algorithm)
    set_by: dict[str, int] = {}
    for i, block in enumerate(blocks):
        for key, value in block.items():
            *parents, leaf = key.split(".")
            section = (parents or [leaf])[0]
            if section not in c and _known_section(section):
                continue
            if key in set_by:
                raise ValueError(f"{algorithm} recipe: {key} is set by block {set_by[key]} and again by block {i} "
                                 "(a block only adds to the ones before it)")
            target = c
            for p in parents:
                target = target[p]
            if leaf not in target:
                raise KeyError(f"{algorithm} recipe: no config key {key} (valid: {', '.join(sorted(target.keys()))})")
            target[leaf] = value
            set_by[key] = i
    c.lock()
    return c


# ----------------------------------------------------------------------------------------- blocks
# The CPU-sized sampled-reward recipes (GRPO, TempSamp-R1, LongVTG-R1): the shipped demo student (a random
# policy earns no IoU reward), G = 4 rollouts, 8 prompts, 100 steps at a constant lr 3e-4.
TINY_RL = {"model.init_from": DEMO_STUDENT, "steps": 100, "batch_size": 8, "rollout.num_samples": 4,
           "optim.lr": 3e-4, "optim.warmup_steps": 0, "eval.every": 50}

# The README demo's distillation setting (OPD, OP-RKD, OP-FKD, selection): the shipped tiny student and
# teacher (HF format, made by the commands in vtg_jax/assets/README.md) on the synthetic benchmark, sized
# for a CPU in minutes. The train split is smaller than the one they were trained on (quicker to generate);
# val is the same 200 videos (a split's videos depend only on the seed and their index). lr 2e-4: the
# student ended its SFT at lr ~0; 5e-4 and 1e-3 made its greedy answers worse.
DEMO = {"model.init_from": DEMO_STUDENT, "teacher.init_from": DEMO_TEACHER, "data.synthetic.num_train": 800,
        "steps": 400, "optim.lr": 2e-4, "optim.warmup_steps": 10, "eval.every": 200, "checkpoint.every": 200}


def paper_scale(preset: str, *, teacher: str = "", template: str = "default", batch_size: int = 32,
                rollout_tokens: int = 256, video_seconds: float = 384.0, nframes: Any = None,
                max_pixels: Any = None, total_pixels: Any = None, max_frames: int = 768) -> dict[str, Any]:
    """The papers' full-scale setting (Video-OPD §4.1, App. D.1; TempSamp-R1 App. B): policy `preset` (and
    `teacher`) from your HF directories (init_from stays "": the run names the missing flags before touching
    devices, `require_complete`), lr 1e-6 constant, `batch_size` 32, the prompt `template`, your data.

    The policy keeps float32 parameters (bfloat16 activations, remat, a frozen vision tower); the frozen
    models (teacher, GRPO reference) hold bfloat16 parameters, half their memory. FSDP over every chip: 8B
    float32 parameters and their Adam moments (~128 GB) fit no single chip. Frames as qwen-vl-utils'
    fetch_video samples them, as the papers' code bases do (README "Data"): 2 fps, at most `max_frames`, its
    per-frame budget (128..768 tokens) unless `max_pixels`, a clip budget `total_pixels`, or a fixed
    `nframes`. Rollouts and evaluations answer in up to `rollout_tokens` / 256 tokens; a plan assumes a
    `video_seconds` HD video (the default: the longest clip 768 frames at 2 fps hold)."""
    frozen = {f"{s}.{k}": "bfloat16" for s in ("teacher", "reference") for k in ("dtype", "param_dtype")}
    return {"model.preset": preset, "model.dtype": "bfloat16", "model.remat": "full", "model.freeze_vision": True,
            **({"teacher.preset": teacher} if teacher else {}), **frozen,
            "optim.lr": 1e-6, "optim.warmup_steps": 0, "optim.end_lr_ratio": 1.0,  # the papers quote one lr
            "batch_size": batch_size, "mesh.data": 1, "mesh.fsdp": -1,
            "data.synthetic.enabled": False, "data.template": template, "data.interleave_timestamps": "auto",
            "data.sampling": "qwen_vl_utils", "data.nframes": nframes, "data.max_frames": max_frames,
            "data.min_pixels": None, "data.max_pixels": max_pixels, "data.total_pixels": total_pixels,
            "rollout.max_new_tokens": rollout_tokens, "eval.num": None, "eval.max_new_tokens": 256,
            "plan.video_seconds": video_seconds, "plan.source_height": 720, "plan.source_width": 1280}


def video_opd_scale(teacher: str = "") -> dict[str, Any]:
    """Video-OPD §4.1 (and its App. C / D.1 baselines): Qwen3-VL-8B (and `teacher`), the Fig. 7 prompt,
    at most 8,192 video tokens per clip."""
    return paper_scale("qwen3-vl-8b", teacher=teacher, template="video_opd", total_pixels=VIDEO_OPD_TOTAL_PIXELS,
                       video_seconds=VIDEO_OPD_PLAN_SECONDS)


def distillation_scale(algorithm: str, arg: str) -> dict[str, Any]:
    """The two settings of Video-OPD and its App. C baselines (configs/opd.py, op_rkd.py, op_fkd.py): ""
    the README demo's shipped tiny models (`DEMO`); "paper" Video-OPD §4.1 (Qwen3-VL-8B student,
    Qwen3-VL-32B teacher, lr 1e-6, batch 32, the Fig. 7 prompt)."""
    if arg == "":
        return DEMO
    if arg == "paper":
        return video_opd_scale(teacher="qwen3-vl-32b")
    raise ValueError(f"unknown {algorithm} config arg {arg!r}: use '' or 'paper'")


def selection(method: str, *, num: int = 200, batch_size: int = 16) -> dict[str, Any]:
    """The `select` section's method (`vtg_jax.run.select`): which records a later stage trains on; a
    selection evaluates nothing.

    Video-OPD §4.1 keeps 2,500 of 96,586 records (TVDF for OPD, Time-R1's Gaussian for GRPO); the paper
    gives neither the top-k nor the TRPV threshold (App. B), so k = 4 samples and tau >= 0.5 here."""
    if method not in SELECT_METHODS:
        raise ValueError(f"unknown select method {method!r}: use one of {SELECT_METHODS}")
    return {"select.method": method, "select.num": num, "select.batch_size": batch_size, "eval.splits": ()}


def optim_config(c: Any) -> Any:
    """`train.optim.OptimConfig` of a run config (ConfigDict or the JSON dict a checkpoint saved)."""
    from vtg_jax.train.optim import OptimConfig

    o = c["optim"]
    steps = int(c["steps"])
    return OptimConfig(lr=float(o["lr"]), warmup_steps=min(int(o["warmup_steps"]), steps), total_steps=steps,
                       end_lr_ratio=float(o["end_lr_ratio"]), weight_decay=float(o["weight_decay"]),
                       b1=float(o["b1"]), b2=float(o["b2"]), eps=float(o["eps"]), clip_norm=float(o["clip_norm"]))
