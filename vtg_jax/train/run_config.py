"""The run config every recipe in `configs/` starts from, and the paper-scale settings they share.

A run config is an ml_collections ConfigDict (DESIGN rule 2): `configs/<recipe>.py` builds it with
`base_config(algorithm)`, sets its recipe's values, and returns it locked, so that
`--config.optim.lr=1e-5` works and `--config.optim.lrr=1e-5` fails with the list of valid keys.

Sections (every recipe has all of them; an algorithm ignores what it does not use):

    algorithm         sft | grpo | opd | op_rkd | op_fkd | tempsamp | eval | select
    model             the trained policy: `preset` (random init) or `init_from` (an HF directory or one
                      of our run workdirs, whose latest checkpoint is read)
    teacher           OPD / OP-RKD / OP-FKD teacher, same two ways (never trained, never in the state)
    data              synthetic benchmark (generated and extracted once into `data.cache_dir`) or your
                      own jsonl + frame store + tokenizer; prompt template, answer format, buckets
    rollout           sampling for RL / OPD (G, max new tokens, temperature, top-p / top-k)
    grpo / opd / fkd / tempsamp / reward   loss and reward settings (the step factories' configs)
    optim             AdamW + warmup-cosine (`train.optim.OptimConfig`)
    mesh, distributed parallel layout (`parallel.mesh`, `parallel.distributed`)
    checkpoint, eval, log
    select            (select recipes only) model-scored data selection (`train.select`)

Pipelines (`configs/pipeline.py`) chain such configs as stages (`train.pipeline`).
"""
from __future__ import annotations

import os
from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

ALGORITHMS = ("sft", "grpo", "opd", "op_rkd", "op_fkd", "tempsamp", "eval", "select")

# The embedded default's models (vtg_jax/models/qwen_vl/presets.py) and data (the synthetic benchmark).
TINY_STUDENT = "qwen2.5-vl-synthetic"
TINY_TEACHER = "qwen2.5-vl-synthetic-teacher"


def base_config(algorithm: str) -> ml_collections.ConfigDict:
    """All sections with CPU-sized defaults on the synthetic benchmark (unlocked: recipes edit it)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    c = ml_collections.ConfigDict()
    c.algorithm = algorithm
    c.seed = 0
    # A resumed run whose config differs from its checkpoint's outside RESUMABLE_CHANGES stops and names
    # the keys; True continues anyway and logs the change (resume/config_changed, config_changes.jsonl).
    c.resume_changed_config = False
    c.steps = 200  # optimizer updates
    c.batch_size = 16  # prompts per update, all processes together
    c.micro_batches = 1  # gradient accumulation: batch_size / micro_batches prompts per forward

    c.model = ml_collections.ConfigDict(dict(
        preset=TINY_STUDENT, init_from="", dtype="float32", param_dtype="float32", freeze_vision=False,
        remat="none", attention_impl="auto", rope_index_rule="original"))
    c.teacher = ml_collections.ConfigDict(dict(preset="", init_from="", dtype="float32"))

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
    App. D.1; TempSamp-R1 App. B), Qwen model and tokenizer from HF directories, your own data.

    Fields a user must still set (`--config.model.init_from`, `--config.data.train`, ...) stay empty
    and the run stops with a message naming them."""
    c.model.preset = preset
    c.model.init_from = ""  # yours: --init_from=<HF dir>
    c.teacher.init_from = ""
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.remat = "full"
    c.model.freeze_vision = True
    c.teacher.preset = teacher
    c.teacher.dtype = "bfloat16"
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
    return c


# Per-paper frame budgets of qwen-vl-utils (`total_pixels` bounds the whole clip: tokens = total / factor²).
TIME_R1_TOTAL_PIXELS = 3584 * 28 * 28  # Time-R1's training script: 3,584 video tokens of Qwen2.5-VL
VIDEO_OPD_TOTAL_PIXELS = 8192 * 32 * 32  # Video-OPD §4.1 / App. D.1: at most 8,192 video tokens (Qwen3-VL)
TIMELENS_MAX_FRAMES = 448  # TimeLens' evaluation: 2 fps, at most 448 frames


def tvg_r1_sampling(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """TVG-R1 §4.1: 64 frames of 128x28x28 pixels, for training and inference."""
    c.data.nframes = 64
    c.data.max_pixels = 128 * 28 * 28
    return c


# What a resumed run may change without --config.resume_changed_config: how long it runs, how it logs,
# evaluates, checkpoints, lays out devices and reads data, and how the model computes (remat, attention
# kernel) — never what it learns from or how (optimizer, data, rewards, losses, seed, models). Note:
# `steps` is also the length of the learning-rate schedule, which is recomputed for the new total.
RESUMABLE_CHANGES = ("steps", "resume_changed_config", "log.*", "eval.*", "checkpoint.*", "mesh.*",
                     "distributed.*", "data.read_threads", "data.worker_count", "model.remat",
                     "model.attention_impl")


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a.b": leaf} of a nested dict (an empty dict is a leaf)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (saved value, current value)} of the keys of two JSON run configs that differ,
    outside RESUMABLE_CHANGES ("(absent)" for a key only one of them has)."""
    old, new = _flatten(saved), _flatten(current)
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
    """The `select` section (`vtg_jax.train.select`): which records a later stage trains on.

    Video-OPD §4.1 keeps 2,500 of 96,586 records (TVDF for OPD, Time-R1's Gaussian for GRPO); the paper
    gives neither the top-k nor the TRPV threshold (App. B), so k = 4 samples and tau >= 0.5 here."""
    from vtg_jax.train.select import METHODS

    if method not in METHODS:
        raise ValueError(f"unknown select method {method!r}: use one of {METHODS}")
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
