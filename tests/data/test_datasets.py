"""Each annotation adapter on a small fixture in its public format, malformed entries included."""
import json
import math

import pytest

from vtg_jax.data import datasets
from vtg_jax.data.datasets import DatasetFormatError, load_dataset
from vtg_jax.data.records import GroundingRecord, write_jsonl


def _write(path, text):
    path.write_text(text)
    return path


def _check_invariants(records, stats):
    for r in records:
        r.validate()
    assert stats.read == stats.kept + stats.num_dropped
    assert stats.kept == len(records)


# ------------------------------------------------------------------ Charades-STA


CHARADES_TXT = """\
AO8RW 0.0 6.9##a person is putting a book on a shelf.
AO8RW 8.2 3.1##person opens the door.
Y6R7T 24.3 40.0##a person eats a sandwich.
Y6R7T 31.0 35.0##person drinks.
NODUR 1.0 2.0##this video has no duration.
broken line without separator
ZZZZZ 1.0 nan##nan end.
AO8RW 40.0 50.0##entirely after the end.

ABCDE 1.0 2.0##   
"""
CHARADES_CSV = "id,subject,scene,length\nAO8RW,x,kitchen,33.67\nY6R7T,y,hall,30.5\nZZZZZ,z,hall,10\nABCDE,z,hall,10\n"


def test_charades_sta_with_csv_durations(tmp_path):
    txt = _write(tmp_path / "charades_sta_test.txt", CHARADES_TXT)
    csv = _write(tmp_path / "Charades_v1_test.csv", CHARADES_CSV)
    records, stats = datasets.load_charades_sta(txt, durations=csv)
    _check_invariants(records, stats)
    assert [(r.video_id, r.spans, r.query, r.qid) for r in records] == [
        ("AO8RW", ((0.0, 6.9),), "a person is putting a book on a shelf.", "AO8RW#0"),
        ("AO8RW", ((3.1, 8.2),), "person opens the door.", "AO8RW#1"),
        ("Y6R7T", ((24.3, 30.5),), "a person eats a sandwich.", "Y6R7T#2"),
    ]
    assert stats.as_dict() == {
        "read": 9, "kept": 3, "dropped/missing_duration": 1, "dropped/unparsable": 1, "dropped/bad_number": 1,
        "dropped/no_valid_span": 2, "dropped/missing_field": 1, "fixed/swapped_span": 1,
        "fixed/clipped_span": 1,
    }
    assert records[0].duration == pytest.approx(33.67) and records[0].source == "charades_sta"


def test_charades_sta_manifest_and_video_exists(tmp_path):
    txt = _write(tmp_path / "c.txt", "AO8RW 0.0 6.9##one.\nY6R7T 1 2##two.\nQQQQQ 1 2##three.\n")
    manifest = {"AO8RW": {"duration": 20.0, "num_frames": 40}, "Y6R7T": 15.0}
    records, stats = datasets.load_charades_sta(txt, manifest=manifest)
    assert [(r.video_id, r.duration) for r in records] == [("AO8RW", 20.0), ("Y6R7T", 15.0)]
    assert stats.as_dict() == {"read": 3, "kept": 2, "dropped/missing_duration": 1}
    # Durations from a mapping, existence from a predicate.
    records, stats = datasets.load_charades_sta(txt, durations={"AO8RW": 9, "Y6R7T": 9, "QQQQQ": 9},
                                                video_exists=lambda v: v != "Y6R7T")
    assert [r.video_id for r in records] == ["AO8RW", "QQQQQ"]
    assert stats.as_dict() == {"read": 3, "kept": 2, "dropped/missing_video": 1}
    # Manifest as the existence check while durations come from the csv.
    records, stats = datasets.load_charades_sta(txt, durations={"AO8RW": 9, "Y6R7T": 9, "QQQQQ": 9},
                                                manifest={"QQQQQ": {}})
    assert [r.video_id for r in records] == ["QQQQQ"]
    assert stats.dropped["missing_video"] == 2


def test_charades_sta_errors(tmp_path):
    txt = _write(tmp_path / "c.txt", "AO8RW 0.0 6.9##one.\n")
    with pytest.raises(ValueError, match="durations"):
        datasets.load_charades_sta(txt)
    with pytest.raises(DatasetFormatError):
        datasets.load_charades_sta(tmp_path / "missing.txt", durations={})
    garbage = _write(tmp_path / "g.txt", "this is not\ncharades at all\n")
    with pytest.raises(DatasetFormatError, match="format"):
        datasets.load_charades_sta(garbage, durations={})


def test_reversed_span_drop_policy(tmp_path):
    txt = _write(tmp_path / "c.txt", "AO8RW 8.2 3.1##reversed.\nAO8RW 1 2##fine.\n")
    records, stats = datasets.load_charades_sta(txt, durations={"AO8RW": 30}, reversed_spans="drop")
    assert [r.query for r in records] == ["fine."]
    assert stats.as_dict() == {"read": 2, "kept": 1, "dropped/no_valid_span": 1}
    with pytest.raises(ValueError, match="reversed_spans"):
        datasets.load_charades_sta(txt, durations={}, reversed_spans="bogus")


# ------------------------------------------------------------------ ActivityNet Captions


def test_activitynet(tmp_path):
    data = {
        "v_a": {"duration": 100.0, "timestamps": [[0, 10], [90, 120], [50, 40]],
                "sentences": ["first.", "runs past the end.", "reversed."]},
        "v_b": {"duration": 0, "timestamps": [[1, 2]], "sentences": ["zero duration."]},
        "v_c": {"duration": float("nan"), "timestamps": [[1, 2]], "sentences": ["nan duration."]},
        "v_d": {"duration": 30, "timestamps": [[1, 2], [3, 4]], "sentences": ["only one sentence."]},
        "v_e": {"duration": 30, "timestamps": [[31, 40]], "sentences": ["outside."]},
        "v_f": "not an entry",
        "v_g": {"duration": 30, "timestamps": [[1, None]], "sentences": ["missing end."]},
    }
    path = tmp_path / "val_1.json"
    path.write_text(json.dumps(data))  # NaN is written as the bare NaN token, as Python's json does
    records, stats = load_dataset("activitynet", path)
    _check_invariants(records, stats)
    assert [(r.video_id, r.qid, r.spans) for r in records] == [
        ("v_a", "v_a#0", ((0.0, 10.0),)),
        ("v_a", "v_a#1", ((90.0, 100.0),)),
        ("v_a", "v_a#2", ((40.0, 50.0),)),
        ("v_d", "v_d#0", ((1.0, 2.0),)),
    ]
    assert stats.as_dict() == {
        "read": 10, "kept": 4, "dropped/bad_duration": 1, "dropped/bad_number": 1, "dropped/missing_field": 2,
        "dropped/no_valid_span": 1, "dropped/unparsable": 1, "fixed/clipped_span": 1, "fixed/swapped_span": 1,
    }


def test_activitynet_bad_file(tmp_path):
    with pytest.raises(DatasetFormatError):
        load_dataset("activitynet", _write(tmp_path / "x.json", "{not json"))
    with pytest.raises(DatasetFormatError, match="map video ids"):
        load_dataset("activitynet", _write(tmp_path / "y.json", "[1, 2]"))
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("no_such_dataset", tmp_path / "y.json")


# ------------------------------------------------------------------ QVHighlights


def test_qvhighlights(tmp_path):
    lines = [
        {"qid": 1, "query": "a dog runs", "duration": 150, "vid": "abc_60.0_210.0",
         "relevant_windows": [[10, 14], [140, 152]], "relevant_clip_ids": [5, 6, 70, 80],
         "saliency_scores": [[1, 2, 3], [4, 4, 4], [0, 1, 0], [2, 2, 2]]},
        {"qid": 2, "query": "a cat", "duration": 150, "vid": "def_0.0_150.0",
         "relevant_windows": [[0, 2], [150, 160]], "relevant_clip_ids": [0, 1],
         "saliency_scores": [[1, 1, 1]]},
        {"qid": 3, "query": "test split has no windows", "duration": 150, "vid": "ghi_0.0_150.0"},
        {"qid": 4, "query": "", "duration": 150, "vid": "jkl", "relevant_windows": [[1, 2]]},
        {"qid": 5, "query": "negative duration", "duration": -3, "vid": "mno", "relevant_windows": [[1, 2]]},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\n{broken json\n\n"
    records, stats = load_dataset("qvhighlights", _write(tmp_path / "highlight_val_release.jsonl", text))
    _check_invariants(records, stats)
    assert [(r.qid, r.video_id, r.spans) for r in records] == [
        ("1", "abc_60.0_210.0", ((10.0, 14.0), (140.0, 150.0))),
        ("2", "def_0.0_150.0", ((0.0, 2.0),)),
    ]
    # clip 80 (seconds 160-162) lies past ceil(150/2)=75 clips and is removed; qid 2's lengths differ.
    assert records[0].saliency == ((5, (1.0, 2.0, 3.0)), (6, (4.0, 4.0, 4.0)), (70, (0.0, 1.0, 0.0)))
    assert records[1].saliency is None
    assert stats.as_dict() == {
        "read": 6, "kept": 2, "dropped/bad_duration": 1, "dropped/missing_field": 2, "dropped/unparsable": 1,
        "fixed/clipped_span": 1, "fixed/removed_span": 1, "fixed/saliency_clipped": 1, "fixed/saliency_dropped": 1,
    }


# ------------------------------------------------------------------ TimeLens / Time-R1 (flat formats)


def test_timelens_list_with_aliases(tmp_path):
    data = [
        {"video": "charades/AO8RW.mp4", "duration": 30.0, "query": "person sits.", "span": [[1.5, 4.0]]},
        {"video_path": "/x/v2.mkv", "duration": "25.5", "caption": "alias keys.", "timestamps": [3, 6], "qid": "q7"},
        {"video_id": "v3", "duration": 20, "sentence": "string span.", "span": "2.0 - 5.5"},
        {"vid": "v4", "duration": 20, "query": "dict span.", "span": {"start": 5, "end": 25}},
        {"video": "v5", "duration": 20, "query": "no span."},
        {"video": "v6", "duration": 20, "query": "three numbers.", "span": [1, 2, 3]},
        {"duration": 20, "query": "no video.", "span": [1, 2]},
        {"video": "v8", "query": "no duration anywhere.", "span": [1, 2]},
        {"video": "v9", "duration": True, "query": "bool duration.", "span": [1, 2]},
        42,
    ]
    records, stats = load_dataset("timelens", _write(tmp_path / "charades-timelens.json", json.dumps(data)))
    _check_invariants(records, stats)
    assert [(r.video_id, r.duration, r.query, r.spans, r.qid) for r in records] == [
        ("AO8RW", 30.0, "person sits", ((1.5, 4.0),), "AO8RW#0"),  # TimeLens drops the trailing period
        ("v2", 25.5, "alias keys", ((3.0, 6.0),), "q7"),
        ("v3", 20.0, "string span", ((2.0, 5.5),), "v3#2"),
        ("v4", 20.0, "dict span", ((5.0, 20.0),), "v4#3"),
    ]
    assert records[0].extra["video"] == "charades/AO8RW.mp4" and records[0].source == "timelens"
    assert stats.as_dict() == {
        "read": 10, "kept": 4, "dropped/bad_number": 1, "dropped/missing_duration": 1,
        "dropped/missing_field": 3, "dropped/unparsable": 1, "fixed/clipped_span": 1,
    }


def test_timelens_grouped_dict_and_durations(tmp_path):
    data = {
        "vidA": {"duration": 60, "queries": ["q one.", "q two.", "q three."], "spans": [[0, 5], [[10, 20], [30, 40]]]},
        "vidB": {"query": "flat under a key.", "span": [1, 2]},
    }
    records, stats = load_dataset("timelens", _write(tmp_path / "t.json", json.dumps(data)),
                                  durations={"vidB": 9.0})
    assert [(r.video_id, r.query, r.spans, r.duration) for r in records] == [
        ("vidA", "q one", ((0.0, 5.0),), 60.0),
        ("vidA", "q two", ((10.0, 20.0), (30.0, 40.0)), 60.0),
        ("vidB", "flat under a key", ((1.0, 2.0),), 9.0),
    ]
    assert stats.as_dict() == {"read": 4, "kept": 3, "dropped/missing_field": 1}


def test_time_r1_json_and_jsonl(tmp_path):
    data = [
        {"video": "/data/anet/v_xyz.mp4", "problem": "the man jumps.", "solution": [12.0, 20.5], "duration": 60},
        {"video_path": "tr1.mp4", "query": "answer tag.", "solution": "<answer>3.5 to 7.25</answer>",
         "duration": 10},
        {"video": "tr2.mp4", "problem": "garbage solution.", "solution": "no numbers here", "duration": 10},
        {"video": "tr3.mp4", "problem": "inf.", "timestamp": [1, "inf"], "duration": 10},
    ]
    expected = [("v_xyz", "the man jumps", ((12.0, 20.5),)), ("tr1", "answer tag", ((3.5, 7.25),))]  # Time-R1's
    for name, text in (("a.json", json.dumps(data)), ("a.jsonl", "\n".join(map(json.dumps, data)))):
        records, stats = load_dataset("time_r1", _write(tmp_path / name, text))
        assert [(r.video_id, r.query, r.spans) for r in records] == expected
        assert stats.as_dict() == {"read": 4, "kept": 2, "dropped/bad_number": 2}
        assert {r.source for r in records} == {"time_r1"}
    with pytest.raises(DatasetFormatError):
        load_dataset("time_r1", _write(tmp_path / "bad.json", "not json\nat all\n"))
    with pytest.raises(DatasetFormatError):
        load_dataset("time_r1", _write(tmp_path / "num.json", "3"))


# ------------------------------------------------------------------ NExT-GQA


def test_next_gqa(tmp_path):
    gsub = {
        "1001": {"duration": 34, "fps": 29.97, "location": {"1": [[1.2, 5.8]], "3": [[12.1, 17.1], [20.0, 40.0]],
                                                           "9": [[1, 2]]}},
        "1002": {"duration": 20, "fps": 30, "location": {"1": [[25, 30]], "2": [[3, 1]]}},
        "1003": {"duration": 20, "location": "broken"},
    }
    csv_text = (
        "video_id,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n"
        "1001,1000,640,480,why did the baby cry,fell down,1,CW,laughed,fell down,slept,ate,ran\n"
        "1001,1000,640,480,what happened after,3,3,TN,a,b,c,d,e\n"
        "1001,1000,640,480,an ungrounded question,a,5,TN,a,b,c,d,e\n"
        "1002,600,640,480,how does it end,zzz,1,TC,a,b,c,d,e\n"
        "1002,600,640,480,reversed span,b,2,TC,a,b,c,d,e\n"
    )
    _write(tmp_path / "val.csv", csv_text)
    path = _write(tmp_path / "gsub_val.json", json.dumps(gsub))
    records, stats = load_dataset("next_gqa", path)  # val.csv found next to gsub_val.json
    _check_invariants(records, stats)
    assert [(r.qid, r.query, r.spans, r.answer) for r in records] == [
        ("1001_1", "why did the baby cry", ((1.2, 5.8),), 1),
        ("1001_3", "what happened after", ((12.1, 17.1), (20.0, 34.0)), 3),
        ("1002_2", "reversed span", ((1.0, 3.0),), 1),
    ]
    assert records[0].options == ("laughed", "fell down", "slept", "ate", "ran")
    assert records[0].extra["answer_text"] == "fell down" and records[0].video_id == "1001"
    assert stats.as_dict() == {
        "read": 6, "kept": 3, "dropped/missing_qa": 1, "dropped/no_valid_span": 1, "dropped/unparsable": 1,
        "fixed/clipped_span": 1, "fixed/swapped_span": 1, "ignored/ungrounded_qa": 1,
    }
    with pytest.raises(DatasetFormatError, match="csv"):
        load_dataset("next_gqa", path, qa_csv=tmp_path / "nope.csv")


# ------------------------------------------------------------------ ReXTime


def test_rextime(tmp_path):
    data = [
        {"vid": "v_abcdefghijk", "question": "what happens after the jump?", "options": ["a", "b", "c", "d"],
         "ans": "B", "answer": "b", "span": [10, 20], "category": "sequential", "qid": "rx1"},
        {"vid": "qvh_0.0_150.0", "question": "why?", "options": ["x", "y"], "ans": "(A)", "span": [[140, 160]],
         "duration": 150},
        {"vid": "nodur", "question": "no duration.", "options": ["x"], "ans": 0, "span": [1, 2]},
        {"vid": "v_abcdefghijk", "question": "odd answer.", "options": ["x", "y"], "ans": "Q", "span": [1, 2]},
        {"vid": "v_abcdefghijk", "question": None, "options": ["x"], "ans": 0, "span": [1, 2]},
    ]
    path = _write(tmp_path / "rextime_val.json", json.dumps(data))
    records, stats = load_dataset("rextime", path, durations={"v_abcdefghijk": 100.0})
    _check_invariants(records, stats)
    assert [(r.qid, r.video_id, r.duration, r.spans, r.answer, r.options) for r in records] == [
        ("rx1", "v_abcdefghijk", 100.0, ((10.0, 20.0),), 1, ("a", "b", "c", "d")),
        ("rextime#1", "qvh_0.0_150.0", 150.0, ((140.0, 150.0),), 0, ("x", "y")),
        ("rextime#3", "v_abcdefghijk", 100.0, ((1.0, 2.0),), "Q", ("x", "y")),
    ]
    assert records[0].extra["category"] == "sequential"
    assert stats.as_dict() == {
        "read": 5, "kept": 3, "dropped/missing_duration": 1, "dropped/missing_field": 1,
        "fixed/answer_unresolved": 1, "fixed/clipped_span": 1,
    }


# ------------------------------------------------------------------ our own jsonl


def test_records_jsonl_round_trip_and_bad_lines(tmp_path):
    good = [
        GroundingRecord("v1", 10.0, "q1", ((1.0, 2.0),), qid="a", source="synthetic",
                        saliency=((0, (1.0, 2.0, 3.0)),), extra={"level": 2}),
        GroundingRecord("v2", 5.0, "q2", ((0.0, 5.0), (1.0, 3.0)), qid="b", source="synthetic",
                        options=("x", "y"), answer=1),
    ]
    path = tmp_path / "recs.jsonl"
    write_jsonl(good, str(path))
    with open(path, "a") as f:
        f.write("{not json}\n")
        f.write(json.dumps({"video_id": "v3", "query": "no duration", "spans": [[1, 2]]}) + "\n")
        f.write(json.dumps({"video_id": "v4", "duration": "NaN", "query": "nan", "spans": [[1, 2]]}) + "\n")
        f.write(json.dumps({"video_id": "v5", "duration": 4, "query": "past end", "spans": [[3, 9]]}) + "\n")
    records, stats = load_dataset("jsonl", path, video_exists=lambda v: True)
    assert records[:2] == good
    assert records[2].spans == ((3.0, 4.0),) and records[2].source == "jsonl"
    assert stats.as_dict() == {"read": 6, "kept": 3, "dropped/bad_number": 1, "dropped/missing_field": 1,
                               "dropped/unparsable": 1, "fixed/clipped_span": 1}
    assert not math.isnan(sum(r.duration for r in records))
