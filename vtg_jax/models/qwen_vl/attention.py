"""Scaled dot-product attention for the text decoder and the vision tower, with a per-backend choice.

    attention(q, k, v, scale=..., key_mask=..., causal=..., q_offset=..., impl="auto")

q [B, T, N, hd], k / v [B, S, K, hd] with N a multiple of K (GQA: kv head j serves query heads
j*N/K .. j*N/K + N/K - 1, like HF `repeat_kv`). Query i sees key j iff `key_mask[b, j]` (when given)
and, with `causal`, `j <= q_offset + i`. Softmax is float32; masked logits behave like a large
negative finite value (no NaN for a row that sees nothing).

Implementations (`impl`):
  "xla"     `jax.nn.dot_product_attention` over the full [T, S] score matrix with a boolean mask, with
            jax's default implementation: XLA's plain einsum + softmax, which materialises the float32
            [B, N, T, S] scores (no flash kernel; `python -m vtg_jax.plan` shows what that costs at
            video lengths).
  "splash"  the Pallas TPU splash kernel (`fused_attention.py`): memory linear in T, GQA native,
            padding as segment ids, run per chip under `shard_map`; on a non-TPU platform in Pallas'
            interpreter (tests only).
  "cudnn"   cuDNN's fused flash attention via `jax.nn.dot_product_attention(implementation="cudnn")`
            (`fused_attention.py`), bfloat16 / float16 only.
  "chunked" a hand-written kernel for XLA:CPU. On CPU the generic path is
            slow in the backward pass: autodiff of the softmax emits several full passes over the
            [B, N, T, S] matrices, and the [B, T, N, hd] layout makes XLA transpose the probabilities
            before the gradient matmuls. This path instead
              * works in a [B, K, G*T, hd] layout: the G query heads sharing a kv head are stacked as
                extra rows, so GQA needs no repeated k/v and every matmul is one batched GEMM whose
                big operand (the [rows, keys] score matrix) is never transposed;
              * has a custom VJP that keeps the unnormalised exponentials and folds the 1/rowsum into
                the small [rows, hd] operands (one elementwise pass over the big matrix per direction);
              * for causal self-attention starting at position 0 (training, prefill), splits queries
                into chunks and lets chunk c attend only keys [0, end of chunk c): about half the
                score matrix is never computed.
            Rows that see no key at all (e.g. queries at left padding) are unspecified (they are in
            every implementation, differently); every visible row agrees with "xla" to float32
            rounding, in values and gradients.
  "auto"    chosen per call for the platform the program will RUN on (`fused_attention.target_platform`:
            the active mesh's devices, so a CPU host compiling for a TPU slice chooses for the TPU):
            CPU "chunked"; TPU "splash" (for key lengths of at least SPLASH_MIN_KEYS: shorter segments,
            such as Qwen2.5's 64-patch vision windows, keep "xla", whose scores are then small); GPU
            "cudnn" for bfloat16 / float16, else "xla".
"splash" and "cudnn" apply to self-attention (training, scoring, prefill: queries and keys are the
same positions, causal from 0, or the vision segments); a call that attends a cache (a decode step:
one query row per sample against S slots, scores [rows, S], linear already) runs "xla" for them.

`shared_prefix_attention` is the sampler's decode / scoring kernel over a SHARED prompt prefix: the G
sample rows of a prompt attend to one copy of the prompt's K/V (stacked as extra query rows, like GQA
above) and each to its own suffix K/V; the two partial softmaxes are merged exactly by log-sum-exp.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vtg_jax.models.qwen_vl.fused_attention import (cudnn_attention, splash_attention, splash_prefix_partial,
                                                     target_platform)

IMPLS = ("auto", "xla", "chunked", "splash", "cudnn")
# "auto" on TPU keeps "xla" below this many keys (padded to whole splash blocks they would waste more than
# the [T, T] scores cost).
SPLASH_MIN_KEYS = 256
# Non-causal attention (the vision tower's segments) splits its G*T stacked query rows into about equal
# blocks of at most QBLOCK rows: identical math per query row, but XLA:CPU runs the backward pass's
# [rows, keys] matmul + elementwise fusions much faster at this size (~1.6x for [16, 4, 480, 480]).
QBLOCK = 256
CHUNK = 128  # query rows per causal chunk (per query head) of the "chunked" implementation


def check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"unknown attention_impl {impl!r}; choose one of {IMPLS}")


def resolve_impl(impl: str, *, platform: str | None = None, dtype: Any = None, keys: int | None = None) -> str:
    """The implementation `impl` runs as for self-attention over `keys` keys in `dtype` on `platform`
    (default: `fused_attention.target_platform()`); see the module docstring."""
    check_impl(impl)
    if impl != "auto":
        return impl
    platform = platform or target_platform()
    if platform == "cpu":
        return "chunked"
    if platform == "tpu":
        return "splash" if keys is None or keys >= SPLASH_MIN_KEYS else "xla"
    if platform == "gpu" and dtype is not None and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    return "xla"


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float, key_mask: jax.Array | None = None,
    causal: bool = False, q_offset: jax.Array | int = 0, impl: str = "auto",
) -> jax.Array:
    """Attention output [B, T, N, hd] in q's dtype (see the module docstring)."""
    impl = resolve_impl(impl, dtype=q.dtype, keys=k.shape[1])
    self_attention = q.shape[1] == k.shape[1] and (not causal or (isinstance(q_offset, int) and q_offset == 0))
    if impl in ("splash", "cudnn") and not self_attention:
        impl = "xla"
    if impl == "splash":
        return splash_attention(q, k, v, scale=scale, key_mask=key_mask, causal=causal)
    if impl == "cudnn":
        return cudnn_attention(q, k, v, scale=scale, key_mask=key_mask, causal=causal)
    if impl == "xla":
        return _xla(q, k, v, scale, key_mask, causal, q_offset)
    return _chunked(q, k, v, scale, key_mask, causal, q_offset)


def _mask(key_mask: jax.Array | None, causal: bool, q_offset: Any, t0: int, t1: int, s: int) -> jax.Array | None:
    """Boolean mask [B or 1, 1, t1 - t0, s] of queries t0..t1-1 over keys 0..s-1 (None: all visible)."""
    mask = None
    if causal:
        rows = q_offset + jnp.arange(t0, t1)
        mask = (jnp.arange(s)[None, :] <= rows[:, None])[None, None]
    if key_mask is not None:
        km = jnp.asarray(key_mask).astype(bool)[:, None, None, :s]
        mask = km if mask is None else mask & km
    return mask


def _xla(q, k, v, scale, key_mask, causal, q_offset):
    b, t, s = q.shape[0], q.shape[1], k.shape[1]
    mask = _mask(key_mask, causal, q_offset, 0, t, s)
    if mask is not None:
        mask = jnp.broadcast_to(mask, (b, 1, t, s))
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, implementation=None)


# ---------------------------------------------------------------------------------------------------
# "chunked": grouped layout + custom VJP.

_NEG = float(jnp.finfo(jnp.float32).min)


def _scores(q: jax.Array, k: jax.Array, mask: jax.Array | None) -> jax.Array:
    s = jnp.einsum("bkmh,bksh->bkms", q, k, preferred_element_type=jnp.float32)
    return s if mask is None else jnp.where(mask, s, _NEG)


def _block_fwd_math(q, k, v, mask):
    s = _scores(q, k, mask)
    e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
    inv = 1.0 / jnp.sum(e, axis=-1, keepdims=True)  # [B, K, M, 1]
    o = jnp.einsum("bkms,bksh->bkmh", e.astype(v.dtype), v, preferred_element_type=jnp.float32) * inv
    return o.astype(q.dtype), e, inv


@jax.custom_vjp
def _block(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """softmax(q k^T, masked) v for q [B, K, M, hd] (already scaled), k / v [B, K, S, hd];
    `mask` broadcasts to [B, K, M, S]."""
    return _block_fwd_math(q, k, v, mask)[0]


def _block_fwd(q, k, v, mask):
    o, e, inv = _block_fwd_math(q, k, v, mask)
    return o, (q, k, v, mask, o, e, inv)


def _block_bwd(res, do):
    q, k, v, mask, o, e, inv = res
    dof = do.astype(jnp.float32) * inv  # dO / rowsum: folds the softmax normalisation into [M, hd]
    # Operand order keeps the [M, S] matrices untransposed: contractions over M produce [hd, S].
    dv = jnp.einsum("bkmh,bkms->bkhs", dof.astype(v.dtype), e.astype(v.dtype),
                    preferred_element_type=jnp.float32)
    dp = jnp.einsum("bkmh,bksh->bkms", dof.astype(v.dtype), v, preferred_element_type=jnp.float32)
    delta = jnp.sum(dof * o.astype(jnp.float32), axis=-1, keepdims=True)  # rowsum(dP * P) / rowsum
    ds = e * (dp - delta)
    if mask is not None:  # rows that see nothing have e == 1 everywhere; keep masked logits constant
        ds = jnp.where(mask, ds, 0.0)
    ds = ds.astype(q.dtype)
    dq = jnp.einsum("bkms,bksh->bkmh", ds, k, preferred_element_type=jnp.float32)
    dk = jnp.einsum("bkmh,bkms->bkhs", q, ds, preferred_element_type=jnp.float32)
    return (dq.astype(q.dtype), jnp.swapaxes(dk, -1, -2).astype(k.dtype),
            jnp.swapaxes(dv, -1, -2).astype(v.dtype), None)


_block.defvjp(_block_fwd, _block_bwd)


def _chunked(q, k, v, scale, key_mask, causal, q_offset):
    b, t, n, hd = q.shape
    s, nk = k.shape[1], k.shape[2]
    g = n // nk
    if n % nk:
        raise ValueError(f"{n} query heads are not a multiple of {nk} kv heads")
    # Scaling q first is exact for power-of-two scales (hd = 64, 128, ...) and otherwise one rounding.
    qg = (q * jnp.asarray(scale, q.dtype)).reshape(b, t, nk, g, hd).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, hd]
    kg, vg = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, S, hd]
    static_start = isinstance(q_offset, int)
    if causal and static_start and t > CHUNK:
        bounds = [(t0, min(t0 + CHUNK, t)) for t0 in range(0, t, CHUNK)]
    elif not causal and g * t > QBLOCK:  # about equal query blocks, each over all keys
        nb = -(-g * t // QBLOCK)
        step = -(-t // nb)
        bounds = [(t0, min(t0 + step, t)) for t0 in range(0, t, step)]
    else:
        bounds = [(0, t)]
    outs = []
    for t0, t1 in bounds:
        c = t1 - t0
        # Keys a causal chunk can see end at q_offset + t1 (static when q_offset is).
        send = min(s, q_offset + t1) if causal and static_start else s
        mask = _mask(key_mask, causal, q_offset, t0, t1, send)
        if mask is not None:  # [B?, 1, C, S'] -> [B?, 1, G*C, S'] matching the stacked query rows
            mask = jnp.broadcast_to(mask[:, :, None], (mask.shape[0], 1, g, c, send)).reshape(
                mask.shape[0], 1, g * c, send)
        qc = qg[:, :, :, t0:t1].reshape(b, nk, g * c, hd)
        o = _block(qc, kg[:, :, :send], vg[:, :, :send], mask)
        outs.append(o.reshape(b, nk, g, c, hd))
    out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=3)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, hd)



# ---------------------------------------------------------------------------------------------------
# Shared-prefix attention (sampler decode / scoring; forward only).


def _partial(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None):
    """Unnormalised partial softmax of q [X, K, M, hd] (scaled) over k / v [X, K, S, hd]: (row max,
    row sum of exp, exp-weighted values), float32, shapes [X, K, M, 1], [X, K, M, 1], [X, K, M, hd]."""
    s = _scores(q, k, mask)
    m = jnp.max(s, axis=-1, keepdims=True)
    e = jnp.exp(s - m)
    o = jnp.einsum("bkms,bksh->bkmh", e.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return m, jnp.sum(e, axis=-1, keepdims=True), o


def shared_prefix_attention(
    q: jax.Array, prefix_k: jax.Array, prefix_v: jax.Array, k: jax.Array, v: jax.Array, *, scale: float,
    prefix_mask: jax.Array | None = None, key_mask: jax.Array | None = None, q_offset: jax.Array | int = 0,
    impl: str = "auto", differentiable: bool = False,
) -> jax.Array:
    """Attention output [R, T, N, hd] (q's dtype) of q [R, T, N, hd] over a shared prefix + own suffix.

    R = B * G rows, row b*G+g being sample g of prompt b. prefix_k / prefix_v [B, K, P, hd] (kv-head-major)
    are shared by the G rows of a prompt; k / v [R, K, S, hd] are each row's own suffix slots. Query i sees prefix key j
    iff `prefix_mask[b, j]` (no causal rule: the prefix precedes every query) and suffix key j iff
    `key_mask[r, j]` and `j <= q_offset + i`. Equal to `attention` over the concatenated [P + S] keys with
    the prefix repeated G times (to float32 rounding), but reads the prefix once per prompt instead of G
    times: the G samples' query rows (x the query heads sharing a kv head) are stacked against it.
    The prefix part runs in the splash kernel (`fused_attention.splash_prefix_partial`, memory linear in
    P) for impl "splash", and for "auto" on TPU when both the stacked rows and the prefix reach
    SPLASH_MIN_KEYS (teacher-forced scoring of whole completions); else in XLA (a decode step's few rows
    make a [rows, P] score matrix, linear in P already). `differentiable=True` (the shared-prefix update)
    always takes XLA's partial softmax for the prefix: splash's log-sum-exp output, which the exact merge
    needs, has no gradient in jax's kernel.
    """
    r, t, n, hd = q.shape
    b, nk = prefix_k.shape[0], prefix_k.shape[1]
    s = k.shape[2]
    if r % b or n % nk:
        raise ValueError(f"{r} rows / {n} heads are not multiples of {b} prompts / {nk} kv heads")
    g, gq = r // b, n // nk
    qs = (q * jnp.asarray(scale, q.dtype)).reshape(b, g, t, nk, gq, hd)
    # Prefix: rows (g, gq, t) of prompt b against its single prefix copy.
    qp = qs.transpose(0, 3, 1, 4, 2, 5).reshape(b, nk, g * gq * t, hd)
    rows, plen = g * gq * t, prefix_k.shape[2]
    if not differentiable and (impl == "splash" or resolve_impl(impl, dtype=q.dtype, keys=min(rows, plen)) == "splash"):
        m1, l1, o1 = splash_prefix_partial(qp, prefix_k, prefix_v, prefix_mask)
    else:
        pmask = None if prefix_mask is None else jnp.asarray(prefix_mask).astype(bool)[:, None, None, :]
        m1, l1, o1 = _partial(qp, prefix_k, prefix_v, pmask)

    def to_rows(x: jax.Array) -> jax.Array:  # [B, K, G*gq*T, c] -> [R, K, gq*T, c]
        c = x.shape[-1]
        return x.reshape(b, nk, g, gq * t, c).transpose(0, 2, 1, 3, 4).reshape(r, nk, gq * t, c)

    m1, l1, o1 = to_rows(m1), to_rows(l1), to_rows(o1)
    # Suffix: each row against its own slots, causal from q_offset.
    qsuf = qs.reshape(r, t, nk, gq, hd).transpose(0, 2, 3, 1, 4).reshape(r, nk, gq * t, hd)
    smask = _mask(key_mask, True, q_offset, 0, t, s)  # [R or 1, 1, T, S]
    smask = jnp.broadcast_to(smask[:, :, None], (smask.shape[0], 1, gq, t, s)).reshape(smask.shape[0], 1, gq * t, s)
    m2, l2, o2 = _partial(qsuf, k, v, smask)
    # Exact log-sum-exp merge, float32.
    m = jnp.maximum(m1, m2)
    a1, a2 = jnp.exp(m1 - m), jnp.exp(m2 - m)
    o = (o1 * a1 + o2 * a2) / (l1 * a1 + l2 * a2)
    return o.reshape(r, nk, gq, t, hd).transpose(0, 3, 1, 2, 4).reshape(r, t, n, hd).astype(q.dtype)
