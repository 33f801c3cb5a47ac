"""Records given directly (`config.data.train/val/test`) go through the adapters' validation: a records
file with every bad case builds the run's data with each case counted, no NaN reaches an SFT target, a tiny
SFT run trains to the end on it (and evaluates on a val file with a NaN span), the counts reach the run's
metrics and summary; records files together with the synthetic benchmark are an error."""
from __future__ import annotations

import json
import math
import os

import pytest

from loop_helpers import read_metrics, tiny

# Every bad case once, after the good records; the expected counts of each.
EXPECTED_DROPPED = {"bad_number": 3, "bad_duration": 2, "no_valid_span": 1, "unparsable": 2, "missing_field": 1,
                    "bad_encoding": 1, "bad_clip": 1}
EXPECTED_FIXED = {"clipped_span": 2, "swapped_span": 1}
KEPT_BAD = ("partly_negative", "reversed", "past_end")


def _bad_lines(vid: str, duration: float) -> list[bytes]:
    def rec(qid, **over):
        d = {"video_id": vid, "duration": duration, "query": "a red circle appears", "spans": [[1.0, 2.0]],
             "qid": qid, "source": "test"}
        d.update(over)
        return json.dumps(d).encode()

    return [
        rec("nan_duration", duration=float("nan")),
        rec("inf_span", spans=[[1.0, float("inf")]]),
        rec("nan_string_span", spans=[["nan", 2.0]]),
        rec("negative_duration", duration=-5.0),
        rec("zero_duration", duration=0),
        rec("negative_span", spans=[[-3.0, -1.0]]),
        rec("partly_negative", spans=[[-1.0, 2.0]]) + b"\r",
        rec("reversed", spans=[[5.0, 2.0]]),
        rec("past_end", spans=[[duration - 1.0, duration + 5.0]]),
        b'{"video_id": "' + vid.encode() + b'", "duration": 5, ',
        b"[1, 2]",
        json.dumps({"video_id": vid, "duration": duration, "query": "no spans", "qid": "missing"}).encode(),
        rec("latin1").replace(b"a red", b"\xe9 red"),
        rec("bad_clip", clip=[5.0, 2.0]),
        b"",
    ]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny synthetic set (records + frame store) and, next to it, train / val files with bad lines."""
    from vtg_jax.data.records import read_jsonl
    from vtg_jax.run.data_setup import prepare_synthetic

    root = tmp_path_factory.mktemp("records_validation")
    cache = str(root / "cache")
    c = tiny("sft", cache)
    paths = prepare_synthetic(c.data, "qwen2_5_vl", cache, progress=False)
    good = list(read_jsonl(paths["train"]))[:8]
    first = good[0]
    train = root / "train.jsonl"
    train.write_bytes(b"\n".join([json.dumps(r.to_json()).encode() for r in good]
                                 + _bad_lines(first.video_id, first.duration)) + b"\n")
    val_good = list(read_jsonl(paths["val"]))[:4]
    nan_val = dict(val_good[0].to_json(), qid="val_nan", spans=[[float("nan"), 2.0]])
    val = root / "val.jsonl"
    val.write_text("\r\n".join(json.dumps(x) for x in [nan_val] + [r.to_json() for r in val_good]) + "\r\n")
    return {"cache": cache, "store": paths["store"], "train": str(train), "val": str(val), "good": good,
            "val_good": val_good}


def _config(files, **overrides):
    return tiny("sft", files["cache"], data__synthetic__enabled=False, data__train=files["train"],
                data__val=files["val"], data__frame_store=files["store"], **overrides)


def test_records_files_with_synthetic_enabled_are_an_error(tmp_path):
    from vtg_jax.models.qwen_vl.presets import get_preset
    from vtg_jax.run.data_setup import build_run_data

    for key in ("train", "val", "test"):
        c = tiny("sft", str(tmp_path), **{f"data__{key}": str(tmp_path / "x.jsonl")})
        assert c.data.synthetic.enabled
        with pytest.raises(ValueError, match=rf"config\.data\.{key}.*config\.data\.synthetic\.enabled=True"):
            build_run_data(get_preset("qwen2.5-vl-tiny"), c.data, str(tmp_path), progress=False)


def test_read_split_counts_and_duplicate_qids(tmp_path, files):
    from vtg_jax.run.data_setup import _read_split

    records, stats = _read_split(files["train"])
    assert stats.read == 8 + 14 and stats.kept == 8 + len(KEPT_BAD) == len(records)
    assert dict(stats.dropped) == EXPECTED_DROPPED and dict(stats.fixed) == EXPECTED_FIXED
    dup = tmp_path / "dup.jsonl"
    dup.write_text(json.dumps(files["good"][0].to_json()) + "\n" + json.dumps(files["good"][0].to_json()) + "\n")
    with pytest.raises(ValueError, match="duplicate qid"):
        _read_split(str(dup))
    with pytest.raises(FileNotFoundError):
        _read_split(str(tmp_path / "nope.jsonl"))


def test_build_run_data_on_bad_records_no_nan_target(files):
    from vtg_jax.models.qwen_vl.presets import get_preset
    from vtg_jax.run.data_setup import build_run_data

    c = _config(files)
    rd = build_run_data(get_preset("qwen2.5-vl-tiny"), c.data, files["cache"], progress=False)
    train = rd.splits["train"]
    assert [r.qid for r in train] == [r.qid for r in files["good"]] + list(KEPT_BAD)
    assert [r.qid for r in rd.splits["val"]] == [r.qid for r in files["val_good"]]
    assert rd.load_stats["train"].as_dict() == {
        "read": 22, "kept": 11, **{f"dropped/{k}": v for k, v in sorted(EXPECTED_DROPPED.items())},
        **{f"fixed/{k}": v for k, v in sorted(EXPECTED_FIXED.items())}}
    assert rd.load_stats["val"].as_dict() == {"read": 5, "kept": 4, "dropped/bad_number": 1}
    assert "test" not in rd.load_stats  # no file given
    by_qid = {r.qid: r for r in train}
    dur = files["good"][0].duration
    assert by_qid["partly_negative"].span == (0.0, 2.0) and by_qid["reversed"].span == (2.0, 5.0)
    assert by_qid["past_end"].span == (dur - 1.0, dur)
    for split, recs in rd.splits.items():
        for r in recs:
            target = rd.transforms[split].answer(r)
            assert all(math.isfinite(v) for v in (*r.span, r.duration)), r
            assert "nan" not in target.lower() and "inf" not in target.lower(), target
    example = rd.transforms["train"](by_qid["past_end"])  # a fixed record makes a normal example
    assert int(example["record_index"]) == len(train) - 1


def test_sft_trains_to_end_on_bad_records(tmp_path, files):
    from vtg_jax.run.loop import train

    wd = str(tmp_path / "run")
    s = train(_config(files, steps=3, batch_size=4, checkpoint__export_hf=False, checkpoint__async_save=False), wd)
    assert s["finished"] and s["steps"] == 3 and s["skipped_updates"] == 0
    assert s["data_load"]["train"]["dropped/bad_number"] == 3 and s["data_load"]["val"]["kept"] == 4
    assert 0.0 <= s["eval"]["eval/mIoU"] <= 1.0  # the final evaluation runs on the NaN-free val split
    rows = read_metrics(wd)
    assert [r["step"] for r in rows] == [1, 2, 3]
    first = rows[0]
    for reason, n in EXPECTED_DROPPED.items():
        assert first[f"data/train/dropped/{reason}"] == n
    assert first["data/train/fixed/clipped_span"] == 2 and first["data/val/dropped/bad_number"] == 1
    assert not any(k.startswith("data/train/") for r in rows[1:] for k in r)  # logged once
    assert all(math.isfinite(r["loss/total"]) for r in rows)
    assert os.path.isfile(os.path.join(wd, "predictions", "val_step3.jsonl"))
