"""Data selection (`run.select`) and the paper pipelines (`configs/pipeline.py`, `run.pipeline`).

The selector wiring is checked on fixed model answers against hand-computed subsets; each pipeline runs
end to end on the shipped tiny student / teacher with a 16-video benchmark.
"""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import pytest

from loop_helpers import load_recipe, shrink
from vtg_jax.data.records import GroundingRecord, read_jsonl, write_jsonl


def _rec(i: int, span=(2.0, 4.0)) -> GroundingRecord:
    return GroundingRecord(video_id=f"v{i}", duration=10.0, query="q", spans=(span,), qid=f"q{i}")


def _pred(spans_per_record: list[list], logp=None) -> dict:
    """A `sample_predictions` result from hand-written answers (None = unparsable)."""
    n, m = len(spans_per_record), len(spans_per_record[0])
    spans = np.full((n, m, 2), np.nan)
    for i, row in enumerate(spans_per_record):
        for j, s in enumerate(row):
            if s is not None:
                spans[i, j] = s
    return {"spans": spans, "valid": np.isfinite(spans).all(-1), "texts": [[str(s) for s in row] for row in spans_per_record],
            "seq_logp": np.zeros((n, m)) if logp is None else np.asarray(logp, float), "loaded": np.ones(n, bool),
            "reverse_kl": np.full(n, np.nan), "skipped": 0}


def test_tvdf_selection_on_fixed_answers():
    from vtg_jax.run.select import _select_tvdf

    pool = [_rec(i) for i in range(5)]  # every GT is 2-4 s
    # teacher top-2 IoUs: r0 (1+1)/2=1, r1 (1+0)/2=.5, r2 0, r3 (.5+.5)/2=.5, r4 1
    teacher = _pred([[(2, 4), (2, 4)], [(2, 4), (6, 8)], [None, (6, 8)], [(2, 3), (3, 4)], [(2, 4), (2, 4)]])
    # student: r0 1, r1 0, r2 1, r3 .5, r4 0  (its own samples: KL given explicitly)
    student = _pred([[(2, 4), (2, 4)], [(6, 8), (6, 8)], [(2, 4), (2, 4)], [(2, 3), (3, 4)], [None, None]])
    student["reverse_kl"] = np.asarray([0.1, 5.0, 9.0, 3.0, 4.0])
    s = ml_collections.ConfigDict(dict(topk=2, num=2, trpv_threshold=0.5, dbtp="kl", strategy="topk"))
    # TRPV (tau >= .5) keeps r0, r1, r3, r4; the two largest KLs among them: r1 (5.0) then r4 (4.0)
    idx, stats, cols = _select_tvdf(s, student, teacher, pool, seed=0)
    assert idx.tolist() == [1, 4] and stats["n_reliable"] == 4
    np.testing.assert_allclose(cols["teacher_iou"], [1, .5, 0, .5, 1])
    np.testing.assert_allclose(cols["student_iou"], [1, 0, 1, .5, 0])
    # delta = tau - sigma on the reliable ones: r0 0, r1 .5, r3 0, r4 1 -> r4, r1
    s.dbtp = "iou_gap"
    assert _select_tvdf(s, student, teacher, pool, seed=0)[0].tolist() == [4, 1]
    # TRPV off: r2 (KL 9) comes first
    s.dbtp, s.trpv_threshold = "kl", 0.0
    assert _select_tvdf(s, student, teacher, pool, seed=0)[0].tolist() == [2, 1]
    # a record whose video could not be loaded is never a candidate
    student["loaded"][2] = False
    assert _select_tvdf(s, student, teacher, pool, seed=0)[0].tolist() == [1, 4]


def test_topk_uses_the_highest_log_prob_answers():
    from vtg_jax.run.select import _mean_topk_iou

    pred = _pred([[(6, 8), (2, 4), (2, 3)]], logp=[[-5.0, -1.0, -2.0]])
    # the top-2 by log-prob are samples 1 (IoU 1) and 2 (IoU .5)
    np.testing.assert_allclose(_mean_topk_iou(pred, [_rec(0)], 2), [0.75])


def test_tvg_r1_subsets_on_fixed_answers():
    from vtg_jax.run.select import _select_tvg_r1

    pool = [_rec(i) for i in range(4)]
    # best IoU per record: r0 1.0 (sample 1), r1 .5, r2 0 (unparsable), r3 .8 (not > .8)
    ann = _pred([[(6, 8), (2, 4)], [(2, 3), None], [None, None], [(2.0, 3.6), (6, 7)]])
    s = ml_collections.ConfigDict(dict(eps1=0.8, eps2=0.4))
    cold, stats, cols, more = _select_tvg_r1(s, ann, pool)
    assert cold.tolist() == [0] and more["subsets"]["rl"].tolist() == [1, 3]
    assert more["best"][0] == str((2, 4))  # the answer kept as r0's cold-start target
    np.testing.assert_allclose(cols["iou"], [1.0, 0.5, 0.0, 0.8])
    assert stats["rl"]["n_excluded"] == 1


def test_time_r1_prefers_iou_near_0_3():
    from vtg_jax.run.select import _select_time_r1

    pool = [_rec(i) for i in range(3)]
    # IoUs 1.0, 0.3 (2-4 vs 2-4.. built below), 0.0
    pred = _pred([[(2, 4)], [(2.0, 2.6)], [(6, 8)]])
    s = ml_collections.ConfigDict(dict(topk=1, num=1))
    picks = [int(_select_time_r1(s, pred, pool, seed)[0][0]) for seed in range(40)]
    # p ∝ exp(-(x-.3)^2 / .08): IoU .3 has weight 1, 0.0 weight .32, 1.0 weight .002
    assert picks.count(1) > picks.count(2) > picks.count(0)


def test_train_subset_restricts_and_keeps_completions(tmp_path):
    from vtg_jax.run.data_setup import restrict_to_subset

    train = [_rec(i) for i in range(4)]
    sub = tmp_path / "sub.jsonl"
    write_jsonl([train[2], GroundingRecord(**{**train[0].__dict__, "extra": {"completion": "<think>x</think>"}})],
                str(sub))
    out = restrict_to_subset(train, str(sub))
    assert [r.qid for r in out] == ["q2", "q0"] and out[1].extra["completion"] == "<think>x</think>"
    write_jsonl([_rec(9)], str(sub))
    with pytest.raises(ValueError, match="not in the train split"):
        restrict_to_subset(train, str(sub))


def test_sft_target_is_the_kept_completion():
    from vtg_jax.data.run_data import RecordTransform

    transform = RecordTransform.__new__(RecordTransform)  # answer() needs no frame store
    transform.answer_format = "{start:.1f} to {end:.1f}"
    assert transform.answer(_rec(0)) == "2.0 to 4.0"
    kept = GroundingRecord(**{**_rec(0).__dict__, "extra": {"completion": "<think>it</think><time>2 to 4</time>"}})
    assert transform.answer(kept) == "<think>it</think><time>2 to 4</time>"


def test_pipeline_refs_resolve(tmp_path):
    from vtg_jax.run.pipeline import resolve_ref

    stages = ml_collections.ConfigDict({"sel": {"algorithm": "select"}, "opd": {"algorithm": "opd"}})
    w = str(tmp_path)
    assert resolve_ref("@sel", w, stages) == os.path.join(w, "sel", "selected.jsonl")
    assert resolve_ref("@sel/rl", w, stages) == os.path.join(w, "sel", "rl.jsonl")
    assert resolve_ref("@opd", w, stages) == os.path.join(w, "opd")
    assert resolve_ref("/abs/path", w, stages) == "/abs/path"
    with pytest.raises(ValueError, match="names no stage"):
        resolve_ref("@nope", w, stages)


@pytest.mark.parametrize("name", ["video_opd_rounds", "tvg_r1"])
def test_pipeline_teacher_replaces_every_stage_teacher(tmp_path, name):
    from vtg_jax.run.pipeline import _link

    c = load_recipe("pipeline", name)
    with c.unlocked():
        c.teacher.init_from = "/teachers/large"
    own = {n: st.teacher.init_from for n, st in c.stages.items() if "teacher" in st}  # SFT / GRPO have none
    for n in c.order:
        _link(c.stages[n], str(tmp_path), c, policy=str(tmp_path / "policy"), pending_subset="")
    for n, st in c.stages.items():
        uses = st.algorithm in ("opd", "select")  # the distillation and selection stages of these recipes
        assert "teacher" in st or not uses, n
        if "teacher" in st:
            assert st.teacher.init_from == ("/teachers/large" if uses else own[n]), n
    assert any(st.algorithm == "select" for st in c.stages.values())


@pytest.mark.parametrize("scale", ["", ",paper"])
@pytest.mark.parametrize("name", ["video_opd", "video_opd_rounds", "grpo_time_r1", "tvg_r1", "tempsamp_hybrid"])
def test_pipeline_configs(name, scale):
    c = load_recipe("pipeline", name + scale)
    assert sorted(c.order) == sorted(c.stages) and c.algorithm == "pipeline"  # the ConfigDict sorts its keys
    with pytest.raises((AttributeError, KeyError)):
        c.stages[c.order[0]].optim.lrr = 1.0  # locked through the stages
    for stage in c.stages.values():
        assert stage.model.init_from == ""  # chained: the pipeline's current policy
        assert stage.data.synthetic.enabled == (not scale)
        if scale and "optim" in stage:  # training stages (selection and evaluation train nothing)
            assert stage.optim.lr == 1e-6  # the papers' lr (Video-OPD §4.1, TVG-R1, TempSamp-R1 App. B)
        if stage.algorithm == "select" and scale and name != "tvg_r1":
            assert stage.select.num == 2500  # Video-OPD §4.1
    if name == "tvg_r1":
        assert (c.stages.select.select.eps1, c.stages.select.select.eps2) == (0.8, 0.4)  # TVG-R1 §4.1
        assert c.stages.grpo.data.train_subset == "@select/rl"
    if name == "video_opd_rounds":
        assert c.stages.r3_select.select.exclude == "@r1_select,@r2_select"
        assert [c.stages[f"r{r}_opd"].eval.at_start for r in (1, 2, 3)] == [True, False, False]
        if not scale:
            assert c.stages.r1_opd.steps == 120  # three rounds within a 15-minute row
    if name == "tempsamp_hybrid":
        assert c.stages.cot.reward == "tempsamp_r1" and c.stages.cot.data.template == "tempsamp_r1_cot"
    with pytest.raises(ValueError, match="unknown pipeline"):
        load_recipe("pipeline", "no_such_pipeline")


# ------------------------------------------------------------------------------ pipelines end to end
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("pipeline_cache"))


def _tiny_pipeline(name: str, cache_dir: str):
    """configs/pipeline.py:<name> on the shipped student / teacher, every stage cut to seconds."""
    c = load_recipe("pipeline", name)
    with c.unlocked():
        for stage in c.stages.values():
            shrink(stage, cache_dir, tiny_models=False)
            if stage.algorithm == "select":
                stage.select.update(dict(pool=12, samples=2, topk=2, batch_size=4, num=4, trpv_threshold=0.0))
                stage.eval.splits = ()
            if stage.algorithm == "eval":
                stage.eval.splits = ("val",)
            if "cot" in stage.data.template:  # the CoT prompt is longer than the tiny buckets' default
                stage.rollout.max_new_tokens = stage.eval.max_new_tokens = 24
    return c


# video_opd_rounds (~3 min) is slow: tvg_r1 checks the chaining in the default suite
@pytest.mark.parametrize("name", [pytest.param("video_opd_rounds", marks=pytest.mark.slow), "tvg_r1"])
def test_pipeline_runs_and_chains(tmp_path, cache, name):
    from vtg_jax.run.pipeline import run_pipeline

    c = _tiny_pipeline(name, cache)
    if name == "tvg_r1":
        with c.unlocked():
            # the tiny teacher on these off-distribution videos: cold start = any overlap, RL = the rest
            c.stages.select.select.eps1, c.stages.select.select.eps2 = 0.0, 0.0
    report = run_pipeline(c, str(tmp_path))
    stages = report["stages"]
    assert list(stages) == list(c.order)
    saved = json.load(open(tmp_path / "pipeline.json"))
    assert list(saved["stages"]) == list(c.order)
    if name == "video_opd_rounds":
        chosen = [{r.qid for r in read_jsonl(str(tmp_path / f"r{k}_select" / "selected.jsonl"))} for k in (1, 2, 3)]
        assert all(len(s) == 4 for s in chosen)
        assert not (chosen[0] & chosen[1]) and not (chosen[2] & (chosen[0] | chosen[1]))  # new records each round
        assert stages["r2_select"]["inputs"]["init_from"] == str(tmp_path / "r1_opd")  # the round-1 student
        assert stages["r2_opd"]["inputs"]["train_subset"] == str(tmp_path / "r2_select" / "selected.jsonl")
        for k in (1, 2, 3):
            assert stages[f"r{k}_opd"]["steps"] == 2 and "eval/mIoU" in stages[f"r{k}_opd"]["eval"]
    else:
        cold = list(read_jsonl(str(tmp_path / "select" / "coldstart.jsonl")))
        rl = list(read_jsonl(str(tmp_path / "select" / "rl.jsonl")))
        assert cold and all(r.extra.get("completion") for r in cold)
        assert not {r.qid for r in cold} & {r.qid for r in rl}
        assert stages["sft"]["inputs"]["train_subset"] == str(tmp_path / "select" / "selected.jsonl")
        assert stages["grpo"]["inputs"]["train_subset"] == str(tmp_path / "select" / "rl.jsonl")
        assert stages["grpo"]["inputs"]["init_from"] == str(tmp_path / "sft")
    # a rerun finds every stage finished and runs nothing
    again = run_pipeline(_tiny_pipeline(name, cache) if name != "tvg_r1" else c, str(tmp_path))
    assert not any(s["ran_now"] for s in again["stages"].values())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["video_opd", "grpo_time_r1", "tempsamp_hybrid"])
def test_other_pipelines_run_end_to_end(tmp_path, cache, name):
    from vtg_jax.run.pipeline import run_pipeline

    report = run_pipeline(_tiny_pipeline(name, cache), str(tmp_path))
    assert list(report["stages"]) == list(_tiny_pipeline(name, cache).order)
    for st in report["stages"].values():
        if st["algorithm"] == "eval":
            assert st["val"]["model"]["n"] > 0
        elif st["algorithm"] != "select":
            assert st["steps"] == 2 and "eval/mIoU" in st["eval"]
