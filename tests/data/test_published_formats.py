"""Each dataset's PUBLISHED annotation format, a few lines written by hand with the awkward cases real files
have (CRLF line endings, trailing periods and spaces, reversed and past-the-end spans), and our own
records jsonl with every kind of bad line: ids, spans, durations, queries and every count are checked."""
from __future__ import annotations

import json
import logging
import math

import pytest

from vtg_jax.data.datasets import DatasetFormatError, load_dataset
from vtg_jax.data.records import GroundingRecord, clip_video_id, write_jsonl


def _write_crlf_json(path, data, indent):
    """A JSON file with Windows line endings, as several releases ship them."""
    path.write_bytes(json.dumps(data, indent=indent).replace("\n", "\r\n").encode())


def _crlf(path, lines):
    """Writes `lines` (dicts become JSON) with Windows line endings, as files edited on Windows have."""
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\r\n" for x in lines)
    path.write_bytes(text.encode("utf-8"))
    return path


def _check(records, stats):
    for r in records:
        r.validate()
        assert all(math.isfinite(v) for s in r.spans for v in s) and math.isfinite(r.duration)
        assert r.query == r.query.strip() and "\r" not in r.query
    assert stats.read == stats.kept + stats.num_dropped and stats.kept == len(records)


# ------------------------------------------------------------------ TimeLens-100K (events)


TIMELENS_100K = [
    {"video_path": "cosmo_cap/Qx1_abc.mp4", "duration": 40.0, "source": "cosmo_cap",
     "events": [{"query": "A man opens the door. ", "span": [[1.0, 5.5]]},
                {"query": "  the  dog\tbarks..", "span": [12, 8]}]},
    {"video_path": "internvid_vtime/zz9.mp4", "duration": 30, "source": "internvid_vtime",
     "events": [{"query": "runs past the end", "span": [[25, 35]]},
                {"query": "entirely after the end.", "span": [[31, 40]]},
                {"query": "   ", "span": [[1, 2]]},
                {"query": "two windows", "span": [[1, 2], [3, 4]]},
                "not an event"]},
    {"video_path": "hirest/empty.mp4", "duration": 12, "source": "hirest", "events": []},
    "{broken json",
    {"video_path": "didemo/nan.mp4", "duration": float("nan"), "source": "didemo",
     "events": [{"query": "nan duration", "span": [[1, 2]]}]},
]


def _timelens_100k_expectations(records, stats):
    _check(records, stats)
    assert [(r.qid, r.video_id, r.duration, r.query, r.spans) for r in records] == [
        ("Qx1_abc#0#0", "Qx1_abc", 40.0, "A man opens the door", ((1.0, 5.5),)),
        ("Qx1_abc#0#1", "Qx1_abc", 40.0, "the dog barks", ((8.0, 12.0),)),
        ("zz9#1#0", "zz9", 30.0, "runs past the end", ((25.0, 30.0),)),
        ("zz9#1#3", "zz9", 30.0, "two windows", ((1.0, 2.0), (3.0, 4.0))),
    ]
    assert {r.source for r in records} == {"timelens"}
    assert records[0].extra["source"] == "cosmo_cap" and records[0].extra["video_path"] == "cosmo_cap/Qx1_abc.mp4"
    assert all(r.clip is None for r in records)
    assert stats.as_dict() == {
        "read": 9, "kept": 4, "dropped/bad_number": 1, "dropped/missing_field": 1, "dropped/no_valid_span": 1,
        "dropped/unparsable": 2, "fixed/clipped_span": 1, "fixed/swapped_span": 1, "ignored/no_events": 1,
    }


def test_timelens_100k_jsonl_crlf(tmp_path):
    path = _crlf(tmp_path / "timelens-100k.jsonl", TIMELENS_100K)
    _timelens_100k_expectations(*load_dataset("timelens", path))


def test_timelens_100k_json_list(tmp_path):
    data = [x for x in TIMELENS_100K if isinstance(x, dict)]
    path = tmp_path / "timelens-100k.json"
    _write_crlf_json(path, data, indent=2)
    records, stats = load_dataset("timelens", path)
    # The same records; positions shift by the missing broken line ("zz9#1" stays, "nan" is entry 3).
    assert [r.qid for r in records] == ["Qx1_abc#0#0", "Qx1_abc#0#1", "zz9#1#0", "zz9#1#3"]
    assert stats.as_dict()["dropped/unparsable"] == 1 and stats.kept == 4


def test_timelens_bench_grouped_crlf(tmp_path):
    bench = {"AO8RW": {"duration": 33.67, "queries": ["a person opens the door. ", "person sits down ."],
                       "spans": [[0.0, 6.9], [40.0, 30.0]]}}
    path = tmp_path / "charades-timelens.json"
    _write_crlf_json(path, bench, indent=1)
    records, stats = load_dataset("timelens", path)
    _check(records, stats)
    assert [(r.qid, r.query, r.spans) for r in records] == [
        ("AO8RW#0", "a person opens the door", ((0.0, 6.9),)),
        ("AO8RW#1", "person sits down", ((30.0, 33.67),)),
    ]
    assert stats.as_dict() == {"read": 2, "kept": 2, "fixed/clipped_span": 1, "fixed/swapped_span": 1}


# ------------------------------------------------------------------ ReXTime (evaluation ground truth)


def test_rextime_ground_truth_jsonl(tmp_path):
    lines = [
        {"qid": "qvh_val12", "query": "What does the woman do before she opens the car door? ", "duration": 150,
         "vid": "Ab3-xYz_1Q_510.0_660.0", "relevant_windows": [[0, 28]], "ans": "A"},
        {"qid": "anet_val40", "query": "Why does the man run down the track?", "duration": 100.5,
         "vid": "v_Zq0r-Tu8", "relevant_windows": [[90, 120]], "ans": "D"},
        {"qid": "anet_val41", "query": "What happens after the jump?", "duration": 55.54,
         "vid": "v_Rev3rsed", "relevant_windows": [[23, 18]], "ans": "(C)"},
        {"qid": "anet_val42", "query": "No windows.", "duration": 20, "vid": "v_none", "ans": "B"},
        {"qid": "anet_val43", "query": "Zero duration.", "duration": 0, "vid": "v_zero",
         "relevant_windows": [[0, 1]], "ans": "B"},
        "not json at all",
    ]
    records, stats = load_dataset("rextime", _crlf(tmp_path / "rextime_val.jsonl", lines))
    _check(records, stats)
    assert [(r.qid, r.video_id, r.duration, r.query, r.spans, r.answer) for r in records] == [
        ("qvh_val12", "Ab3-xYz_1Q_510.0_660.0", 150.0, "What does the woman do before she opens the car door?",
         ((0.0, 28.0),), 0),
        ("anet_val40", "v_Zq0r-Tu8", 100.5, "Why does the man run down the track?", ((90.0, 100.5),), 3),
        ("anet_val41", "v_Rev3rsed", 55.54, "What happens after the jump?", ((18.0, 23.0),), 2),
    ]
    assert [r.extra["ans"] for r in records] == ["A", "D", "(C)"]
    assert all(r.options is None and r.source == "rextime" for r in records)
    assert stats.as_dict() == {
        "read": 6, "kept": 3, "dropped/bad_duration": 1, "dropped/missing_field": 1, "dropped/unparsable": 1,
        "fixed/clipped_span": 1, "fixed/swapped_span": 1,
    }


def test_rextime_ground_truth_single_line(tmp_path):
    line = {"qid": "anet_val1", "query": "Why?", "duration": 10, "vid": "v_a", "relevant_windows": [[1, 2]],
            "ans": "B"}
    records, stats = load_dataset("rextime", _crlf(tmp_path / "one.jsonl", [line]))
    assert [(r.qid, r.answer) for r in records] == [("anet_val1", 1)] and stats.kept == 1


# ------------------------------------------------------------------ Time-R1 (train_2k5.json)


TIME_R1 = [
    {"video": "./dataset/timer1/videos/timerft_data/QtWT8rxUuNk.mp4", "duration": 93.2932, "timestamp": [1.0, 4.0],
     "sentence": "A purple hanger on a purple background demonstrates how to hang a sweater.",
     "qid": "my|cosmo|QtWT8rxUuNk|A purple hanger", "video_start": None, "video_end": None, "difficulty": 50.0,
     "pred": [0.0, 3.0]},
    {"video": "./dataset/timer1/videos/timerft_data/4jujhM5qhEc_00:00:39:000_00:01:24:700.mp4", "duration": 45.7,
     "timestamp": [34.9, 41.9], "sentence": "the statue of a man on horseback with four birds ",
     "qid": "my|internvid-vtime|4jujhM5qhEc|statue", "video_start": 39.0, "video_end": 84.7,
     "difficulty": 41.0, "pred": [37.82, 44.84]},
    {"video": "./dataset/timer1/videos/timerft_data/6gVbgtCw-ko_00:04:59:700_00:06:26:900.mp4",
     "duration": 87.19999999999999, "timestamp": [80.0, 95.5], "sentence": "Runs past the clip's end.",
     "qid": "my|internvid-vtime|6gVbgtCw-ko|past", "video_start": 299.7, "video_end": 386.9},
    {"video": "./dataset/timer1/videos/timerft_data/74MOEiIM4qg.mp4", "duration": 80.0, "timestamp": [49.7, 0.0],
     "sentence": "Reversed in a clip from zero.", "qid": "my|yt|74MOEiIM4qg|rev", "video_start": 0.0,
     "video_end": 80.0},
    {"video": "./dataset/timer1/videos/timerft_data/LWvcLI0lcFQ.mp4", "duration": 30.0, "timestamp": [25.0, 31.5],
     "sentence": "Whole video, past the end.", "qid": "my|yt|LWvcLI0lcFQ|past", "video_start": None,
     "video_end": None},
    {"video": "./v/badclip.mp4", "duration": 10.0, "timestamp": [1, 2], "sentence": "end before start.",
     "qid": "q-badclip", "video_start": 50.0, "video_end": 40.0},
    {"video": "./v/nanclip.mp4", "duration": 10.0, "timestamp": [1, 2], "sentence": "nan window.",
     "qid": "q-nanclip", "video_start": float("nan"), "video_end": 40.0},
    {"video": "./v/mismatch.mp4", "duration": 99.0, "timestamp": [1, 2], "sentence": "Stated duration is off.",
     "qid": "q-mismatch", "video_start": 10.0, "video_end": 20.0},
    {"video": "./v/openend.mp4", "duration": 47.5, "timestamp": [1, 2], "sentence": "Window to the end.",
     "qid": "q-openend", "video_start": 12.5, "video_end": None},
    {"video": "./v/openend_unknown.mp4", "duration": 5.0, "timestamp": [1, 2], "sentence": "No source length.",
     "qid": "q-open2", "video_start": 12.5, "video_end": None},
]


def test_time_r1_with_and_without_clip_windows(tmp_path):
    path = tmp_path / "train_2k5.json"
    _write_crlf_json(path, TIME_R1, indent=4)
    records, stats = load_dataset("time_r1", path, durations={"openend": 60.0})
    _check(records, stats)
    got = [(r.qid, r.video_id, r.clip, r.duration, r.spans, r.query) for r in records]
    expected = [
        ("my|cosmo|QtWT8rxUuNk|A purple hanger", "QtWT8rxUuNk", None, 93.2932, ((1.0, 4.0),),
         "a purple hanger on a purple background demonstrates how to hang a sweater"),
        ("my|internvid-vtime|4jujhM5qhEc|statue", "4jujhM5qhEc_00:00:39:000_00:01:24:700@39-84.7", (39.0, 84.7),
         84.7 - 39.0, ((34.9, 41.9),), "the statue of a man on horseback with four birds"),
        ("my|internvid-vtime|6gVbgtCw-ko|past", "6gVbgtCw-ko_00:04:59:700_00:06:26:900@299.7-386.9", (299.7, 386.9),
         386.9 - 299.7, ((80.0, 386.9 - 299.7),), "runs past the clip's end"),
        ("my|yt|74MOEiIM4qg|rev", "74MOEiIM4qg@0-80", (0.0, 80.0), 80.0, ((0.0, 49.7),),
         "reversed in a clip from zero"),
        ("my|yt|LWvcLI0lcFQ|past", "LWvcLI0lcFQ", None, 30.0, ((25.0, 30.0),), "whole video, past the end"),
        ("q-mismatch", "mismatch@10-20", (10.0, 20.0), 10.0, ((1.0, 2.0),), "stated duration is off"),
        ("q-openend", "openend@12.5-60", (12.5, 60.0), 47.5, ((1.0, 2.0),), "window to the end"),
    ]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    for g, e in zip(got, expected):
        assert g[3] == pytest.approx(e[3]) and g[4][0] == pytest.approx(e[4][0]) and g[5] == e[5], (g, e)
    clip = records[1]
    assert clip.video_id == clip_video_id("4jujhM5qhEc_00:00:39:000_00:01:24:700", 39.0, 84.7)
    assert clip.extra["source_video"] == "4jujhM5qhEc_00:00:39:000_00:01:24:700"
    assert clip.extra["video_path"] == TIME_R1[1]["video"]
    assert "source_video" not in records[0].extra and records[0].extra["difficulty"] == 50.0
    assert stats.as_dict() == {
        "read": 10, "kept": 7, "dropped/bad_clip": 2, "dropped/missing_duration": 1,
        "fixed/clip_duration": 1, "fixed/clipped_span": 2, "fixed/swapped_span": 1,
    }
    # A record of a clip round-trips through our jsonl with its window.
    write_jsonl(records, str(tmp_path / "out.jsonl"))
    back, back_stats = load_dataset("jsonl", tmp_path / "out.jsonl")
    assert back == records and back_stats.as_dict() == {"read": 7, "kept": 7}


# ------------------------------------------------------------------ Charades-STA, ActivityNet, QVHighlights, NExT-GQA


def test_charades_sta_crlf_and_awkward_lines(tmp_path):
    txt = tmp_path / "charades_sta_test.txt"
    txt.write_bytes(b"3MSZA 24.3 30.4##person turn a light on.\r\n"
                    b"3MSZA 30.4 24.3##person reversed .  \r\n"
                    b"3MSZA 25.0 40.0##person runs past the end.\r\n"
                    b"3MSZA 31.0 40.0##entirely after the end.\r\n"
                    b"\r\n"
                    b"bad line without hashes\r\n")
    csv = tmp_path / "Charades_v1_test.csv"
    csv.write_bytes(b"id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\r\n"
                    b"3MSZA,HR43,Living room,6,7,Yes,a script,light,a description,c001 0 5,30.96\r\n")
    records, stats = load_dataset("charades_sta", txt, durations=csv)
    _check(records, stats)
    assert [(r.qid, r.video_id, r.duration, r.query, r.spans) for r in records] == [
        ("3MSZA#0", "3MSZA", 30.96, "person turn a light on.", ((24.3, 30.4),)),
        ("3MSZA#1", "3MSZA", 30.96, "person reversed .", ((24.3, 30.4),)),
        ("3MSZA#2", "3MSZA", 30.96, "person runs past the end.", ((25.0, 30.96),)),
    ]
    assert stats.as_dict() == {"read": 5, "kept": 3, "dropped/no_valid_span": 1, "dropped/unparsable": 1,
                               "fixed/clipped_span": 1, "fixed/swapped_span": 1}


def test_activitynet_captions_crlf(tmp_path):
    data = {"v_QOlSCBRmfWY": {"duration": 82.73, "timestamps": [[0.83, 19.86], [17.37, 60.81], [56.26, 90.0]],
                              "sentences": ["A young woman is seen standing in a room. ",
                                            " She then begins dancing around.", "She ends by reversing.  "]},
            "v_reversed": {"duration": 10.0, "timestamps": [[8.0, 2.0]], "sentences": ["Backwards."]}}
    path = tmp_path / "val_1.json"
    _write_crlf_json(path, data, indent=2)
    records, stats = load_dataset("activitynet", path)
    _check(records, stats)
    assert [(r.qid, r.query, r.spans) for r in records] == [
        ("v_QOlSCBRmfWY#0", "A young woman is seen standing in a room.", ((0.83, 19.86),)),
        ("v_QOlSCBRmfWY#1", "She then begins dancing around.", ((17.37, 60.81),)),
        ("v_QOlSCBRmfWY#2", "She ends by reversing.", ((56.26, 82.73),)),
        ("v_reversed#0", "Backwards.", ((2.0, 8.0),)),
    ]
    assert stats.as_dict() == {"read": 4, "kept": 4, "fixed/clipped_span": 1, "fixed/swapped_span": 1}


def test_qvhighlights_crlf(tmp_path):
    lines = [
        {"qid": 2579, "query": "A girl and her mother cooked while talking with each other on facetime. ",
         "duration": 150, "vid": "NUsG9BgSes0_210.0_360.0", "relevant_windows": [[0, 70], [80, 98], [140, 152]],
         "relevant_clip_ids": [0, 1, 75], "saliency_scores": [[1, 2, 1], [2, 2, 3], [4, 4, 4]]},
        {"qid": 5, "query": "reversed window", "duration": 150, "vid": "abc_0.0_150.0",
         "relevant_windows": [[30, 20]]},
    ]
    records, stats = load_dataset("qvhighlights", _crlf(tmp_path / "highlight_val_release.jsonl", lines))
    _check(records, stats)
    assert [(r.qid, r.video_id, r.query, r.spans) for r in records] == [
        ("2579", "NUsG9BgSes0_210.0_360.0", "A girl and her mother cooked while talking with each other on facetime.",
         ((0.0, 70.0), (80.0, 98.0), (140.0, 150.0))),
        ("5", "abc_0.0_150.0", "reversed window", ((20.0, 30.0),)),
    ]
    assert records[0].saliency == ((0, (1.0, 2.0, 1.0)), (1, (2.0, 2.0, 3.0)))  # clip 75 is past 150 s
    assert stats.as_dict() == {"read": 2, "kept": 2, "fixed/clipped_span": 1, "fixed/saliency_clipped": 1,
                               "fixed/swapped_span": 1}


def test_next_gqa_crlf(tmp_path):
    gsub = {"4010069381": {"duration": 37.0, "location": {"4": [[30.1, 41.0]], "6": [[9.0, 3.0]]}, "fps": 29.97}}
    (tmp_path / "gsub_val.json").write_bytes(json.dumps(gsub).encode())
    (tmp_path / "val.csv").write_bytes(
        b"video_id,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\r\n"
        b"4010069381,1109,640,480,why did the man hold the rope at the end ,to pull the boat,4,CW,"
        b"to pull the boat,dance,eat,sleep,run\r\n"
        b"4010069381,1109,640,480,what did the boy do before the jump,dance,6,TP,sleep,dance,eat,run,sit\r\n")
    records, stats = load_dataset("next_gqa", tmp_path / "gsub_val.json")
    _check(records, stats)
    assert [(r.qid, r.query, r.spans, r.answer, r.options[-1]) for r in records] == [
        ("4010069381_4", "why did the man hold the rope at the end", ((30.1, 37.0),), 0, "run"),
        ("4010069381_6", "what did the boy do before the jump", ((3.0, 9.0),), 1, "sit"),
    ]
    assert stats.as_dict() == {"read": 2, "kept": 2, "fixed/clipped_span": 1, "fixed/swapped_span": 1}


# ------------------------------------------------------------------ our records jsonl: every bad case


def _good(vid="v1", qid="good1", duration=10.0, spans=((1.0, 2.0),), **kw):
    return GroundingRecord(vid, duration, "a red circle appears", spans, qid=qid, source="test", **kw).to_json()


def bad_records_lines(good_lines, vid: str, duration: float) -> list[bytes]:
    """Our records jsonl with every bad case after `good_lines` (dicts): each case's expected outcome
    is in BAD_CASES_STATS. Lines are bytes, some with CRLF, one not UTF-8."""

    def rec(qid, **over):
        d = {"video_id": vid, "duration": duration, "query": f"case {qid}. ", "spans": [[1.0, 2.0]], "qid": qid,
             "source": "test"}
        d.update(over)
        return json.dumps(d).encode()

    lines = [json.dumps(g).encode() for g in good_lines]
    lines += [
        rec("nan_duration", duration=float("nan")),            # NaN token      -> dropped/bad_number
        rec("inf_span", spans=[[1.0, float("inf")]]),          # Infinity token -> dropped/bad_number
        rec("nan_string_span", spans=[["nan", 2.0]]),          # "nan"          -> dropped/bad_number
        rec("negative_duration", duration=-5.0),               #                -> dropped/bad_duration
        rec("zero_duration", duration=0),                      #                -> dropped/bad_duration
        rec("negative_span", spans=[[-3.0, -1.0]]),            # before 0       -> dropped/no_valid_span
        rec("partly_negative", spans=[[-1.0, 2.0]]) + b"\r",   #                -> kept, clipped to (0, 2)
        rec("reversed", spans=[[5.0, 2.0]]),                   #                -> kept, swapped to (2, 5)
        rec("past_end", spans=[[duration - 1, duration + 5]]),  #               -> kept, clipped to the end
        b'{"video_id": "' + vid.encode() + b'", "duration": 5, ',  # torn line  -> dropped/unparsable
        b"[1, 2]",                                             # not an object  -> dropped/unparsable
        json.dumps({"video_id": vid, "duration": duration, "query": "no spans", "qid": "missing"}).encode(),
        rec("latin1_query").replace(b"case", b"caf\xe9"),      # not UTF-8      -> dropped/bad_encoding
        rec("bad_clip", clip=[5.0, 2.0]),                      #                -> dropped/bad_clip
        b"",
        b"   \r",
    ]
    return lines


BAD_CASES_STATS = {"dropped/bad_number": 3, "dropped/bad_duration": 2, "dropped/no_valid_span": 1,
                   "dropped/unparsable": 2, "dropped/missing_field": 1, "dropped/bad_encoding": 1,
                   "dropped/bad_clip": 1, "fixed/clipped_span": 2, "fixed/swapped_span": 1}
BAD_CASES_KEPT = {"partly_negative": ((0.0, 2.0),), "reversed": ((2.0, 5.0),), "past_end": "end"}


def test_records_jsonl_every_bad_case(tmp_path, caplog):
    good = [_good(), _good("v2", "good2", 8.0, ((0.0, 8.0),), clip=(4.0, 12.0), extra={"source_video": "v"})]
    lines = bad_records_lines(good, "v1", 10.0)
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with caplog.at_level(logging.WARNING, logger="vtg_jax.data.adapters.generic"):
        records, stats = load_dataset("jsonl", path)
    _check(records, stats)
    assert [r.to_json() for r in records[:2]] == good
    kept = {r.qid: r for r in records[2:]}
    assert set(kept) == set(BAD_CASES_KEPT)
    assert kept["partly_negative"].spans == ((0.0, 2.0),) and kept["reversed"].spans == ((2.0, 5.0),)
    assert kept["past_end"].spans == ((9.0, 10.0),) and kept["reversed"].query == "case reversed."
    assert stats.as_dict() == {"read": 16, "kept": 5, **BAD_CASES_STATS}
    # Every skipped line is logged with file:line (1-based; the good lines are 1-2).
    messages = "\n".join(r.getMessage() for r in caplog.records)
    for lineno, reason in [(3, "bad_number"), (4, "bad_number"), (5, "bad_number"), (6, "bad_duration"),
                           (7, "bad_duration"), (8, "no_valid_span"), (12, "unparsable"), (13, "unparsable"),
                           (14, "missing_field: no spans"), (15, "bad_encoding"), (16, "bad_clip")]:
        assert f"{path}:{lineno}: record skipped ({reason}" in messages, (lineno, messages)
    assert f"{path}:9:" not in messages  # fixed, not skipped


def test_records_jsonl_whole_garbage_and_missing_qid(tmp_path):
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n{neither}\n")
    with pytest.raises(DatasetFormatError):
        load_dataset("jsonl", garbage)
    path = tmp_path / "noqid.jsonl"
    path.write_text("\n".join(json.dumps({"video_id": "a/b", "duration": 5, "query": "q", "spans": [[1, 2]]})
                              for _ in range(2)) + "\n")
    records, _ = load_dataset("jsonl", path)
    assert [(r.video_id, r.qid) for r in records] == [("a/b", "a/b#1"), ("a/b", "a/b#2")]  # ids kept verbatim
