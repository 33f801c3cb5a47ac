"""Frame sampling against `qwen-vl-utils` itself (0.0.14, imported, never copied).

qwen-vl-utils imports torchvision at module level for `io.read_video` (only its fallback after the
decord path raises; the stub raises too, so a refusal stays a refusal)
and `transforms.functional.resize` (the pixel resize, not the size decision). torchvision's PyPI wheels
are CUDA builds that do not load against the CPU torch of our test machines, so those two names are
stubbed while qwen_vl_utils is imported and removed from `sys.modules` afterwards; the stub resize
returns the requested size, which is what these tests compare. Everything else runs as released:
`fetch_video`, `smart_nframes`, `calculate_video_frame_range`, `torch.linspace`, `smart_resize`.
"""
import enum
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types

import numpy as np
import pytest

from vtg_jax.data import extract as E
from vtg_jax.data import frame_sampling as F
from vtg_jax.data import synthetic as S
from vtg_jax.data.frame_store import FrameStore

torch = pytest.importorskip("torch")
PATCH = {"qwen2_5_vl": 14, "qwen3_vl": 16}


class _Resized:
    """What the stub resize returns: only the shape matters (and `.float()`, which fetch_video calls)."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def float(self):
        return self


def _stub_torchvision() -> dict:
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        m.__dict__.update(attrs)
        return m

    functional = module("torchvision.transforms.functional",
                        resize=lambda video, size, interpolation=None, antialias=None: _Resized(
                            (video.shape[0], video.shape[1], *size)))
    transforms = module("torchvision.transforms", functional=functional,
                        InterpolationMode=enum.Enum("InterpolationMode", "BICUBIC BILINEAR"))
    def read_video(*args, **kwargs):  # qwen-vl-utils' fallback when the decord path raises
        raise ValueError("the decord path refused this video (torchvision's reader is not available here)")

    io = module("torchvision.io", read_video=read_video)
    tv = module("torchvision", __version__="0.28.0", io=io, transforms=transforms)
    return {"torchvision": tv, "torchvision.io": io, "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional}


@pytest.fixture(scope="module")
def qvu():
    if importlib.util.find_spec("qwen_vl_utils") is None:
        pytest.skip("qwen-vl-utils is not installed (pip install -e '.[test]')")
    stubs = _stub_torchvision()
    saved = {k: sys.modules.get(k) for k in stubs}
    old_env = os.environ.get("FORCE_QWENVL_VIDEO_READER")
    os.environ["FORCE_QWENVL_VIDEO_READER"] = "decord"
    sys.modules.update(stubs)
    try:
        sys.modules.pop("qwen_vl_utils.vision_process", None)
        vp = importlib.import_module("qwen_vl_utils.vision_process")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        if old_env is None:
            os.environ.pop("FORCE_QWENVL_VIDEO_READER", None)
        else:
            os.environ["FORCE_QWENVL_VIDEO_READER"] = old_env
    assert vp.MODEL_SEQ_LEN == F.MODEL_SEQ_LEN  # the default total budget both sides assume
    return vp


class _FakeReader:
    """decord.VideoReader of a video that is never decoded: `get_batch` hands back uninitialised memory."""

    def __init__(self, total, fps, h, w):
        self.total, self.fps, self.h, self.w = total, fps, h, w

    def __len__(self):
        return self.total

    def get_avg_fps(self):
        return self.fps

    def get_batch(self, idx):
        arr = np.empty((len(idx), self.h, self.w, 3), np.uint8)  # virtual pages: never touched
        return types.SimpleNamespace(asnumpy=lambda: arr)


class _TorchNoCopy(types.ModuleType):
    """torch as qwen_vl_utils sees it, but `torch.tensor(ndarray)` shares memory (1080p x 768 frames
    would otherwise copy gigabytes of pixels that only the stub resize's shape reads)."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def tensor(data, *args, **kwargs):
        return torch.from_numpy(data) if isinstance(data, np.ndarray) else torch.tensor(data, *args, **kwargs)


def _reference(vp, monkeypatch, family, total, fps, h, w, ele):
    """(indices, (H, W), sample_fps) of qwen_vl_utils.fetch_video on a fake video."""
    monkeypatch.setitem(sys.modules, "decord", types.SimpleNamespace(VideoReader=lambda path: _FakeReader(total, fps, h, w)))
    monkeypatch.setattr(vp, "torch", _TorchNoCopy("torch"))
    (video, meta), sample_fps = vp.fetch_video({"video": "fake.mp4", **ele}, image_patch_size=PATCH[family],
                                               return_video_sample_fps=True, return_video_metadata=True)
    return list(meta["frames_indices"]), tuple(video.shape[2:]), sample_fps


def _ours(family, total, fps, h, w, ele):
    cfg = F.SamplingConfig(fps=ele.get("fps", 2.0), nframes=ele.get("nframes", 0),
                           min_frames=ele.get("min_frames", 4), max_frames=ele.get("max_frames", 768),
                           min_pixels=ele.get("min_pixels"), max_pixels=ele.get("max_pixels"),
                           total_pixels=ele.get("total_pixels"))
    window = (ele["video_start"], ele["video_end"]) if "video_start" in ele else None
    plan = F.plan_frames(cfg, family, total, fps, h, w, window=window)
    return plan.indices.tolist(), plan.size, plan.sample_fps


def _grid():
    rng = np.random.default_rng(0)
    sizes = [(56, 56), (64, 64), (240, 320), (360, 640), (480, 854), (720, 1280), (1080, 1920), (1920, 1080),
             (2160, 3840), (100, 2000), (37, 101)]
    options = [{}, {"fps": 1.0}, {"fps": 4.0, "max_frames": 448}, {"nframes": 64}, {"nframes": 63},
               {"min_pixels": 3136}, {"max_pixels": 128 * 28 * 28}, {"total_pixels": 3584 * 28 * 28},
               {"total_pixels": 8192 * 32 * 32, "max_frames": 768}, {"min_frames": 7, "max_frames": 99},
               {"max_pixels": 16384 * 28 * 28}, {"min_pixels": 512 * 32 * 32, "max_pixels": 1024 * 32 * 32}]
    cases = []
    for family in PATCH:
        for seconds in (1.0, 2.0, 2.5, 7.3, 30.0, 150.0, 384.2, 600.0, 1800.0, 3600.0):
            for src, _ in [(s, k) for s in (7.5, 23.976, 25.0, 29.97, 30.0, 59.94) for k in range(3)]:
                total = max(1, int(round(seconds * src)))
                h, w = sizes[int(rng.integers(len(sizes)))]
                ele = dict(options[int(rng.integers(len(options)))])
                if rng.random() < 0.3 and seconds > 4:  # a window (Time-R1's video_start / video_end)
                    a = float(np.round(rng.uniform(0, seconds / 2), 2))
                    ele.update(video_start=a, video_end=float(np.round(rng.uniform(a + 2, seconds + 3), 2)))
                cases.append((family, total, src, h, w, ele))
    return cases


@pytest.mark.parity
def test_counts_indices_sizes_and_fps_equal_fetch_video_on_a_grid(qvu, monkeypatch):
    checked = refused = 0
    for family, total, src, h, w, ele in _grid():
        try:
            ref = _reference(qvu, monkeypatch, family, total, src, h, w, ele)
        except (ValueError, AssertionError):  # refused: too few frames, nframes > frames, empty window, max < min
            with pytest.raises(ValueError):
                _ours(family, total, src, h, w, ele)
            refused += 1
            continue
        ours = _ours(family, total, src, h, w, ele)
        assert ours[0] == ref[0], (family, total, src, ele)
        assert ours[1] == ref[1], (family, total, src, h, w, ele)
        assert ours[2] == pytest.approx(ref[2], rel=1e-12), (family, total, src, ele)
        checked += 1
    assert checked > 300 and refused > 10


@pytest.mark.parity
def test_long_video_indices_equal_torch_linspace():
    """float32 linspace over 100k+ frames puts many positions within an ulp of a half: bit-exact or wrong."""
    rng = np.random.default_rng(1)
    for _ in range(400):
        first = int(rng.integers(0, 5000))
        last = int(rng.integers(first + 2, 250_000))
        n = int(rng.choice(np.arange(2, 769, 2)))
        ref = torch.linspace(first, last, n).round().long().numpy()
        np.testing.assert_array_equal(F.linspace_round_like_torch(first, last, n), ref)


def test_paper_examples_by_hand():
    # A 600 s 30 fps video at the 768-frame cap: 768 of 18,000 frames = 1.28 fps sampled, so Qwen2.5's
    # second_per_grid_ts is 2 / 1.28 = 1.5625 s, not the nominal 2 / 2 = 1.0.
    plan = F.plan_frames(F.SamplingConfig(), "qwen2_5_vl", 18_000, 30.0, 720, 1280)
    assert len(plan.indices) == 768 and plan.sample_fps == pytest.approx(1.28)
    # The per-frame budget falls with the frame count: 128000·28²·0.9 / 768 · 2 = 235,200 px per frame;
    # beta = sqrt(720·1280 / 235200) = 1.9795 -> floor(363.7 / 28)·28 = 336, floor(646.6 / 28)·28 = 644.
    assert plan.size == (336, 644)
    # A 2 s 720p clip for Qwen3-VL: 4 frames, each with the full 768·32² budget: beta = sqrt(921600 /
    # 786432) = 1.0825 -> 640x1152. The HF rule spreads one budget over t·h·w: beta = sqrt(4·921600 /
    # 786432) = 2.165 -> floor(332.6 / 32)·32 = 320, floor(591.2 / 32)·32 = 576.
    plan = F.plan_frames(F.SamplingConfig(), "qwen3_vl", 60, 30.0, 720, 1280)
    assert len(plan.indices) == 4 and plan.size == (640, 1152)
    assert F.plan_frames(F.SamplingConfig(rule="transformers"), "qwen3_vl", 60, 30.0, 720, 1280).size == (320, 576)


def _write_vfr_mp4(path):
    """10 fps for 2 s, then 50 fps for 2 s: presentation times written explicitly (PyAV, H.264)."""
    import fractions

    av = pytest.importorskip("av")
    times = [i / 10 for i in range(20)] + [2 + i / 50 for i in range(100)]
    with av.open(path, "w") as c:
        st = c.add_stream("libx264", rate=50)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        st.codec_context.time_base = fractions.Fraction(1, 1000)
        for k, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (k * 7) % 255, np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(round(t * 1000)), fractions.Fraction(1, 1000)
            for p in st.encode(frame):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    return np.asarray(times)


@pytest.mark.parametrize("rule", ["qwen_vl_utils", "transformers"])
def test_variable_frame_rate_manifest_times_are_the_decoders(tmp_path, rule):
    import decord

    vdir = tmp_path / "v"
    vdir.mkdir()
    true_times = _write_vfr_mp4(str(vdir / "vfr.mp4"))
    out = str(tmp_path / "store")
    stats = E.extract(str(vdir), out, family="qwen2_5_vl", sampling=rule, min_pixels=3136, progress=False)
    assert stats["done"] == 1
    meta = FrameStore(out).meta("vfr")
    assert meta["variable_frame_rate"] is True
    vr = decord.VideoReader(str(vdir / "vfr.mp4"))
    pts = vr.get_frame_timestamp(list(range(len(vr))))[:, 0]
    idx, stamps = np.asarray(meta["frame_indices"]), np.asarray(meta["timestamps"])
    np.testing.assert_allclose(pts, true_times, atol=1e-3)  # the file is what we meant to write
    # Within half a frame of the decoder's times (here: equal), which index / average fps is not.
    assert np.max(np.abs(stamps - pts[idx])) < 0.5 / 50
    assert np.max(np.abs(idx / vr.get_avg_fps() - pts[idx])) > 1.0
    # Sampled by time: 2 fps over 4 s -> 8 frames, each the frame nearest its evenly spaced target.
    targets = np.linspace(0.0, pts[-1], len(idx))
    assert len(idx) == 8 and np.max(np.abs(stamps - targets)) <= 0.05 + 1e-9
    assert meta["duration"] == pytest.approx(pts[-1] + 1 / vr.get_avg_fps())


@pytest.fixture(scope="module")
def real_videos(tmp_path_factory):
    """mp4s of several rates, lengths and sizes (OpenCV's mp4v), plus a synthetic benchmark video."""
    root = tmp_path_factory.mktemp("qvu_videos")
    rng = np.random.default_rng(3)
    specs = {"a_7p5fps": (37, 48, 80, 7.5), "b_25fps": (151, 72, 128, 25.0), "c_30fps": (95, 90, 60, 30.0),
             "d_23976": (250, 64, 112, 23.976), "e_2fps": (9, 56, 56, 2.0)}
    for name, (n, h, w, fps) in specs.items():
        S.write_mp4(rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8), str(root / f"{name}.mp4"), fps)
    return root


@pytest.mark.parity
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_extraction_equals_fetch_video_on_real_mp4s(qvu, real_videos, tmp_path, family):
    out = str(tmp_path / "store")
    ele = {"min_pixels": 3136, "max_pixels": 64 * 32 * 32}
    E.extract(str(real_videos), out, family=family, progress=False, **ele)
    store = FrameStore(out)
    assert len(store) == 5 and FrameStore(out).info()["rule"] == "qwen_vl_utils"
    for vid in store.video_ids():
        meta = store.meta(vid)
        (video, vmeta), sample_fps = qvu.fetch_video({"video": meta["path"], **ele}, image_patch_size=PATCH[family],
                                                     return_video_sample_fps=True, return_video_metadata=True)
        assert meta["frame_indices"] == list(vmeta["frames_indices"]), vid
        assert tuple(meta["shape"][1:3]) == tuple(video.shape[2:]), vid
        assert meta["sample_fps"] == pytest.approx(sample_fps, rel=1e-12), vid
        assert meta["variable_frame_rate"] is False
        np.testing.assert_allclose(meta["timestamps"], np.asarray(meta["frame_indices"]) / meta["source_fps"])


@pytest.mark.parity
def test_clip_window_extraction_equals_fetch_video_with_video_start_end(qvu, real_videos, tmp_path):
    from vtg_jax.data.records import GroundingRecord, clip_video_id

    rec = GroundingRecord(video_id=clip_video_id("b_25fps", 1.5, 4.75), duration=3.25, query="q",
                          spans=((0.5, 1.0),), qid="q0", clip=(1.5, 4.75),
                          extra={"source_video": "b_25fps", "video_path": "b_25fps.mp4"})
    out = str(tmp_path / "store")
    videos = E.videos_from_records([rec, rec], str(real_videos))
    assert videos == [(rec.video_id, str(real_videos / "b_25fps.mp4"), (1.5, 4.75))]
    assert E.extract(videos, out, family="qwen2_5_vl", min_pixels=3136, progress=False)["done"] == 1
    meta = FrameStore(out).meta(rec.video_id)
    (video, vmeta), sample_fps = qvu.fetch_video({"video": meta["path"], "video_start": 1.5, "video_end": 4.75,
                                                  "min_pixels": 3136}, return_video_sample_fps=True,
                                                 return_video_metadata=True)
    assert meta["frame_indices"] == list(vmeta["frames_indices"])
    assert meta["sample_fps"] == pytest.approx(sample_fps, rel=1e-12)
    assert meta["clip"] == [1.5, 4.75] and meta["duration"] == pytest.approx(3.25)
    # Times are relative to the window's start, as the record's spans are.
    np.testing.assert_allclose(meta["timestamps"], np.asarray(meta["frame_indices"]) / 25.0 - 1.5)
    assert meta["timestamps"][0] >= 0 and meta["timestamps"][-1] <= 3.25


def test_store_made_with_other_sampling_is_refused(real_videos, tmp_path):
    out = str(tmp_path / "store")
    E.extract(str(real_videos), out, family="qwen2_5_vl", min_pixels=3136, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        E.extract(str(real_videos), out, family="qwen2_5_vl", min_pixels=3136, total_pixels=1e6, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        E.extract(str(real_videos), out, family="qwen2_5_vl", sampling="transformers", min_pixels=3136,
                  progress=False)


def test_command_line_extracts_the_videos_and_clips_of_a_records_file(real_videos, tmp_path):
    import json
    import subprocess

    from vtg_jax.data.records import GroundingRecord, clip_video_id, write_jsonl

    clip = GroundingRecord(video_id=clip_video_id("d_23976", 2.0, 8.0), duration=6.0, query="q", spans=((1.0, 2.0),),
                           qid="c", clip=(2.0, 8.0), extra={"source_video": "d_23976"})
    whole = GroundingRecord(video_id="c_30fps", duration=95 / 30, query="q", spans=((0.5, 1.0),), qid="w")
    write_jsonl([clip, whole], str(tmp_path / "records.jsonl"))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "vtg_jax.data.extract", f"--records={tmp_path / 'records.jsonl'}",
           f"--video_dir={real_videos}", f"--out={out}", "--family=qwen3_vl", "--nframes=6", "--min_pixels=4096"]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"total": 2, "done": 2, "skipped": 0, "errors": 0}
    store = FrameStore(str(out))
    assert store.info()["nframes"] == 6 and store.info()["rule"] == "qwen_vl_utils"
    assert store.meta(clip.video_id)["clip"] == [2.0, 8.0] and store.meta(clip.video_id)["shape"][0] == 6
    # ceil(2.0 · 23.976) = 48 .. floor(8.0 · 23.976) = 191: six frames of that window, as fetch_video takes them.
    assert store.meta(clip.video_id)["frame_indices"] == np.round(np.linspace(48, 191, 6)).astype(int).tolist()
    assert store.meta("c_30fps")["frame_indices"] == [0, 19, 38, 56, 75, 94]


def test_time_r1_clip_records_extract_their_window_and_keep_relative_spans(real_videos, tmp_path):
    """Time-R1's published json -> records with clip windows -> extraction of only those windows."""
    import json

    from vtg_jax.data.datasets import load_dataset

    entries = [{"video": "videos/b_25fps.mp4", "video_start": 1.0, "video_end": 5.0, "duration": 4.0,
                "timestamp": [0.5, 2.25], "sentence": "A person opens a door.", "qid": "t0"},
               {"video": "videos/c_30fps.mp4", "duration": 95 / 30, "timestamp": [0.5, 1.5],
                "sentence": "a person sits.", "qid": "t1"}]
    (tmp_path / "train_2k5.json").write_text(json.dumps(entries))
    records, stats = load_dataset("time_r1", str(tmp_path / "train_2k5.json"))
    assert stats.kept == 2
    clip = next(r for r in records if r.clip)
    assert clip.clip == (1.0, 5.0) and clip.duration == 4.0 and clip.span == (0.5, 2.25)
    out = str(tmp_path / "store")
    assert E.extract(E.videos_from_records(records, str(real_videos)), out, family="qwen2_5_vl", min_pixels=3136,
                     progress=False)["done"] == 2
    store = FrameStore(out)
    meta = store.meta(clip.video_id)
    # ceil(1.0 · 25) = 25 .. floor(5.0 · 25) = 125: 101 frames -> 8 at 2 fps, their times from the clip's start.
    assert meta["frame_indices"][0] == 25 and meta["frame_indices"][-1] == 125 and len(meta["frame_indices"]) == 8
    assert meta["duration"] == pytest.approx(clip.duration)
    assert 0.0 == meta["timestamps"][0] and meta["timestamps"][-1] == pytest.approx(4.0)
    assert store.meta("c_30fps")["clip"] is None
