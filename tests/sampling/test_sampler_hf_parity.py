"""Sampler parity: greedy decoding vs transformers `generate`, and log-probs / top-k / top-p / `score`
vs an independent teacher-forced forward of the produced sequences.

Each HF model is built once per module, saved with `save_pretrained` and loaded with our
`from_pretrained(rope_index_rule="transformers5")` (the rule transformers 5.23 generate uses).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import qwen_hf_helpers as H  # noqa: E402

from vtg_jax.models.qwen_vl import from_pretrained  # noqa: E402
from vtg_jax.sampling import generate, score  # noqa: E402

FAMILIES = ["qwen2_5_vl", "qwen3_vl"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """family -> (hf model, our model, our model with a 40x sharper lm_head for sampling tests)."""
    out = {}
    for fam in FAMILIES:
        hf = H.hf_model(fam)
        path = str(tmp_path_factory.mktemp(fam))
        hf.save_pretrained(path)
        sharp = from_pretrained(path, rope_index_rule="transformers5")
        sharp.lm_head.kernel.set_value(sharp.lm_head.kernel.get_value() * 40.0)
        out[fam] = (hf, from_pretrained(path, rope_index_rule="transformers5"), sharp)
    return out


def _prompts(fam: str, seed: int = 1) -> list[H.Sample]:
    b = H.Builder(fam, seed=seed)
    return [H.concat(b.text(5), b.video(4, 4, 4), b.text(3)),
            H.concat(b.text(9), b.image(4, 4), b.text(2)),
            b.text(6)]


def _hf_generate(hf, inputs: dict, fam: str, n: int) -> np.ndarray:
    kw = {k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}
    if fam == "qwen3_vl":
        kw.pop("second_per_grid_ts", None)
    with torch.no_grad():
        seq = hf.generate(**kw, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return seq[:, inputs["input_ids"].shape[1]:].numpy()


@pytest.mark.parity
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_matches_hf_generate(models, family):
    """Left-padded batches: video / image / text prompts together, then a text-only batch (1-D
    cumsum positions); 12 greedy tokens each, token for token. (Both batches have 3 rows, so they
    share one compiled decode program.)"""
    hf, ours, _ = models[family]
    b = H.Builder(family, seed=7)
    for inputs in (H.batch(_prompts(family)), H.batch([b.text(7), b.text(12), b.text(3)])):
        want = _hf_generate(hf, inputs, family, 12)
        got = generate(ours, inputs, max_new_tokens=12)
        np.testing.assert_array_equal(got["tokens"][:, 0], want)
        assert (got["lengths"] == 12).all() and (got["finish_reason"] == "length").all()


def _teacher_forced_logits(model, prompts: list[H.Sample], tokens: np.ndarray) -> np.ndarray:
    """Plain (cache-free) forward of prompt + generated tokens, row b*G+g; logits predicting each
    generated token, [B*G, N, V]."""
    bsz, g, n = tokens.shape
    rows = [H.concat(prompts[i], H.Sample([int(t) for t in tokens[i, j]])) for i in range(bsz) for j in range(g)]
    inputs = H.batch(rows)
    logits = H.ours_logits(model, inputs)
    return logits[:, -n - 1:-1]


def _kept_set(z: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Independent numpy top-k then top-p (HF warper semantics) on temperature-scaled logits [V]."""
    keep = np.ones_like(z, bool)
    if top_k:
        keep &= z >= np.sort(z)[-top_k]
    zz = np.where(keep, z, -np.inf)
    order = np.argsort(-zz, kind="stable")
    p = np.exp(zz[order] - zz[order].max())
    p /= p.sum()
    mass_before = np.cumsum(p) - p
    nucleus = np.zeros_like(keep)
    nucleus[order[(mass_before < top_p) | (np.arange(len(z)) == 0)]] = True
    return keep & nucleus


@pytest.mark.parity
@pytest.mark.parametrize("family,top_k,top_p", [("qwen2_5_vl", 5, 1.0), ("qwen3_vl", 0, 0.6)])
def test_logprobs_truncation_and_score(models, family, top_k, top_p):
    """Returned log-probs == log softmax(logits/T) of a teacher-forced forward (1e-5); every token lies
    in the independently computed top-k / top-p set; `score` gives the same log-probs."""
    _, _, model = models[family]
    prompts = _prompts(family, seed=3)
    inputs = H.batch(prompts)
    temp, n = 0.8, 8
    out = generate(model, inputs, num_samples=2, max_new_tokens=n, temperature=temp, top_k=top_k, top_p=top_p,
                   seed=5)
    toks = out["tokens"]
    z = _teacher_forced_logits(model, prompts, toks).astype(np.float64) / temp  # [B*G, N, V]
    logp_all = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)
    flat = toks.reshape(-1, n)
    want = np.take_along_axis(logp_all, flat[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(out["logprobs"].reshape(-1, n), want, atol=1e-5)
    truncated = 0
    for r in range(flat.shape[0]):
        for t in range(n):
            kept = _kept_set(z[r, t], top_k, top_p)
            assert kept[flat[r, t]], f"row {r} step {t}: token {flat[r, t]} outside the kept set"
            truncated += int(kept.sum() < kept.size)
            renorm = logp_all[r, t, flat[r, t]] - np.log(np.exp(logp_all[r, t][kept]).sum())
            np.testing.assert_allclose(out["sampling_logprobs"].reshape(-1, n)[r, t], renorm, atol=1e-5)
    assert truncated == flat.size  # the sharpened head makes truncation bite at every step
    mask = np.ones_like(toks)
    mask[0, 0, 4:] = 0
    mask[2, 1, 1:] = 0
    got = score(model, inputs, toks, mask, temperature=temp, chunk_size=8)
    np.testing.assert_allclose(got, np.where(mask, out["logprobs"], 0.0), atol=1e-5)


@pytest.mark.parity
def test_first_token_distribution_chi_square(models):
    """At temperature 1 the empirical first-token histogram of 4000 seeded samples fits softmax(logits)
    of a plain forward (chi-square goodness of fit, fixed seed, bins with >= 5 expected counts; all
    bins below that are pooled into one)."""
    from scipy import stats

    _, _, model = models["qwen3_vl"]
    inputs = H.batch([H.Builder("qwen3_vl", seed=11).text(8)])
    n = 4000
    out = generate(model, inputs, num_samples=n, max_new_tokens=1, temperature=1.0, seed=123)
    logits = H.ours_logits(model, inputs)[0, -1].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = np.argsort(-p)
    big = order[p[order] * n >= 5]
    assert len(big) >= 3 and p[big].sum() > 0.5, "the sharpened head should concentrate the mass"
    counts = np.bincount(out["tokens"][0, :, 0], minlength=p.size)
    obs = np.append(counts[big], n - counts[big].sum())
    exp = np.append(p[big] * n, n * (1 - p[big].sum()))
    stat, pval = stats.chisquare(obs, exp)
    assert pval > 1e-3, f"chi-square {stat:.1f} over {len(obs)} bins, p={pval:.2e}"


def test_score_rejects_foreign_vocabularies(models):
    _, ours, _ = models["qwen2_5_vl"]
    inputs = H.batch([H.Builder("qwen2_5_vl").text(5)])
    comp = np.zeros((1, 2, 3), np.int64)
    with pytest.raises(ValueError, match="vocabulary"):
        score(ours, inputs, comp, np.ones_like(comp), source_vocab_size=151936)
    comp[0, 1, 2] = 5000
    with pytest.raises(ValueError, match="outside the scoring"):
        score(ours, inputs, comp, np.ones_like(comp))
