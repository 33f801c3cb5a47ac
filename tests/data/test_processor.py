"""Tests of vtg_jax.data.prompts / processor against the papers' text and transformers 5.23.

HF's Qwen video processors need torchvision (not installable here), so the HF side runs the real
`ProcessorMixin.__call__` of `Qwen2_5_VLProcessor` / `Qwen3VLProcessor` (placeholder replacement,
`<t seconds>` text, mm_token_type_ids, second_per_grid_ts) with a stub video processor that only reports
the grid and the video metadata; pixels are checked against HF's view/permute layout in torch.
"""
from __future__ import annotations

import re

import numpy as np
import paper_prompts  # tests/data/paper_prompts.py: the papers' prompt passages, quoted in the repository
import pytest
import torch

from vtg_jax.data.processor import (IGNORE_INDEX, QwenVLProcessor, build_tiny_tokenizer, chat_messages, patchify,
                                    patchify_image, render_chat)
from vtg_jax.data.prompts import TEMPLATES, get_template
from vtg_jax.models.qwen_vl.presets import get_preset

FAMILIES = {"qwen2_5_vl": "qwen2.5-vl-tiny", "qwen3_vl": "qwen3-vl-tiny"}
SIZE = {"qwen2_5_vl": (56, 84), "qwen3_vl": (64, 96)}  # multiples of patch·merge (28 / 32)


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    from transformers import AutoTokenizer

    return {fam: AutoTokenizer.from_pretrained(build_tiny_tokenizer(str(tmp_path_factory.mktemp(fam)), fam))
            for fam in FAMILIES}


def _frames(family: str, t: int, seed: int = 0) -> np.ndarray:
    h, w = SIZE[family]
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------
# Templates.


def _flat(s: str) -> str:
    return " ".join(s.replace("\\rightarrow", " ").split())


# Each verbatim template: the paper passage it reproduces and the paper's placeholder for the query
# (None: LongVTG-R1's QA prompt, whose "[QUESTION][OPTIONS (if applicable)]" stands for `{query}{options}`).
PAPER_PASSAGES = {
    "video_opd": (paper_prompts.VIDEO_OPD_FIG7, "{query}"),
    "tempsamp_r1": (paper_prompts.TEMPSAMP_R1_FIG8_TVG, "query"),
    "tempsamp_r1_cot": (paper_prompts.TEMPSAMP_R1_FIG8_TVG_COT, "query"),
    "tempsamp_r1_highlight": (paper_prompts.TEMPSAMP_R1_FIG8_HIGHLIGHT, "query"),
    "tempsamp_r1_highlight_cot": (paper_prompts.TEMPSAMP_R1_FIG8_HIGHLIGHT_COT, "query"),
    "longvtg_r1": (paper_prompts.LONGVTG_R1_APPC_GROUNDING, "[EVENT]"),
    "longvtg_r1_qa": (paper_prompts.LONGVTG_R1_APPC_QA, None),
}


@pytest.mark.parametrize("name", [n for n, t in TEMPLATES.items() if t.verbatim])
def test_template_is_verbatim_in_paper(name):
    t = TEMPLATES[name]
    assert name in PAPER_PASSAGES, f"verbatim template {name!r} has no paper passage in tests/data/paper_prompts.py"
    passage, slot = PAPER_PASSAGES[name]
    text = _flat(passage)
    user = (t.user.replace("{query}{options}", "[QUESTION][OPTIONS (if applicable)]") if slot is None
            else t.format(slot))
    assert _flat(user) in text
    if t.system:
        assert _flat(t.system) in text


def test_template_formatting_and_errors():
    assert get_template("tvg_r1").format("a dog runs").count("<think> </think>") == 1
    assert "<answer> </answer>" in get_template("tvg_r1").format("q")
    assert "The video is 12.3 seconds long." in get_template("default_duration").format("q", duration=12.34)
    qa = get_template("longvtg_r1_qa").format("Why?", options=["red", "blue"])
    assert '"Why? A. red B. blue"' in qa
    with pytest.raises(ValueError, match="duration"):
        get_template("default_duration").format("q")
    with pytest.raises(ValueError, match="unknown prompt template"):
        get_template("nope")
    with pytest.raises(ValueError, match="query"):
        get_template("default").format("  ")


# ---------------------------------------------------------------------------------------------------
# Chat rendering vs the tokenizer's Jinja chat template.


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("system", [None, "You are a video analysis expert."])
@pytest.mark.parametrize("answer", [None, "<think>x</think><answer>1.50 to 3.25</answer>"])
def test_render_matches_apply_chat_template(toks, family, system, answer):
    user = get_template("tempsamp_r1").format("a man opens the door")
    hf = toks[family].apply_chat_template(chat_messages(user, system=system, answer=answer), tokenize=False,
                                          add_generation_prompt=answer is None)
    assert render_chat(family, user, system=system, answer=answer) == hf
    img = toks[family].apply_chat_template(chat_messages(user, media="image"), tokenize=False,
                                           add_generation_prompt=True)
    assert render_chat(family, user, media="image") == img


# ---------------------------------------------------------------------------------------------------
# Placeholder expansion vs transformers' processors.


class _StubVideoProcessor:
    """Stands in for the torchvision-based HF video processor: reports grid + metadata only."""

    merge_size, temporal_patch_size = 2, 2

    def __init__(self, grid, metadata):
        self.grid, self.metadata = grid, metadata

    def __call__(self, videos, **kwargs):
        return {"pixel_values_videos": np.zeros((1, 1), np.float32), "video_grid_thw": np.asarray(self.grid),
                "video_metadata": self.metadata}


def _hf_processor(family: str, tok, grid, metadata):
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    cls = Qwen3VLProcessor if family == "qwen3_vl" else Qwen2_5_VLProcessor
    p = cls.__new__(cls)  # its __init__ wants real (torchvision) image/video processors
    p.tokenizer, p.video_processor, p.chat_template = tok, _StubVideoProcessor(grid, metadata), None
    for name in ("image", "video", "vision_start", "vision_end"):
        token = {"image": "<|image_pad|>", "video": "<|video_pad|>"}.get(name, f"<|{name}|>")
        setattr(p, f"{name}_token", token)
        setattr(p, f"{name}_token_id", tok.convert_tokens_to_ids(token))
    return p


def _hf_run(family, tok, text, n_frames, grid, src_fps=30.0, step=15):
    from transformers.video_utils import VideoMetadata

    idx = list(range(0, n_frames * step, step))  # frames sampled at src_fps / step = 2 fps
    ts = np.asarray(idx) / src_fps  # before the call: Qwen3's processor pads `frames_indices` in place
    meta = [VideoMetadata(total_num_frames=n_frames * step, fps=src_fps, frames_indices=idx)]
    proc = _hf_processor(family, tok, grid, meta)
    return proc(text=[text], videos=[np.zeros((n_frames, 8, 8, 3), np.uint8)]), ts


@pytest.mark.parametrize("family,n_frames,answer", [("qwen2_5_vl", 4, None), ("qwen2_5_vl", 5, "1.00 to 2.00"),
                                                   ("qwen3_vl", 4, None), ("qwen3_vl", 5, "1.00 to 2.00")])
def test_expansion_matches_hf_processor(toks, family, n_frames, answer):
    cfg, tok = get_preset(FAMILIES[family]), toks[family]
    proc = QwenVLProcessor(cfg, tok, template="video_opd", fps=2.0)
    grid = patchify(_frames(family, n_frames), cfg)[1]
    hf, ts = _hf_run(family, tok, proc.render("a man opens the door", answer), n_frames, grid)
    ours = proc(_frames(family, n_frames), ts, "a man opens the door", answer=answer)
    np.testing.assert_array_equal(ours["input_ids"], np.asarray(hf["input_ids"][0]))
    np.testing.assert_array_equal(ours["mm_token_type_ids"], np.asarray(hf["mm_token_type_ids"][0]))
    np.testing.assert_array_equal(ours["attention_mask"], np.asarray(hf["attention_mask"][0]))
    np.testing.assert_array_equal(ours["video_grid_thw"], np.asarray(hf["video_grid_thw"]))
    if family == "qwen2_5_vl":
        np.testing.assert_allclose(ours["second_per_grid_ts"], hf["second_per_grid_ts"], rtol=1e-6)
    else:
        assert "second_per_grid_ts" not in ours


def test_qwen3_timestamp_text_hand_computed(toks):
    cfg, tok = get_preset("qwen3-vl-tiny"), toks["qwen3_vl"]
    ts = [0.0, 0.5, 1.0, 1.5, 7.0]  # groups (0, .5), (1, 1.5), (7, 7 repeated) -> 0.25, 1.25, 7.0
    out = QwenVLProcessor(cfg, tok)(_frames("qwen3_vl", 5), ts, "q")
    np.testing.assert_allclose(out["video_timestamps"], [0.25, 1.25, 7.0])
    group = "<|vision_start|>" + "<|video_pad|>" * 6 + "<|vision_end|>"  # 64x96 -> 4x6 patches -> 6 tokens
    want = "<|vision_start|>" + "".join(f"<{t} seconds>{group}" for t in ("0.2", "1.2", "7.0")) + "<|vision_end|>"
    assert "<|im_start|>user\n" + want + "Find the start" in tok.decode(out["input_ids"])


def test_qwen25_interleaved_layout(toks):
    """Qwen2.5 + timestamps: the Qwen3 token layout, grid split into one row per run (module docstring)."""
    cfg, tok = get_preset("qwen2.5-vl-tiny"), toks["qwen2_5_vl"]
    proc = QwenVLProcessor(cfg, tok, interleave_timestamps=True, fps=2.0)
    grid = patchify(_frames("qwen2_5_vl", 6), cfg)[1]
    hf, ts = _hf_run("qwen3_vl", tok, proc.render("q"), 6, grid)
    out = proc(_frames("qwen2_5_vl", 6), ts, "q")
    np.testing.assert_array_equal(out["input_ids"], np.asarray(hf["input_ids"][0]))
    np.testing.assert_array_equal(out["video_grid_thw"], [[1, 4, 6]] * 3)
    np.testing.assert_allclose(out["second_per_grid_ts"], [1.0] * 3)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, out["mm_token_type_ids"] == 2, 0])).reshape(-1, 2)).ravel()
    np.testing.assert_array_equal(runs, [6, 6, 6])
    assert out["position_ids"].shape == (3, len(out["input_ids"]))


# ---------------------------------------------------------------------------------------------------
# Labels, prompt length, positions.


@pytest.mark.parametrize("family", FAMILIES)
def test_answer_labels_cover_answer_and_im_end(toks, family):
    cfg, tok = get_preset(FAMILIES[family]), toks[family]
    proc = QwenVLProcessor(cfg, tok, template="tempsamp_r1")
    answer = "<answer>12.54 to 17.83</answer>"
    sft = proc(_frames(family, 4), [0, 0.5, 1, 1.5], "a dog runs", answer=answer)
    gen = proc(_frames(family, 4), [0, 0.5, 1, 1.5], "a dog runs")
    n = int(sft["prompt_length"])
    np.testing.assert_array_equal(sft["input_ids"][:n], gen["input_ids"])
    assert n == len(gen["input_ids"]) and gen["loss_mask"].sum() == 0 and (gen["labels"] == IGNORE_INDEX).all()
    assert tok.decode(gen["input_ids"]).endswith("<|im_start|>assistant\n")
    mask = sft["loss_mask"].astype(bool)
    assert np.flatnonzero(mask).tolist() == list(range(n, len(sft["input_ids"]) - 1))  # all but the final "\n"
    assert tok.decode(sft["input_ids"][mask]) == answer + "<|im_end|>"
    assert tok.decode(sft["input_ids"][~mask][n:]) == "\n"
    np.testing.assert_array_equal(sft["labels"][mask], sft["input_ids"][mask])
    assert (sft["labels"][~mask] == IGNORE_INDEX).all()
    # Segment-wise encoding equals encoding the whole expanded text at once.
    np.testing.assert_array_equal(tok.encode(tok.decode(sft["input_ids"]), add_special_tokens=False),
                                  sft["input_ids"])


@pytest.mark.parametrize("family", FAMILIES)
def test_position_ids_follow_rope_index(toks, family):
    from vtg_jax.models.qwen_vl.rope import get_rope_index

    cfg, tok = get_preset(FAMILIES[family]), toks[family]
    out = QwenVLProcessor(cfg, tok, fps=1.0)(_frames(family, 6), np.arange(6.0), "q", answer="1 to 2")
    pos, deltas = get_rope_index(cfg, out["input_ids"][None], out["mm_token_type_ids"][None],
                                 video_grid_thw=out["video_grid_thw"], second_per_grid_ts=out.get("second_per_grid_ts"))
    np.testing.assert_array_equal(out["position_ids"], pos[:, 0])
    np.testing.assert_array_equal(out["rope_deltas"], deltas[0])
    if family == "qwen2_5_vl":  # 1 fps: second_per_grid_t = 2 -> temporal ids 0, 4, 8 (x tokens_per_second 2)
        vid = out["mm_token_type_ids"] == 2
        t = out["position_ids"][0, vid]
        assert sorted(set((t - t.min()).tolist())) == [0, 4, 8]


# ---------------------------------------------------------------------------------------------------
# Pixels vs HF's view/permute layout computed in torch.


def _torch_patchify(frames: np.ndarray, family: str, ps: int, tps: int = 2, m: int = 2) -> np.ndarray:
    mean, std = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)) \
        if family == "qwen2_5_vl" else ((0.5,) * 3, (0.5,) * 3)
    v = torch.from_numpy(frames).permute(0, 3, 1, 2).to(torch.float32)  # (T, C, H, W)
    mean_t = torch.tensor(mean)[:, None, None] * (1.0 / (1 / 255))  # HF fuses rescale into mean/std
    std_t = torch.tensor(std)[:, None, None] * (1.0 / (1 / 255))
    v = (v - mean_t) / std_t
    if v.shape[0] % tps:
        v = torch.cat([v, v[-1:].expand(tps - v.shape[0] % tps, -1, -1, -1)])
    t, c, h, w = v.shape
    gt, gh, gw = t // tps, h // ps, w // ps
    p = v.view(gt, tps, c, gh // m, m, ps, gw // m, m, ps).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return p.reshape(gt * gh * gw, c * tps * ps * ps).numpy()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("n_frames", [1, 3, 4])
def test_patchify_matches_torch_layout(family, n_frames):
    cfg = get_preset(FAMILIES[family])
    frames = _frames(family, n_frames, seed=n_frames)
    rows, grid = patchify(frames, cfg)
    want = _torch_patchify(frames, family, cfg.vision.patch_size)
    np.testing.assert_array_equal(rows, want)  # bit-exact: same fp32 ops as HF's fused normalise
    h, w = SIZE[family]
    p = cfg.vision.patch_size
    np.testing.assert_array_equal(grid, [[(n_frames + 1) // 2, h // p, w // p]])
    assert rows.dtype == np.float32 and rows.shape[1] == cfg.vision.patch_dim
    img_rows, img_grid = patchify_image(frames[0], cfg)
    np.testing.assert_array_equal(img_rows, _torch_patchify(frames[:1].repeat(2, 0), family, p))
    np.testing.assert_array_equal(img_grid, [[1, h // p, w // p]])


def test_bad_inputs_raise(toks, tmp_path):
    cfg, tok = get_preset("qwen2.5-vl-tiny"), toks["qwen2_5_vl"]
    proc = QwenVLProcessor(cfg, tok)
    with pytest.raises(ValueError, match="multiples of patch"):
        proc(np.zeros((2, 50, 56, 3), np.uint8), [0, 1], "q")
    with pytest.raises(ValueError, match="uint8"):
        proc(np.zeros((2, 56, 56, 3), np.float32), [0, 1], "q")
    with pytest.raises(ValueError, match="timestamps"):
        proc(_frames("qwen2_5_vl", 2), [0.0], "q")
    with pytest.raises(ValueError, match="non-decreasing"):
        proc(_frames("qwen2_5_vl", 2), [1.0, 0.0], "q")
    with pytest.raises(ValueError, match="special token"):
        proc(_frames("qwen2_5_vl", 2), [0, 1], "q <|video_pad|>")
    with pytest.raises(ValueError, match="special token"):
        proc(_frames("qwen2_5_vl", 2), [0, 1], "q", answer="1 to 2<|im_end|>")
    with pytest.raises(ValueError, match="interleave_timestamps"):
        QwenVLProcessor(get_preset("qwen3-vl-tiny"), tok, interleave_timestamps=False)
    with pytest.raises(ValueError, match="model config expects"):
        QwenVLProcessor(cfg.replace(video_token_id=5), tok)
    # A raw `tokenizers.Tokenizer` and a directory path work too.
    from tokenizers import Tokenizer

    path = build_tiny_tokenizer(str(tmp_path / "tok"))
    raw = QwenVLProcessor(cfg, Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json")))
    a = raw(_frames("qwen2_5_vl", 2), [0, 1], "q", answer="1 to 2")
    b = QwenVLProcessor(cfg, path)(_frames("qwen2_5_vl", 2), [0, 1], "q", answer="1 to 2")
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert re.search(r"\d", tok.decode(a["input_ids"]))


# ---------------------------------------------------------------------------------------------------
# End to end: frames -> our processor -> our model == the same arrays -> transformers' model.


def _hf_tiny_model(family: str, seed: int = 0):
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen3VLConfig,
                              Qwen3VLForConditionalGeneration)

    from vtg_jax.models.qwen_vl.config import config_to_hf_dict

    d = config_to_hf_dict(get_preset(FAMILIES[family]))
    d.pop("model_type"), d.pop("architectures")
    cls, ccls = ((Qwen3VLForConditionalGeneration, Qwen3VLConfig) if family == "qwen3_vl"
                 else (Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig))
    torch.manual_seed(seed)
    config = ccls(**d)
    config._attn_implementation = "eager"
    model = cls(config).eval().float()
    with torch.no_grad():  # perturb norms/biases so that every tensor matters
        for name, prm in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_q" in name:
                prm.add_(0.1 * torch.randn_like(prm))
    return model


@pytest.mark.parity
@pytest.mark.parametrize("family,interleave", [("qwen2_5_vl", False), ("qwen2_5_vl", True), ("qwen3_vl", True)])
def test_processor_to_model_parity(toks, tmp_path, family, interleave):
    from vtg_jax.models.qwen_vl import from_pretrained

    hf = _hf_tiny_model(family)
    hf.save_pretrained(str(tmp_path))
    ours = from_pretrained(str(tmp_path), rope_index_rule="transformers5")  # the rule transformers 5.23 uses
    proc = QwenVLProcessor(ours.cfg, toks[family], template="tempsamp_r1", fps=2.0,
                           interleave_timestamps=interleave)
    out = proc(_frames(family, 5, seed=3), np.arange(5) / 2.0, "a red ball moves left",
               answer="<answer>0.50 to 1.50</answer>")
    names = ["input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw"]
    names += ["second_per_grid_ts"] if family == "qwen2_5_vl" else []
    batch = {k: out[k][None] if k in ("input_ids", "attention_mask", "mm_token_type_ids") else out[k] for k in names}
    with torch.no_grad():
        want = hf(**{k: torch.from_numpy(np.asarray(v, np.int64 if v.dtype.kind == "i" else np.float32))
                     for k, v in batch.items()}).logits.numpy()
        hf_pos, _ = hf.model.get_rope_index(
            torch.from_numpy(batch["input_ids"].astype(np.int64)), mm_token_type_ids=torch.from_numpy(
                batch["mm_token_type_ids"].astype(np.int64)), video_grid_thw=torch.from_numpy(out["video_grid_thw"]),
            **({"second_per_grid_ts": torch.from_numpy(out["second_per_grid_ts"])} if family == "qwen2_5_vl" else {}),
            attention_mask=torch.from_numpy(batch["attention_mask"].astype(np.int64)))
    np.testing.assert_array_equal(out["position_ids"], hf_pos[:, 0].numpy())
    if family == "qwen2_5_vl" and interleave:  # the split grid leaves the vision tower's output unchanged
        pv = torch.from_numpy(out["pixel_values_videos"])
        with torch.no_grad():
            split = hf.model.get_video_features(pv, torch.from_numpy(out["video_grid_thw"])).pooler_output
            whole = hf.model.get_video_features(pv, torch.tensor([[3, 4, 6]])).pooler_output
        np.testing.assert_allclose(torch.cat(split).numpy(), torch.cat(whole).numpy(), rtol=0, atol=1e-6)
    got = np.asarray(ours(**batch, position_ids=out["position_ids"][:, None]))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parity
def test_second_per_grid_ts_uses_the_sampled_fps_like_the_hf_processor(toks):
    """With qwen-vl-utils' metadata the HF processor takes the fps actually sampled, n / frames · fps
    (`VideoMetadata.sampled_fps`): 4 of 150 frames at 30 fps = 0.8 fps, so Qwen2.5's
    second_per_grid_ts is 2 / 0.8 = 2.5 s, which positions every video token in time."""
    from transformers.video_utils import VideoMetadata

    family = "qwen2_5_vl"
    cfg, tok = get_preset(FAMILIES[family]), toks[family]
    proc = QwenVLProcessor(cfg, tok, template="video_opd", fps=2.0)
    frames = _frames(family, 4)
    grid = patchify(frames, cfg)[1]
    meta = [VideoMetadata(total_num_frames=150, fps=30.0, frames_indices=[0, 50, 99, 149])]
    hf = _hf_processor(family, tok, grid, meta)(text=[proc.render("q")], videos=[np.zeros((4, 8, 8, 3), np.uint8)])
    ours = proc(frames, np.asarray([0, 50, 99, 149]) / 30.0, "q", sample_fps=0.8)
    np.testing.assert_allclose(ours["second_per_grid_ts"], hf["second_per_grid_ts"], rtol=1e-6)
    np.testing.assert_allclose(ours["second_per_grid_ts"], 2.5, rtol=1e-6)
    nominal = proc(frames, np.asarray([0, 50, 99, 149]) / 30.0, "q")
    np.testing.assert_allclose(nominal["second_per_grid_ts"], 1.0)
    assert not np.array_equal(ours["position_ids"], nominal["position_ids"])  # absolute-time ids move
    with pytest.raises(ValueError, match="sample_fps"):
        proc(frames, np.arange(4.0), "q", sample_fps=0.0)
