"""Synthetic benchmark: determinism, rendered frames match the annotated spans, unique queries, and
video-blind baselines stay below R@0.5 = 0.15 on the default configuration."""
import os
import subprocess
import sys

import numpy as np
import pytest

from vtg_jax.data import synthetic as S
from vtg_jax.data.records import read_jsonl
from vtg_jax.eval.baselines import trivial_baselines

TOL = 45  # max per-channel error of a decoded mp4v pixel at an object's centre


def _centre(obj, xy):
    """A pixel well inside the shape (triangles are wider at the bottom)."""
    px = obj["px"]
    dy = int(px * 0.65) if obj["shape"] == "triangle" else px // 2
    return xy[1] + dy, xy[0] + px // 2


def _expected_target_states(rec):
    """Per frame: (colour or None, top-left) of the target, from the record's span, written independently."""
    obj, fps = rec.extra["objects"][0], rec.extra["fps"]
    s, e = rec.span
    x0, y0 = obj["xy"]
    dx, dy = obj.get("shift", (0, 0))
    out = []
    for i in range(rec.extra["num_frames"]):
        t = i / fps
        inside = s <= t < e
        colour = obj["colour"]
        if obj["event"] == "appear" and not inside:
            colour = None
        if obj["event"] == "recolour" and inside:
            colour = obj["colour2"]
        frac = 0.0 if t <= s else 1.0 if t >= e else (t - s) / (e - s)
        out.append((colour, (round(x0 + dx * frac), round(y0 + dy * frac))))
    return out


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    return S.generate(str(out), num_train=6, num_val=3, num_test=3, level=[1, 2, 3], seed=3)


def test_generate_layout_and_records(small_set):
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        recs = list(read_jsonl(small_set[split]))
        assert len(recs) == n
        for r in recs:
            r.validate()
            assert os.path.getsize(os.path.join(small_set["videos"], r.video_id + ".mp4")) > 0
            assert r.source == "synthetic" and r.extra["split"] == split and r.extra["level"] in (1, 2, 3)
    assert os.path.exists(small_set["config"])


def test_rendered_frames_match_spans(small_set):
    import decord

    checked = 0
    for split in ("train", "val", "test"):
        for rec in read_jsonl(small_set[split]):
            vr = decord.VideoReader(os.path.join(small_set["videos"], rec.video_id + ".mp4"))
            assert len(vr) == rec.extra["num_frames"] and vr.get_avg_fps() == pytest.approx(rec.extra["fps"])
            frames = vr.get_batch(list(range(len(vr)))).asnumpy().astype(int)
            obj = rec.extra["objects"][0]
            home = _centre(obj, obj["xy"])
            for i, (colour, xy) in enumerate(_expected_target_states(rec)):
                checked += 1
                for d in rec.extra["objects"][1:]:  # distractors are drawn where their metadata says
                    vis, dcol, dxy = S.object_state(d, i, rec.extra["fps"])
                    if vis:
                        assert np.abs(frames[i][_centre(d, dxy)] - S.COLOURS[dcol]).max() <= TOL
                if colour is None:  # absent: the object's pixels show the dull background
                    assert frames[i][home].max() < 175, (rec.video_id, i)
                    continue
                got = frames[i][_centre(obj, xy)]
                assert np.abs(got - S.COLOURS[colour]).max() <= TOL, (rec.video_id, i, colour, got)
                if obj["event"] == "move" and i / rec.extra["fps"] >= rec.span[1]:
                    assert np.abs(frames[i][home] - S.COLOURS[colour]).max() > TOL  # it has left
    assert checked == sum(r.extra["num_frames"] for sp in ("train", "val", "test")
                          for r in read_jsonl(small_set[sp]))


def test_deterministic_by_seed(small_set, tmp_path):
    again = S.generate(str(tmp_path / "b"), num_train=6, num_val=3, num_test=3, level=[1, 2, 3], seed=3)
    for split in ("train", "val", "test"):
        assert open(again[split]).read() == open(small_set[split]).read()
    for name in os.listdir(small_set["videos"]):
        a = open(os.path.join(small_set["videos"], name), "rb").read()
        assert a == open(os.path.join(again["videos"], name), "rb").read(), name
    other = S.make_split("train", 6, level=[1, 2, 3], seed=4)
    assert [r.query for r, _ in other] != [r.query for r in read_jsonl(small_set["train"])]
    # A video depends on (seed, split, level, index) only, not on how many were asked for.
    assert S.make_split("val", 2, level=2, seed=9)[1][0] == S.make_split("val", 5, level=2, seed=9)[1][0]


@pytest.mark.parametrize("level", [1, 2, 3])
def test_spans_and_query_uniqueness(level):
    cfg = S.PRESETS["default"]
    for rec, scene in S.make_split("train", 300, level=level, seed=1):
        s, e = rec.span
        assert cfg.min_span <= e - s <= cfg.max_span and s >= cfg.margin and e <= rec.duration - cfg.margin
        assert (s * 2) % 1 == 0 and (e * 2) % 1 == 0  # on the 2 fps grid
        assert cfg.min_duration <= rec.duration <= cfg.max_duration
        objs = scene["objects"]
        target = objs[0]
        assert target["colour"] in rec.query and target["shape"] in rec.query
        shown = [{(o["colour"], o["shape"])} | ({(o["colour2"], o["shape"])} if "colour2" in o else set())
                 for o in objs]
        for i in range(1, len(objs)):
            assert not shown[0] & shown[i], rec.query  # no other object ever looks like the target
        n_dis = len(objs) - 1
        assert (n_dis == 0) if level == 1 else (n_dis >= 1)
        if level < 3:
            assert target["event"] == "appear"


@pytest.mark.parametrize("level", [1, 3])
def test_trivial_baselines_below_threshold_on_default_config(level):
    """The default benchmark (1000 train / 500 val / 500 test, seed 0) with fitted baselines from train."""
    train = [r for r, _ in S.make_split("train", 1000, level=level, seed=0)]
    for split in ("val", "test"):
        recs = [r for r, _ in S.make_split(split, 500, level=level, seed=0)]
        table = trivial_baselines(recs, train)
        assert len(table) >= 8
        for name, m in table.items():
            assert m["R@0.5"] < 0.15, (split, name, m)
            assert 0.0 <= m["mIoU"] < 0.2, (split, name, m)


def test_command_line(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "vtg_jax.data.synthetic", f"--out_dir={out}", "--num_train=2", "--num_val=1",
           "--num_test=1", "--level=2"]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=60)
    assert len(list(read_jsonl(str(out / "train.jsonl")))) == 2
    assert len(os.listdir(out / "videos")) == 4
    # the baselines' command, as the generator prints it, scores val and test fitted on train
    cmd = [sys.executable, "-m", "vtg_jax.eval.baselines", f"--train={out / 'train.jsonl'}",
           f"--eval={out / 'val.jsonl'},{out / 'test.jsonl'}"]
    table = subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=60, text=True).stdout
    assert table.count("| whole_video |") == 2 and "val.jsonl (fitted on" in table


def test_plain_background_and_object_scale():
    """`plain_background` gives every video the same solid grey; `object_scale` scales object sides; the
    rest of each scene (timing, identities, queries) is drawn exactly as without them."""
    base = S.make_split("train", 6, cfg=S.PRESETS["default"])
    easy_cfg = S.SyntheticConfig(plain_background=True, object_scale=3.0)
    easy = S.make_split("train", 6, cfg=easy_cfg)
    for (r0, s0), (r1, s1) in zip(base, easy):
        assert (r0.query, r0.spans) == (r1.query, r1.spans)
        assert s1["background"] == {"kind": "solid", "c0": [70, 70, 70], "c1": [70, 70, 70], "angle": 0.0}
        assert round(64 * 0.18 * 3) <= s1["objects"][0]["px"] <= round(64 * 0.26 * 3)
        frames = S.render(s1, easy_cfg)
        off = frames[0] if not 0 <= s1["span"][0] * easy_cfg.fps < 1 else frames[-1]
        assert (off == 70).all()  # nothing but the grey background outside the event
    with pytest.raises(ValueError, match="object_scale"):
        S.SyntheticConfig(object_scale=4.0)
