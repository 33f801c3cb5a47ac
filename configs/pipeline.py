"""python -m vtg_jax.main --config=configs/pipeline.py:video_opd --workdir=/tmp/vtg_video_opd

The papers' recipes as chained stages (`vtg_jax.run.pipeline`), each stage a complete recipe config
run in <workdir>/<stage>; override any of them with --config.stages.<stage>.<key>=<value>.

Args (`--config=configs/pipeline.py:<name>[,paper]`); without ",paper" tiny CPU settings on the shipped
student / teacher and the synthetic benchmark, with it each stage's paper-scale recipe (your checkpoints
and data: --init_from=<student HF dir> and, per stage, --config.stages.<s>.teacher.init_from / .data.*):
  video_opd        Video-OPD §3.2 / §4.1: TVDF selection (TRPV + DBTP by reverse KL, Top-k) -> OPD
  video_opd_rounds Video-OPD §4.3, Fig. 5 / Table 6: three rounds of (TVDF with the current student on records
                   not chosen before -> OPD), each round's OPD evaluated
  grpo_time_r1     Video-OPD's GRPO baseline (App. D.1): Time-R1 Gaussian difficulty selection -> GRPO
  tvg_r1           TVG-R1 §3.1 / §4.1: annotate with the teacher, cold-start SFT on IoU > eps1 with the
                   annotator's answers, then GRPO on IoU >= eps2 minus the cold-start records
  tempsamp_hybrid  TempSamp-R1 §3.3 hybrid CoT: TempSamp on the non-CoT prompt, then on the CoT prompt with
                   the <think>/<answer> format reward, then greedy evaluation in both modes
"""
import importlib.util
import os

import ml_collections

from vtg_jax.run.config import DEMO_STUDENT

_HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = ("video_opd", "video_opd_rounds", "grpo_time_r1", "tvg_r1", "tempsamp_hybrid")


# each recipe's paper-scale argument (configs/<recipe>.py docstrings)
PAPER_ARGS = {"select": "{method},paper", "opd": "paper", "grpo": "video_opd", "sft": "tvg_r1", "tempsamp": "paper",
              "eval": "paper"}


def recipe(name: str, arg: str = "", paper: bool = False) -> ml_collections.ConfigDict:
    """configs/<name>.py:<arg> (its paper-scale variant when `paper`), unlocked for the pipeline to edit
    (it is locked again with the pipeline)."""
    spec = importlib.util.spec_from_file_location(f"vtg_recipe_{name}", os.path.join(_HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if paper:
        arg = PAPER_ARGS[name].format(method=arg) if name == "select" else (arg or PAPER_ARGS[name])
    c = module.get_config(arg)
    c.unlock()
    c.model.init_from = ""  # the pipeline's current policy
    return c


def _select(method: str, paper: bool, **fields) -> ml_collections.ConfigDict:
    c = recipe("select", method, paper)
    c.select.update(fields)
    return c


def _eval(paper: bool, template: str = "", max_new_tokens: int = 0) -> ml_collections.ConfigDict:
    c = recipe("eval", "", paper)
    c.eval.splits = ("val",)
    c.data.template = template or c.data.template
    c.eval.max_new_tokens = max_new_tokens or c.eval.max_new_tokens
    return c


def _short(c: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
    """A CPU-sized training stage: `steps` updates, evaluated once at the end."""
    c.steps = steps
    c.eval.every = None
    c.checkpoint.every = steps
    return c


def stages_of(name: str, paper: bool = False) -> dict:
    """The stages of pipeline `name`. At paper scale the stages are the recipes' paper variants as they are
    (set each stage's steps to one epoch of its subset: --config.stages.<s>.steps)."""
    tiny = not paper
    if name == "video_opd":
        opd = recipe("opd", "", paper)
        return {"select": _select("tvdf", paper), "opd": _short(opd, 200) if tiny else opd}
    if name == "video_opd_rounds":
        out, chosen = {}, []
        for r in (1, 2, 3):
            out[f"r{r}_select"] = _select("tvdf", paper, exclude=",".join(chosen))
            opd = recipe("opd", "", paper)
            if tiny:  # 120 updates a round keeps the three rounds within a 15-minute row on one core
                _short(opd, 120)
            if r > 1:  # round r starts where round r-1's final evaluation left the student
                opd.eval.at_start = False
            out[f"r{r}_opd"] = opd
            chosen.append(f"@r{r}_select")
        return out
    if name == "grpo_time_r1":
        grpo = recipe("grpo", "", paper)
        grpo.eval.every = None
        return {"select": _select("time_r1", paper), "grpo": grpo}
    if name == "tvg_r1":
        sft, grpo = recipe("sft", "", paper), recipe("grpo", "tvg_r1" if paper else "", paper)
        if tiny:  # a short cold start from the student, at the lr its GRPO uses
            _short(sft, 100)
            sft.optim.lr, sft.optim.warmup_steps = 3e-4, 0
        grpo.data.train_subset = "@select/rl"
        grpo.eval.every = None
        return {"select": _select("tvg_r1", paper, num=0), "sft": sft, "grpo": grpo}
    if name == "tempsamp_hybrid":
        # TempSamp-R1 Table 6's last rows: one non-CoT phase, then one CoT phase with the format reward. The
        # ground-truth (off-policy) answer is written in each phase's answer format.
        plain, cot = recipe("tempsamp", "", paper), recipe("tempsamp", "", paper)
        plain.data.template, cot.data.template = "tempsamp_r1", "tempsamp_r1_cot"
        digits = ".2f" if paper else ".1f"  # the tiny student answers with one decimal
        ans = f"<answer>{{start:{digits}}} to {{end:{digits}}}</answer>"
        plain.data.answer_format = ans
        cot.data.answer_format = f"<think>{{start:{digits}}} to {{end:{digits}}}</think>{ans}"
        plain.reward, cot.reward = "iou_only", "tempsamp_r1"
        if tiny:
            plain.rollout.max_new_tokens, cot.rollout.max_new_tokens = 24, 48
        for c in (plain, cot):
            c.eval.every = None
            c.eval.max_new_tokens = c.rollout.max_new_tokens
        return {"non_cot": plain, "cot": cot,
                "eval_non_cot": _eval(paper, "tempsamp_r1", plain.rollout.max_new_tokens),
                "eval_cot": _eval(paper, "tempsamp_r1_cot", cot.rollout.max_new_tokens)}
    raise ValueError(f"unknown pipeline {name!r}: use one of {NAMES}")


def get_config(arg: str = "video_opd"):
    name, _, scale = (arg or "video_opd").partition(",")
    if scale not in ("", "paper"):
        raise ValueError(f"unknown pipeline arg {arg!r}: use '<name>' or '<name>,paper'")
    stages = stages_of(name, paper=scale == "paper")
    c = ml_collections.ConfigDict()
    c.algorithm = "pipeline"
    c.name = name
    # the starting policy (--init_from): the shipped student, or yours at paper scale
    c.model = ml_collections.ConfigDict(dict(init_from="" if scale else DEMO_STUDENT))
    c.seed = -1  # >= 0: every stage's seed (a table row's seeds are runs of one command)
    # set: the teacher of every stage that uses one (OPD-family training, selection), e.g. Table 3's
    # larger teacher for a whole recipe; "" = each stage's own (the shipped teacher, or yours per stage)
    c.teacher = ml_collections.ConfigDict(dict(init_from=""))
    c.cache_dir = ""  # "" = <workdir>/data; share one between pipelines to make the benchmark once
    c.order = tuple(stages)
    c.stages = ml_collections.ConfigDict(stages)
    c.lock()
    return c
