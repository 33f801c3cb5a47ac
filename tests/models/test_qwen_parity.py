"""Logit parity of our QwenVL against transformers 5.23 (fp32, eager attention) on tiny checkpoints.

Each HF model is built once per module, saved with `save_pretrained`, and loaded with our
`from_pretrained`; tolerances are fixed and never loosened to make a test pass.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from qwen_hf_helpers import (Builder, batch, concat, hf_forward, hf_logits, hf_model, max_valid_diff, ours_forward,
                             ours_logits)
from vtg_jax.models.qwen_vl import from_pretrained, save_pretrained

pytestmark = pytest.mark.parity
TOL = 1e-4


@pytest.fixture(scope="module")
def q25(tmp_path_factory):
    model = hf_model("qwen2_5_vl")
    path = str(tmp_path_factory.mktemp("q25"))
    model.save_pretrained(path)
    return model, from_pretrained(path, rope_index_rule="transformers5"), path


@pytest.fixture(scope="module")
def q3(tmp_path_factory):
    model = hf_model("qwen3_vl")
    path = str(tmp_path_factory.mktemp("q3"))
    model.save_pretrained(path)
    # Qwen3's video runs are single temporal groups, so the "original" rule equals transformers 5.
    return model, from_pretrained(path), path


def _check(pair, family, samples, case):
    hf, ours, _ = pair
    inputs = batch(samples)
    ref, ref_hidden = hf_forward(hf, inputs, family)
    got, got_hidden = ours_forward(ours, inputs)
    assert got.shape == ref.shape
    diff = max_valid_diff(got, ref, inputs["attention_mask"])
    print(f"MAXDIFF {family} {case}: {diff:.2e}")
    assert diff <= TOL, f"{case}: max |dlogits| {diff:.3g}"
    # Hidden states follow HF's convention: (embeddings, layers 0..N-2 before DeepStack, final norm).
    assert len(got_hidden) == len(ref_hidden)
    for i, (a, b) in enumerate(zip(got_hidden, ref_hidden)):
        assert max_valid_diff(a, b, inputs["attention_mask"]) <= TOL, f"{case}: hidden state {i}"


def _q25_cases():
    b = Builder("qwen2_5_vl", seed=1)
    text, image = b.text(9), concat(b.text(3), b.image(4, 6), b.text(4))
    # window 56 -> vw = 2 merged units; lh=3, lw=5 give ragged windows; 5 frames are padded to 6.
    video = concat(b.text(2), b.video(5, 6, 10, spgt=0.5), b.text(2))
    return {
        "text": [text],
        "video_uneven_windows_odd_frames": [video],
        "image_video_image": [concat(b.text(2), b.image(4, 4), b.text(2), b.video(6, 4, 6, spgt=1.5),
                                     b.image(6, 4), b.text(3))],
        # An image-only row, and rows equal to single-sample cases above (reused, compiled once, by
        # test_padded_batch_equals_unpadded).
        "left_padded_batch_with_image_row": [video, image, text],
    }


def _q3_cases():
    b = Builder("qwen3_vl", seed=2)
    text, image = b.text(9), concat(b.text(3), b.image(4, 6), b.text(4))
    video = concat(b.text(3), b.video(5, 4, 4), b.text(3))  # 3 timestamped groups, last frame padded
    return {
        "text": [text],
        "video_3_groups": [video],
        "image_video_mixed_deepstack": [concat(b.text(2), b.video(4, 4, 6), b.text(2), b.image(6, 4), b.text(2))],
        "left_padded_batch_with_image_row": [video, image, text],
    }


Q25_CASES, Q3_CASES = _q25_cases(), _q3_cases()


@pytest.mark.parametrize("case", list(Q25_CASES))
def test_qwen25_logits_match_hf(q25, case):
    _check(q25, "qwen2_5_vl", Q25_CASES[case], case)


@pytest.mark.parametrize("case", list(Q3_CASES))
def test_qwen3_logits_match_hf(q3, case):
    _check(q3, "qwen3_vl", Q3_CASES[case], case)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_padded_batch_equals_unpadded(q25, q3, family):
    """Left padding must not change the valid tokens' logits."""
    _, ours, _ = q25 if family == "qwen2_5_vl" else q3
    samples = (Q25_CASES if family == "qwen2_5_vl" else Q3_CASES)["left_padded_batch_with_image_row"]
    padded = ours_logits(ours, batch(samples))
    for i, s in enumerate(samples):
        if i == 1:
            continue  # the image-only row has no single-sample compile; its HF parity is checked above
        alone = ours_logits(ours, batch([s]))[0]
        diff = float(np.abs(padded[i, padded.shape[1] - len(s.ids):] - alone).max())
        print(f"MAXDIFF {family} padded-vs-unpadded row {i}: {diff:.2e}")
        assert diff <= 1e-5, (i, diff)


def test_tied_qwen3_checkpoint_loads(tmp_path):
    hf = hf_model("qwen3_vl", tied=True, seed=3)
    hf.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(os.path.join(tmp_path, "model.safetensors"), framework="numpy") as f:
        assert "lm_head.weight" not in f.keys()
    ours = from_pretrained(str(tmp_path))
    assert ours.lm_head is None
    b = Builder("qwen3_vl", seed=4)
    inputs = batch([concat(b.text(3), b.image(4, 4), b.text(3))])
    got = ours_logits(ours, inputs)
    diff = max_valid_diff(got, hf_logits(hf, inputs, "qwen3_vl"), None)
    print(f"MAXDIFF qwen3_vl tied: {diff:.2e}")
    assert diff <= TOL
    # The convenience path (numpy in, positions and vision inputs computed on the host) agrees.
    eager = ours(**{k: v for k, v in inputs.items() if k != "second_per_grid_ts"}, output_hidden_states=True)
    assert float(np.abs(np.asarray(eager["logits"]) - got).max()) <= 1e-5


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_round_trip_through_save_pretrained(q25, q3, family, tmp_path):
    """HF -> ours -> save_pretrained (sharded) -> transformers gives the same tensors and logits."""
    from transformers import AutoModelForImageTextToText

    hf, ours, _ = q25 if family == "qwen2_5_vl" else q3
    save_pretrained(ours, str(tmp_path), max_shard_bytes=100_000)
    with open(os.path.join(tmp_path, "model.safetensors.index.json")) as f:
        assert len(set(json.load(f)["weight_map"].values())) > 1
    back = AutoModelForImageTextToText.from_pretrained(str(tmp_path), dtype="float32",
                                                       attn_implementation="eager").eval()
    ref_sd, back_sd = hf.state_dict(), back.state_dict()
    assert set(ref_sd) == set(back_sd)
    for k in ref_sd:
        assert np.array_equal(ref_sd[k].numpy(), back_sd[k].numpy()), k
    b = Builder(family, seed=5)
    inputs = batch([concat(b.text(2), b.video(4, 4, 4), b.text(2))])
    diff = max_valid_diff(hf_logits(back, inputs, family), hf_logits(hf, inputs, family), None)
    assert diff == 0.0


def test_sharded_hf_checkpoint_loads(q25, tmp_path):
    hf, ours, _ = q25
    hf.save_pretrained(tmp_path, max_shard_size="50KB")
    with open(os.path.join(tmp_path, "model.safetensors.index.json")) as f:
        names = json.load(f)["weight_map"]
    assert len(set(names.values())) > 1
    # transformers writes Qwen2.5 with the legacy names, which our loader normalises.
    assert any(n.startswith("visual.") for n in names) and any(n.startswith("model.layers.") for n in names)
    again = from_pretrained(str(tmp_path), rope_index_rule="transformers5")
    inputs = batch(Q25_CASES["text"])
    assert np.array_equal(ours_logits(again, inputs), ours_logits(ours, inputs))
