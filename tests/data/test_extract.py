"""Frame extraction: sampling rules, smart-resize, the tensorstore frame store, bad input, resume.

Expected frame indices are computed here from the HF formulas (torch.arange for Qwen2.5, numpy
linspace for Qwen3), not imported from vtg_jax.
"""
import json
import math
import os
import pickle

import numpy as np
import pytest

from vtg_jax.data import extract as E
from vtg_jax.data import worker_pool
from vtg_jax.data import synthetic as S
from vtg_jax.data import video as V
from vtg_jax.data.frame_store import FrameStore

FPS_LIST = (1.0, 2.0, 4.0, 7.5, 23.976, 25.0, 29.97, 30.0, 60.0)


def hf_qwen2_5_n(total, src_fps, fps=2.0):
    cap = math.floor(min(768, total) / 2) * 2
    return math.floor(min(max(total / src_fps * fps, 4), cap, total) / 2) * 2


def hf_qwen3_idx(total, src_fps, fps=2.0):
    n = min(max(int(total / src_fps * fps), 4), 768, total)
    return np.linspace(0, total - 1, n).round().astype(int)


def test_qwen2_5_indices_match_torch_arange():
    torch = pytest.importorskip("torch")
    extra_cases = 0
    for src in FPS_LIST:
        for total in range(2, 400):
            n = hf_qwen2_5_n(total, src)
            ref = torch.arange(0, total, total / n).int().tolist()
            ours = V.qwen2_5_indices(total, src).tolist()
            assert len(ours) == n and n % 2 == 0
            assert ref[:n] == ours, (total, src)
            # HF's float arange sometimes yields one extra, out-of-range index (== total); we drop it.
            assert ref[n:] in ([], [total]), (total, src, ref[n:])
            extra_cases += len(ref) > n
    assert extra_cases > 0  # the quirk documented in video.py does occur


def test_qwen3_indices_match_linspace():
    for src in FPS_LIST:
        for total in range(2, 400):
            assert V.qwen3_indices(total, src).tolist() == hf_qwen3_idx(total, src).tolist(), (total, src)
    # Round-half-even of linspace: 37 frames at 7.5 fps -> 9 frames at 0, 4.5, 9, 13.5, ...
    assert V.qwen3_indices(37, 7.5).tolist() == [0, 4, 9, 14, 18, 22, 27, 32, 36]


def test_too_short_videos_raise():
    with pytest.raises(ValueError):
        V.sample_indices("qwen2_5_vl", 1, 4.0)
    with pytest.raises(ValueError):
        V.sample_indices("qwen3_vl", 1, 4.0)
    assert V.sample_indices("qwen2_5_vl", 3, 4.0).tolist() == [0, 1]
    assert V.sample_indices("qwen3_vl", 3, 4.0).tolist() == [0, 1, 2]


def test_smart_resize_hand_computed():
    # Qwen2.5 (factor 28, per frame). 56² is below min 100352: beta = sqrt(32) -> ceil(11.3)·28 = 336.
    assert V.smart_resize_qwen2_5(56, 56) == (336, 336)
    assert V.smart_resize_qwen2_5(64, 64, min_pixels=3136) == (56, 56)
    # 1080x1920 exceeds 602112: beta = sqrt(1080·1920/602112) = 1.8558 -> floor(20.78)·28, floor(36.95)·28.
    assert V.smart_resize_qwen2_5(1080, 1920) == (560, 1008)
    # Qwen3 (factor 32, per clip). 16·64·64 < 131072: beta = sqrt(2) -> ceil(2.83)·32 = 96.
    assert V.smart_resize_qwen3(16, 64, 64) == (96, 96)
    assert V.smart_resize_qwen3(48, 64, 64, min_pixels=4096) == (64, 64)
    # 20x40 is upsized to 32x64 first; 4·32·64 = 8192 < 131072: beta = 4 -> 128x256.
    assert V.smart_resize_qwen3(4, 20, 40) == (128, 256)
    # 768 frames of 1080p: beta = sqrt(768·1080·1920/786432) = 45 -> both sides floor to 0 -> factor.
    assert V.smart_resize_qwen3(768, 1080, 1920) == (32, 32)
    with pytest.raises(ValueError):
        V.smart_resize_qwen3(1, 64, 64)


@pytest.mark.parity
def test_smart_resize_matches_transformers():
    q2 = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    q3 = pytest.importorskip("transformers.models.qwen3_vl.video_processing_qwen3_vl")
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(8, 2000, 2))
        t = int(rng.integers(2, 800))
        lo = int(rng.choice([3136, 4096, 100352, 131072]))
        hi = int(rng.choice([602112, 786432, 16384 * 28 * 28]))
        if max(h, w) / min(h, w) > 200:
            continue
        assert V.smart_resize_qwen2_5(h, w, 28, lo, hi) == q2.smart_resize(h, w, 28, lo, hi)
        assert V.smart_resize_qwen3(t, h, w, 32, 2, lo, hi) == q3.smart_resize(t, h, w, 2, 32, lo, hi)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    """Two synthetic videos, a 7.5 fps 37-frame non-square clip, a 3-frame clip and bad files."""
    root = tmp_path_factory.mktemp("vids")
    paths = S.generate(str(root / "syn"), num_train=1, num_val=1, num_test=0, level=3, seed=11,
                       min_duration=16, max_duration=16)
    vdir = root / "in"
    vdir.mkdir()
    for name in os.listdir(paths["videos"]):
        os.replace(os.path.join(paths["videos"], name), vdir / name)
    rng = np.random.default_rng(0)
    S.write_mp4(rng.integers(0, 255, (37, 48, 80, 3), dtype=np.uint8), str(vdir / "odd_fps.mp4"), 7.5)
    S.write_mp4(rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8), str(vdir / "three.mp4"), 4.0)
    S.write_mp4(rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8), str(vdir / "one_frame.mp4"), 4.0)
    good = open(vdir / "odd_fps.mp4", "rb").read()
    (vdir / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (vdir / "garbage.mp4").write_bytes(rng.integers(0, 255, 4000, dtype=np.uint8).tobytes())
    (vdir / "empty.mp4").write_bytes(b"")
    names = sorted(os.listdir(vdir)) + ["missing.mp4"]
    (vdir / "list.txt").write_text("\n".join(names) + "\n")
    return vdir


BAD = {"truncated", "garbage", "empty", "one_frame", "missing"}


def _expected(family, total, src):
    if family == "qwen2_5_vl":
        n = hf_qwen2_5_n(total, src)
        return [(i * total) // n for i in range(n)]
    return hf_qwen3_idx(total, src).tolist()


@pytest.mark.parametrize("family,min_pixels", [("qwen2_5_vl", 3136), ("qwen3_vl", 4096)])
def test_extract_frame_counts_timestamps_and_pixels(video_dir, tmp_path, family, min_pixels):
    import decord

    out = str(tmp_path / "store")
    stats = E.extract(str(video_dir / "list.txt"), out, family=family, sampling="transformers", min_pixels=min_pixels,
                      progress=False)
    assert stats == {"total": 9, "done": 4, "skipped": 0, "errors": 5}
    errors = [json.loads(ln) for ln in open(os.path.join(out, "errors.jsonl"))]
    assert {e["video_id"] for e in errors} == BAD and all(e["reason"] for e in errors)
    assert [e["reason"] for e in errors if e["video_id"] == "missing"] == ["missing file"]
    store = FrameStore(out)
    assert set(store.video_ids()) == {"odd_fps", "three", "syn11_l3_train_00000", "syn11_l3_val_00000"}
    for vid in store.video_ids():
        meta = store.meta(vid)
        vr = decord.VideoReader(meta["path"])
        total, src = len(vr), vr.get_avg_fps()
        idx = _expected(family, total, src)
        assert meta["frame_indices"] == idx and meta["family"] == family
        np.testing.assert_allclose(meta["timestamps"], np.asarray(idx) / src)
        assert meta["duration"] == pytest.approx(total / src)
        frames, stamps = store.read(vid)
        h0, w0 = vr[0].shape[:2]
        hw = (V.smart_resize_qwen2_5(h0, w0, 28, 3136) if family == "qwen2_5_vl"
              else V.smart_resize_qwen3(len(idx), h0, w0, 32, 2, 4096))
        assert frames.shape == (len(idx), *hw, 3) and frames.dtype == np.uint8
        np.testing.assert_allclose(stamps, meta["timestamps"])
        raw = vr.get_batch(idx).asnumpy()
        np.testing.assert_array_equal(frames, V.resize_frames(raw, *hw))
    # Synthetic videos: 16 s at 4 fps -> 32 frames at 2 fps on the 0.5 s grid, for both families.
    meta = store.meta("syn11_l3_train_00000")
    assert meta["shape"][0] == 32 and meta["duration"] == 16.0
    assert np.all(np.floor(np.asarray(meta["timestamps"]) * 2) == np.arange(32))
    if family == "qwen3_vl":  # 64² fits the budget: frames are the decoded frames, unresized
        assert meta["shape"][1:3] == [64, 64]
    odd = store.meta("odd_fps")
    assert odd["source_fps"] == pytest.approx(7.5) and len(odd["frame_indices"]) == (8 if family == "qwen2_5_vl" else 9)


def test_parallel_run_errors_and_resume(video_dir, tmp_path):
    out = str(tmp_path / "store")
    stats = E.extract(str(video_dir / "list.txt"), out, family="qwen2_5_vl", min_pixels=3136, workers=2,
                      progress=False)
    assert stats["done"] == 4 and stats["errors"] == 5
    arr = os.path.join(out, "frames", "odd_fps", "zarr.json")
    mtime = os.path.getmtime(arr)
    again = E.extract(str(video_dir / "list.txt"), out, family="qwen2_5_vl", min_pixels=3136, workers=2,
                      progress=False)
    assert again == {"total": 9, "done": 0, "skipped": 4, "errors": 5}  # failed ones are retried
    assert os.path.getmtime(arr) == mtime
    assert len(open(os.path.join(out, "manifest.jsonl")).readlines()) == 4
    with pytest.raises(ValueError, match="other settings"):
        E.extract(str(video_dir / "list.txt"), out, family="qwen3_vl", progress=False)


def test_frame_store_subsets_pickle_and_partial_manifest(video_dir, tmp_path):
    out = str(tmp_path / "store")
    E.extract(str(video_dir), out, family="qwen3_vl", sampling="transformers", min_pixels=4096, progress=False)
    store = FrameStore(out)
    frames, stamps = store.read("three")
    sub, sub_ts = store.read("three", [2, 0])
    np.testing.assert_array_equal(sub, frames[[2, 0]])
    np.testing.assert_allclose(sub_ts, stamps[[2, 0]])
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.read("three", slice(1, 3))[0], frames[1:3])
    with open(os.path.join(out, "manifest.jsonl"), "a") as f:
        f.write('{"video_id": "cut sh')  # a run killed mid-line
    fresh = FrameStore(out)
    assert len(fresh) == len(store) and fresh.bad_manifest_lines == 1
    with pytest.raises(KeyError):
        fresh.meta("nope")


def _crashy(task):
    if task[0] == "crash":
        os._exit(3)
    return "ok", {"video_id": task[0]}


def test_worker_crash_is_isolated_and_recorded():
    results = {}
    tasks = [("a",), ("crash",), ("b",), ("c",)]
    worker_pool.run_tasks(tasks, 2, "spawn", lambda t, r: results.__setitem__(t[0], r), work=_crashy)
    assert results["crash"][0] == "error" and "crashed" in results["crash"][1]
    assert all(results[k] == ("ok", {"video_id": k}) for k in "abc")


def test_array_keys_are_safe_and_unique():
    assert E.array_key("abc_1.x") == "abc_1.x"
    a, b = E.array_key("a/b"), E.array_key("a_b/")
    assert "/" not in a and a != b and a != "a_b"


def test_command_line(video_dir, tmp_path):
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "cli_store"
    cmd = [sys.executable, "-m", "vtg_jax.data.extract", f"--videos={video_dir / 'list.txt'}", f"--out={out}",
           "--family=qwen3_vl", "--fps=2", "--min_pixels=4096"]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"total": 9, "done": 4, "skipped": 0, "errors": 5}
    assert FrameStore(str(out)).info()["family"] == "qwen3_vl"
