"""The run config every recipe in `configs/` starts from, and the paper-scale settings they share.

A run config is an ml_collections ConfigDict: `configs/<recipe>.py` builds it with
`base_config(algorithm)`, sets its recipe's values, and returns it locked, so that
`--config.optim.lr=1e-5` works and `--config.optim.lrr=1e-5` fails with the list of valid keys.

Sections (every recipe has all of them; an algorithm ignores what it does not use):

    algorithm         sft | grpo | opd | op_rkd | op_fkd | tempsamp | eval | select
    model             the trained policy: `init_from` (an HF directory or one of our run workdirs, whose
                      latest checkpoint is read) or `preset` (random init; a real-size preset only with
                      `random_init=True`); dtypes, remat, attention kernel
    teacher           OPD / OP-RKD / OP-FKD teacher, same two ways (never trained, never in the state)
    reference         how the GRPO reference model (the frozen initial policy: `model`'s weights) computes
    data              synthetic benchmark (generated and extracted once into `data.cache_dir`) or your
                      own jsonl + frame store + tokenizer; prompt template, answer format, buckets
    rollout           sampling for RL / OPD (G, max new tokens, temperature, top-p / top-k)
    grpo / opd / fkd / tempsamp / reward   loss and reward settings (the step factories' configs)
    optim             AdamW + warmup-cosine (`train.optim.OptimConfig`)
    mesh, distributed parallel layout (`parallel.mesh`, `parallel.distributed`)
    checkpoint, eval, log
    select            (select recipes only) model-scored data selection (`run.select`)

Pipelines (`configs/pipeline.py`) chain such configs as stages (`run.pipeline`).

`require_complete(config)` runs before anything touches devices (the CLI, `train`, `evaluate_checkpoint`,
selection, pipelines): a config missing a checkpoint, the data or the tokenizer stops with one message
naming every missing field as its command-line flag.
"""
from __future__ import annotations

import copy
import os
from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

from vtg_jax.algorithms import registry
from vtg_jax.models.qwen_vl.size import is_real_size

SELECT_METHODS = ("tvdf", "time_r1", "tvg_r1")  # `run.select`
CHECKPOINT_DIR = "checkpoints"  # a run workdir's Orbax checkpoints
# How a model computes (not what it is): the keys of the `reference` section, also in `model` and `teacher`.
COMPUTE_KEYS = ("dtype", "param_dtype", "remat", "attention_impl")

# The embedded default's models (vtg_jax/models/qwen_vl/presets.py) and data (the synthetic benchmark).
TINY_STUDENT = "qwen2.5-vl-synthetic"
TINY_TEACHER = "qwen2.5-vl-synthetic-teacher"


def base_config(algorithm: str) -> ml_collections.ConfigDict:
    """All sections with CPU-sized defaults on the synthetic benchmark (unlocked: recipes edit it)."""
    registry.get(algorithm)  # an unknown name lists the known ones
    c = ml_collections.ConfigDict()
    c.algorithm = algorithm
    c.seed = 0
    # A resumed run whose config differs from its checkpoint's outside RESUMABLE_CHANGES stops and names
    # the keys; True continues anyway and logs the change (resume/config_changed, config_changes.jsonl).
    c.resume_changed_config = False
    c.steps = 200  # optimizer updates
    c.batch_size = 16  # prompts per update, all processes together
    c.micro_batches = 1  # gradient accumulation: batch_size / micro_batches prompts per forward

    # random_init: a real-size preset without init_from starts from random weights only when True
    # (a forgotten --init_from would otherwise initialise billions of parameters on the host); the tiny
    # presets always may. The frozen models (teacher, reference) are never differentiated: remat "none".
    c.model = ml_collections.ConfigDict(dict(
        preset=TINY_STUDENT, init_from="", random_init=False, dtype="float32", param_dtype="float32",
        freeze_vision=False, remat="none", attention_impl="auto", rope_index_rule="original"))
    c.teacher = ml_collections.ConfigDict(dict(
        preset="", init_from="", random_init=False, dtype="float32", param_dtype="float32", remat="none",
        attention_impl="auto", rope_index_rule="original"))
    c.reference = ml_collections.ConfigDict(dict(dtype="float32", param_dtype="float32", remat="none",
                                                 attention_impl="auto"))

    c.data = ml_collections.ConfigDict(dict(
        cache_dir="",  # "" = <workdir>/data; share one between runs to generate/extract once
        # The CPU default: level 1 (one object appears) made learnable by a tiny model in minutes (see
        # README "The demo"): 12-16 s videos, 1-2 s events on whole seconds (= the 2-frame groups at
        # 2 fps), one grey background and large objects, so that only the object tells the answer.
        synthetic=ml_collections.ConfigDict(dict(
            enabled=True, preset="default", level=1, seed=0, num_train=2000, num_val=200, num_test=200,
            # SyntheticConfig fields replacing the preset's (None: the preset's value)
            min_duration=12, max_duration=16, min_span=1.0,
            max_span=2.0, grid=1.0, size=placeholder(int),
            plain_background=True, object_scale=3.0)),
        train="", val="", test="",  # jsonl of GroundingRecord (used when synthetic.enabled is False)
        train_subset="",  # a jsonl of records (e.g. a selection's selected.jsonl): train on those qids only
        frame_store="",  # `python -m vtg_jax.data.extract` output for those records
        tokenizer="",  # a directory with tokenizer.json; "" = the tiny tokenizer (synthetic runs only)
        # Frame sampling (vtg_jax/data/frame_sampling.py; a real run's frame store must have been extracted
        # with these values). The demo keeps the HF processors' rule its shipped checkpoints were trained
        # on; paper recipes use qwen-vl-utils' (paper_scale). 0 = the rule's default for a pixel budget.
        sampling="transformers", fps=2.0, nframes=0, min_frames=4, max_frames=768,
        min_pixels=3136, max_pixels=3136, total_pixels=0,  # synthetic videos stay 56x56 for Qwen2.5
        template="synthetic_short", system="", interleave_timestamps="true",  # auto: Qwen3 yes, Qwen2.5 no
        answer_format="{start:.1f} to {end:.1f}",  # the SFT / ground-truth answer text
        token_buckets=(), patch_buckets=(), group_buckets=(),  # () = one bucket at the longest example
        read_threads=1, worker_count=0))

    c.rollout = ml_collections.ConfigDict(dict(
        num_samples=8, max_new_tokens=16, temperature=1.0, top_p=1.0, top_k=0))
    c.reward = "iou_only"  # a RewardSpec preset in vtg_jax.rewards (tvg_r1, time_r1, tempsamp_r1, longvtg_r1, ...)
    c.grpo = ml_collections.ConfigDict(dict(
        eps_low=0.2, eps_high=0.2, aggregation="token-mean", kl="none", beta=0.0, beta_text=0.04, beta_time=0.0,
        kl_clamp=0.0, dual_clip=0.0, ratio_level="token", adv_std="biased"))  # 0.0 = off for clamp / dual clip
    c.opd = ml_collections.ConfigDict(dict(gamma=0.0, aggregation="token-mean", eps_low=0.0, eps_high=0.0))
    c.fkd = ml_collections.ConfigDict(dict(aggregation="seq-mean-token-sum", top_k=0, topk_mode="renormalized"))
    c.tempsamp = ml_collections.ConfigDict(dict(  # TempSamp-R1 §3.2 eqs. 2-4 (rl.tempsamp_advantages)
        mode="shaping", downscale=0.8, lam_off=1.2, tau=0.8, alpha1=0.01, alpha2=1.0))

    c.optim = ml_collections.ConfigDict(dict(
        lr=1e-3, warmup_steps=20, end_lr_ratio=0.0, weight_decay=0.01, b1=0.9, b2=0.95, eps=1e-8, clip_norm=1.0))
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.distributed = ml_collections.ConfigDict(dict(mode="", coordinator_address=None, num_processes=None,
                                                   process_id=None, local_device_ids=None))
    c.checkpoint = ml_collections.ConfigDict(dict(every=100, keep=3, async_save=True, export_hf=True))
    c.eval = ml_collections.ConfigDict(dict(
        every=0, at_start=True, splits=("val",), num=200, batch_size=16, max_new_tokens=16,
        # eval recipe: an HF directory, one of our run workdirs or its checkpoints/<step>; export_hf writes
        # the evaluated model to <workdir>/hf (our checkpoint -> Hugging Face format)
        checkpoint="", export_hf=False))
    c.log = ml_collections.ConfigDict(dict(every=1, progress=True, plots=True))
    # What `python -m vtg_jax.plan` compiles for (never read by a run): a video of `video_seconds` at
    # source_height x source_width, `source_fps`, sampled by this config's `data` rule; the prompt's text
    # besides the video (0 = vtg_jax.plan.shapes' default) and the answer's length in tokens.
    c.plan = ml_collections.ConfigDict(dict(video_seconds=16.0, source_fps=30.0, source_height=56, source_width=56,
                                            text_tokens=0, answer_tokens=16))
    return c


def tiny_rl(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """CPU defaults of the sampled-reward recipes (GRPO, TempSamp-R1, LongVTG-R1): the shipped demo student
    (a random policy earns no IoU reward), G = 4 rollouts, 8 prompts, 100 steps at a constant lr 3e-4."""
    c.model.init_from = DEMO_STUDENT
    c.steps = 100
    c.batch_size = 8
    c.rollout.num_samples = 4
    c.optim.lr = 3e-4
    c.optim.warmup_steps = 0
    c.eval.every = 50
    return c


def paper_scale(c: ml_collections.ConfigDict, *, preset: str, teacher: str = "") -> ml_collections.ConfigDict:
    """The settings the papers share at full scale: lr 1e-6, batch 32, 2 fps, 768 frames (Video-OPD §4.1,
    App. D.1; TempSamp-R1 App. B), Qwen model and tokenizer from HF directories, your own data. The policy
    keeps float32 parameters (bfloat16 activations); the frozen models (teacher, GRPO reference) hold
    bfloat16 parameters, half their memory.

    Fields a user must still set (`--init_from`, `--config.data.train`, ...) stay empty and the run
    stops before touching devices with a message naming them (`require_complete`)."""
    c.model.preset = preset
    c.model.init_from = ""  # yours: --init_from=<HF dir>
    c.teacher.init_from = ""
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.remat = "full"
    c.model.freeze_vision = True
    c.teacher.preset = teacher
    for frozen in (c.teacher, c.reference):
        frozen.dtype = "bfloat16"
        frozen.param_dtype = "bfloat16"
    c.optim.lr = 1e-6
    c.optim.warmup_steps = 0
    c.optim.end_lr_ratio = 1.0  # constant lr (the papers quote one value)
    c.batch_size = 32
    c.data.synthetic.enabled = False
    c.data.template = "default"
    c.data.interleave_timestamps = "auto"
    # qwen-vl-utils' fetch_video, as the papers' code bases sample (README "Data"): 2 fps, at most 768
    # frames, its per-frame budget (128..768 tokens) and its default total budget; recipes whose paper
    # gives other values set them (TIME_R1_TOTAL_PIXELS, VIDEO_OPD_TOTAL_PIXELS, TVG-R1's 64 frames).
    c.data.sampling = "qwen_vl_utils"
    c.data.min_pixels = 0
    c.data.max_pixels = 0  # 0 = the rule's default budget for the family
    c.data.total_pixels = 0
    c.data.fps = 2.0
    c.data.nframes = 0
    c.data.min_frames = 4
    c.data.max_frames = 768
    c.rollout.max_new_tokens = 256
    c.eval.num = 0  # the whole split
    c.eval.max_new_tokens = 256
    c.checkpoint.every = 100
    # FSDP over every chip: 8B float32 parameters and their Adam moments (~128 GB) fit no single chip
    c.mesh.data, c.mesh.fsdp = 1, -1
    # plan for the longest clip the sampling keeps: 768 frames at 2 fps of an HD video
    c.plan.video_seconds, c.plan.source_height, c.plan.source_width = 384.0, 720, 1280
    return c


# Per-paper frame budgets of qwen-vl-utils (`total_pixels` bounds the whole clip: tokens = total / factor²).
TIME_R1_TOTAL_PIXELS = 3584 * 28 * 28  # Time-R1's training script: 3,584 video tokens of Qwen2.5-VL
VIDEO_OPD_TOTAL_PIXELS = 8192 * 32 * 32  # Video-OPD §4.1 / App. D.1: at most 8,192 video tokens (Qwen3-VL)
TIMELENS_MAX_FRAMES = 448
# The clip a plan assumes for a per-clip token budget: the longest video the budget still holds at 2 fps
# (qwen-vl-utils' per-frame floor of 128 tokens takes over beyond it): ~60 s for Video-OPD's 8,192 tokens,
# ~30 s (Charades-STA's typical query video) for Time-R1's 3,584.
VIDEO_OPD_PLAN_SECONDS = 60.0
TIME_R1_PLAN_SECONDS = 30.0  # TimeLens' evaluation: 2 fps, at most 448 frames


def tvg_r1_sampling(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """TVG-R1 §4.1: 64 frames of 128x28x28 pixels, for training and inference."""
    c.data.nframes = 64
    c.data.max_pixels = 128 * 28 * 28
    return c


# What a resumed run may change without --config.resume_changed_config: how long it runs, how it logs,
# evaluates, checkpoints, lays out devices and reads data, and how the models compute (remat, attention
# kernel) — never what it learns from or how (optimizer, data, rewards, losses, seed, models). Note:
# `steps` is also the length of the learning-rate schedule, which is recomputed for the new total.
# `random_init` only permits what a preset without init_from does anyway (the weights are restored).
RESUMABLE_CHANGES = ("steps", "resume_changed_config", "log.*", "eval.*", "checkpoint.*", "mesh.*", "plan.*",
                     "distributed.*", "data.read_threads", "data.worker_count", "model.remat",
                     "model.attention_impl", "model.random_init", "teacher.remat", "teacher.attention_impl",
                     "teacher.random_init", "reference.remat", "reference.attention_impl")


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a.b": leaf} of a nested dict (an empty dict is a leaf)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def upgrade_saved_config(saved: dict) -> dict:
    """A run config saved (JSON) by an older vtg_jax, with the keys added since set to what that code did
    without them: no `random_init` (a preset was random-initialised), a teacher computing as build_model's
    old defaults (float32 parameters, no remat, attention "auto", the original rope rule), and a GRPO
    reference computing as `model` (it was built from that section). Keys present are kept."""
    out = copy.deepcopy(saved)
    model = out.get("model")
    if isinstance(model, dict):
        model.setdefault("random_init", False)
        out.setdefault("reference", {k: model[k] for k in COMPUTE_KEYS if k in model})
    teacher = out.get("teacher")
    if isinstance(teacher, dict):
        for key, old_default in (("random_init", False), ("param_dtype", "float32"), ("remat", "none"),
                                 ("attention_impl", "auto"), ("rope_index_rule", "original")):
            teacher.setdefault(key, old_default)
    return out


def config_changes(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (saved value, current value)} of the keys of two JSON run configs that differ,
    outside RESUMABLE_CHANGES ("(absent)" for a key only one of them has). A config saved before a key
    existed counts as holding the value that code used (`upgrade_saved_config`)."""
    old, new = _flatten(upgrade_saved_config(saved)), _flatten(current)
    allowed = lambda key: any(key == p or (p.endswith(".*") and key.startswith(p[:-1]))  # noqa: E731
                              for p in RESUMABLE_CHANGES)
    return {k: (old.get(k, "(absent)"), new.get(k, "(absent)")) for k in sorted(set(old) | set(new))
            if not allowed(k) and old.get(k, "(absent)") != new.get(k, "(absent)")}


def optim_config(c: Any) -> Any:
    """`train.optim.OptimConfig` of a run config (ConfigDict or the JSON dict a checkpoint saved)."""
    from vtg_jax.train.optim import OptimConfig

    o = c["optim"]
    steps = int(c["steps"])
    return OptimConfig(lr=float(o["lr"]), warmup_steps=min(int(o["warmup_steps"]), steps), total_steps=steps,
                       end_lr_ratio=float(o["end_lr_ratio"]), weight_decay=float(o["weight_decay"]),
                       b1=float(o["b1"]), b2=float(o["b2"]), eps=float(o["eps"]), clip_norm=float(o["clip_norm"]))


ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
DEMO_STUDENT = os.path.join(ASSETS, "synthetic_student")
DEMO_TEACHER = os.path.join(ASSETS, "synthetic_teacher")


def distillation_setting(c: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
    """The two settings of Video-OPD and its App. C baselines (configs/opd.py, op_rkd.py, op_fkd.py),
    locked: "" the README demo's shipped tiny models; "paper" Video-OPD §4.1 (Qwen3-VL-8B student,
    Qwen3-VL-32B teacher, lr 1e-6, batch 32, the Fig. 7 prompt)."""
    if arg == "paper":
        paper_scale(c, preset="qwen3-vl-8b", teacher="qwen3-vl-32b")
        c.data.template = "video_opd"
        c.data.total_pixels = VIDEO_OPD_TOTAL_PIXELS
        c.plan.video_seconds = VIDEO_OPD_PLAN_SECONDS
    elif arg:
        raise ValueError(f"unknown {c.algorithm} config arg {arg!r}: use '' or 'paper'")
    else:
        demo_models(c)
    c.lock()
    return c


def demo_models(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The README demo's distillation setting: the shipped tiny student and teacher (HF format, made by
    the commands in vtg_jax/assets/README.md) on the synthetic benchmark, sized for a CPU in minutes.
    The train split is smaller than the one they were trained on (quicker to generate); val is the
    same 200 videos (a split's videos depend only on the seed and their index)."""
    c.model.init_from = DEMO_STUDENT
    c.teacher.init_from = DEMO_TEACHER
    c.data.synthetic.num_train = 800
    c.steps = 400
    c.batch_size = 16
    c.optim.lr = 2e-4  # the student ended its SFT at lr ~0; 5e-4 and 1e-3 made its greedy answers worse
    c.optim.warmup_steps = 10
    c.eval.every = 200
    c.checkpoint.every = 200
    return c


def selection_setting(c: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    """The `select` section (`vtg_jax.run.select`): which records a later stage trains on.

    Video-OPD §4.1 keeps 2,500 of 96,586 records (TVDF for OPD, Time-R1's Gaussian for GRPO); the paper
    gives neither the top-k nor the TRPV threshold (App. B), so k = 4 samples and tau >= 0.5 here."""
    if method not in SELECT_METHODS:
        raise ValueError(f"unknown select method {method!r}: use one of {SELECT_METHODS}")
    c.select = ml_collections.ConfigDict(dict(
        method=method, num=200, pool=0,  # pool: the first N candidates of the train split (0 = all)
        samples=4, topk=4, temperature=1.0, batch_size=16,  # answers sampled per record; top-k by log-prob
        # tvdf: TRPV (0 = off); DBTP score kl | iou_gap | random; GWDS's c = 0.9, sigma = 0.2 (App. B.4)
        # are on the eq. 12 IoU-gap scale, so pair strategy=gwds with dbtp=iou_gap
        trpv_threshold=0.5, dbtp="kl", strategy="topk",
        eps1=0.8, eps2=0.4,  # tvg_r1 (TVG-R1 §4.1)
        exclude=""))  # comma-separated selected.jsonl files whose records are not candidates
    c.eval.splits = ()
    return c


# ------------------------------------------------------------------------------ fail-fast config checks
POLICY_FLAG = "--init_from (config.model.init_from)"


class IncompleteConfig(ValueError):
    """A run config misses fields a run needs (a checkpoint, the data, the tokenizer); the message names
    every one of them as its command-line flag."""


def needs_checkpoint(section: Any) -> bool:
    """True when a model section names no weights to start from: no `init_from`, and no preset or a
    real-size one without `random_init` (a tiny preset random-initialises, as the tests and demo do)."""
    if section.init_from:
        return False
    return not section.preset or (is_real_size(section.preset) and not section.random_init)


def uses_teacher(c: Any) -> bool:
    """Whether run config `c` builds its teacher (`registry.Algorithm.uses_teacher`)."""
    return registry.get(c.algorithm).uses_teacher(c)


def _run_needs(c: Any, where: str, policy_set: bool, teacher_set: bool) -> list[tuple[str, str]]:
    """(flag, the random-init flag that would also do, or "") of each field run config `c` misses;
    `where` is its place in the config ("" or "stages.<name>."), `policy_set` / `teacher_set` say that
    a pipeline fills the policy's checkpoint / the teacher's init_from."""
    out = []
    if c.algorithm == "eval":
        if not (c.eval.checkpoint or policy_set):
            out.append((POLICY_FLAG if where else "--config.eval.checkpoint", ""))
    elif not policy_set and needs_checkpoint(c.model):
        out.append((POLICY_FLAG, f"--config.{where}model.random_init=True" if c.model.preset else ""))
    if uses_teacher(c) and not teacher_set and needs_checkpoint(c.teacher):
        random = f"--config.{where}teacher.random_init=True" if c.teacher.preset else ""
        out.append((f"--config.{where}teacher.init_from", random))
    d = c.data
    if not d.synthetic.enabled:
        splits = ("train",) if c.algorithm in registry.TRAINING + ("select",) else tuple(c.eval.splits)
        out += [(f"--config.{where}data.{k}", "") for k in (*splits, "frame_store") if not d[k]]
        # "" = the tiny tokenizer, made for the tiny presets' 1,024-token vocabulary (tests, the demo's models)
        tiny_policy = bool(c.model.preset) and not is_real_size(c.model.preset)
        if not d.tokenizer and not tiny_policy:
            out.append((f"--config.{where}data.tokenizer", ""))
    return out


def _pipeline_needs(config: Any) -> list[tuple[str, str]]:
    """What the stages of a pipeline miss, leaving out the fields the pipeline fills itself
    (`run.pipeline`: each stage's policy from `--init_from` or the last training stage, every teacher
    from the pipeline's `teacher.init_from`, which is also the one flag named for missing teachers)."""
    out: list[tuple[str, str]] = []
    teachers: dict[str, str] = {}  # stage -> its random-init flag
    policy_set = bool(config.model.init_from)
    for name in config.order:
        stage = config.stages[name]
        own_policy = stage.eval.checkpoint if stage.algorithm == "eval" else stage.model.init_from
        teacher_set = bool(config.teacher.init_from)
        for flag, random in _run_needs(stage, f"stages.{name}.", policy_set or bool(own_policy), teacher_set):
            if flag.endswith(".teacher.init_from"):
                teachers[name] = random
            elif flag not in [f for f, _ in out]:  # the pipeline's --init_from is named once
                out.append((flag, random))
        policy_set = policy_set or stage.algorithm in registry.TRAINING  # its workdir is the next policy
    if teachers:
        random = ", ".join(r for r in teachers.values() if r)
        out.append((f"--config.teacher.init_from (the teacher of stages {', '.join(teachers)})", random))
    return out


def _needs(config: Any) -> list[tuple[str, str]]:
    return _pipeline_needs(config) if config.algorithm == "pipeline" else _run_needs(config, "", False, False)


def missing_fields(config: Any) -> list[str]:
    """The command-line flags of the fields `config` (a run or pipeline config) misses, e.g.
    ["--init_from (config.model.init_from)", "--config.teacher.init_from", "--config.data.train"]."""
    return [flag for flag, _ in _needs(config)]


def _given_paths(config: Any) -> list[tuple[str, str]]:
    """(config key, path) of the files and directories `config` names for a run to read: checkpoints
    and data, not the ones a pipeline makes itself ("@stage" references, stage workdirs)."""
    if config.algorithm == "pipeline":
        out = [("model.init_from", config.model.init_from), ("teacher.init_from", config.teacher.init_from)]
        for name in config.order:
            out += [(f"stages.{name}.{k}", v) for k, v in _given_paths(config.stages[name])]
        return [(k, v) for k, v in out if v and not v.startswith("@")]
    out = [("eval.checkpoint" if config.algorithm == "eval" else "model.init_from",
            config.eval.checkpoint if config.algorithm == "eval" else config.model.init_from)]
    if uses_teacher(config):
        out.append(("teacher.init_from", config.teacher.init_from))
    d = config.data
    keys = ("train_subset",) if d.synthetic.enabled else ("train", "val", "test", "frame_store", "tokenizer",
                                                         "train_subset")
    out += [(f"data.{k}", d[k]) for k in keys]
    if config.algorithm == "select":
        out += [("select.exclude", p.strip()) for p in config.select.exclude.split(",")]
    return [(k, v) for k, v in out if v and not v.startswith("@")]


def _absent(key: str, path: str) -> bool:
    if key.endswith("data.tokenizer"):
        return not os.path.isfile(os.path.join(path, "tokenizer.json"))
    if os.path.exists(path):
        return False
    # <run workdir>/checkpoints/<step> of a step not kept: build_model names the kept steps
    parent = os.path.dirname(os.path.normpath(path))
    return not (os.path.basename(parent) == CHECKPOINT_DIR and os.path.isdir(parent))


def require_complete(config: Any) -> None:
    """Stops a run before it touches devices or builds a model: raises `IncompleteConfig` naming every
    field `config` misses as its flag, then FileNotFoundError naming every path it gives that does not
    exist (a tokenizer directory without tokenizer.json counts as missing)."""
    needs = _needs(config)
    if needs:
        message = (f"the run config misses {len(needs)} field(s); set "
                   + ", ".join(flag for flag, _ in needs))
        random = [r for _, r in needs if r]
        if random:
            message += (". A real-size preset starts from its checkpoint: for random weights instead pass "
                        + ", ".join(random))
        raise IncompleteConfig(message)
    absent = [f"config.{key} {path!r}" + (" (no tokenizer.json)" if key.endswith("data.tokenizer") else "")
              for key, path in _given_paths(config) if _absent(key, path)]
    if absent:
        raise FileNotFoundError(f"the run config names {len(absent)} path(s) that do not exist: "
                                + ", ".join(absent))
