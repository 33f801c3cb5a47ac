"""Attention kernels whose memory is linear in the sequence: Pallas splash attention (TPU) and cuDNN's
fused flash attention (GPU), behind the interface of `attention.attention`.

    splash_attention(q, k, v, scale=..., key_mask=..., causal=...)
    cudnn_attention(q, k, v, scale=..., key_mask=..., causal=...)

q [B, T, N, hd], k / v [B, T, K, hd] (self-attention: queries and keys are the same T positions, the
causal rule is key <= query); key_mask [B, T] (True = a real token). Rows of padding queries are
unspecified (as in `attention`); every real query gets the masked softmax over the real keys.

splash (`jax.experimental.pallas.ops.tpu.splash_attention`): blocks of queries against blocks of keys
with an online softmax, so no [T, T] score matrix exists; the causal mask skips the blocks above the
diagonal. GQA is native (query head n reads kv head n // (N / K)). Padding is a segment id: real tokens
are segment 1, padding (the key mask's and the tail that rounds T up to a whole block) segment 0, and a
query sees only keys of its own segment, so a padding query sees padding keys (never an empty row, no
NaN) and a real query only real ones. A Pallas TPU kernel cannot be partitioned by XLA's SPMD pass, so
inside a mesh it runs under `shard_map` on each chip's own batch rows and heads (the activation rules'
`batch` and `heads` axes; an axis the mesh does not divide stays whole). Under context parallelism (the
rules split `length` over the `sequence` mesh axis) each chip takes its own chunk of the queries against
all keys and values (gathered over that axis; shard_map's transpose sums their gradients back), with the
causal mask offset by the chunk's start. On a non-TPU platform it runs in Pallas' interpreter: slow, and
only for tests of its values and gradients.

cuDNN (`jax.nn.dot_product_attention(implementation="cudnn")`): cuDNN's padding masks are sequence
LENGTHS (the first n positions are real), so each row's real tokens are first moved to the front by a
stable permutation (their order, hence the causal rule among them, is kept), attended with the lengths
and moved back: any key mask works, not only right padding, without materialising a [T, T] mask.
An odd length is padded by one position (cuDNN's training kernels need even lengths). cuDNN takes
bfloat16 / float16 only. jax partitions it over batch and heads itself.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax.core import spmd as core_spmd
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.sharding import PartitionSpec

from vtg_jax.parallel.rules import DEFAULT_RULES, activation_rules, logical_axes, logical_to_spec, shards_of

# Splash tiles: the sequence is padded to a multiple of LANE and the largest of BLOCKS dividing it is
# the query / key block (512 is what MaxText uses on v5; smaller sequences get smaller blocks).
LANE = 128
BLOCKS = (512, 256, 128)


def target_platform() -> str:
    """The platform the program being traced will run on: the active mesh's devices when a mesh is set
    (a CPU host compiling for a TPU slice gets "tpu"), else this process's default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else getattr(mesh, "abstract_device", None)
    return device.platform if device is not None else jax.default_backend()


def _block_size(length: int) -> int:
    return next(b for b in BLOCKS if length % b == 0)


def _splash_kernel(q_len: int, kv_len: int, heads: int, causal: bool, interpret: bool, offset: int = 0) -> Any:
    """The splash kernel for padded query / key lengths, query heads and causality (query i sees key j
    iff j <= i + offset). Built per trace (its mask tables become constants of the traced program);
    splash caches the host-side mask processing, so only the first build of a shape costs (seconds at
    32k tokens)."""
    shape = (q_len, kv_len)
    one = splash_mask.CausalMask(shape, offset=offset) if causal else splash_mask.FullMask(shape)
    bq, bkv = _block_size(q_len), _block_size(kv_len)
    blocks = splash.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq, block_kv_dkv=bkv,
                               block_kv_dkv_compute=bkv, use_fused_bwd_kernel=True)
    return splash.make_splash_mha(splash_mask.MultiHeadMask([one] * heads), block_sizes=blocks,
                                  head_shards=1, q_seq_shards=1, interpret=interpret)


def _splash_local(q: jax.Array, k: jax.Array, v: jax.Array, q_segments: jax.Array, kv_segments: jax.Array, *,
                  causal: bool, interpret: bool, sequence_axes: tuple[str, ...] = (), shards: int = 1) -> jax.Array:
    """Splash on one chip's share: q [B, N, Tq, hd] (scaled), k / v [B, K, Tp, hd], segments [B, Tq] and
    [B, Tp]. With `shards` > 1 the queries are this chip's 1/shards of the sequence along `sequence_axes`
    (context parallelism) and the keys all of it: chunk c's causal rule is offset by c * Tq, one kernel per
    chunk picked by the chip's index (mask tables are static; blocks above each chunk's diagonal are
    skipped, so the last chunk does the most work)."""
    def run(kernel: Any) -> jax.Array:
        return jax.vmap(lambda q, k, v, qs, ks: kernel(q, k, v, segment_ids=splash.SegmentIds(q=qs, kv=ks)))(
            q, k, v, q_segments, kv_segments)

    tq, tk, heads = q.shape[2], k.shape[2], q.shape[1]
    if shards == 1 or not causal:
        return run(_splash_kernel(tq, tk, heads, causal, interpret))
    chunk = jax.lax.axis_index(sequence_axes)
    return jax.lax.switch(chunk, [functools.partial(run, _splash_kernel(tq, tk, heads, True, interpret, c * tq))
                                  for c in range(shards)])


def _sequence_shards() -> tuple[tuple[str, ...], int]:
    """The mesh axes the active logical rules split the `length` axis over (context parallelism,
    `parallel.rules`) and how many parts they make; ((), 1) without a mesh or such axes."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return (), 1
    rules = tuple(core_spmd.get_logical_axis_rules()) or activation_rules(DEFAULT_RULES)
    return logical_axes("length", mesh, rules), shards_of("length", mesh, rules)


def _spmd_specs(q_shape: tuple[int, ...], k_shape: tuple[int, ...]) -> tuple[Any, Any, Any] | None:
    """shard_map specs (q, k/v, segments) of the head-major layout from the active mesh and activation
    rules; None without a mesh. Heads are split only when q's and k's head counts split alike (GQA
    keeps each query head with its kv head)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return None
    rules = tuple(core_spmd.get_logical_axis_rules()) or activation_rules(DEFAULT_RULES)
    qs = logical_to_spec(("batch", "heads", "length", "head_dim"), rules, mesh, q_shape)
    ks = logical_to_spec(("batch", "kv_heads", "length", "head_dim"), rules, mesh, k_shape)
    heads = qs[1] if qs[1] == ks[1] else None
    batch = qs[0]
    return (PartitionSpec(batch, heads, None, None), PartitionSpec(batch, heads, None, None),
            PartitionSpec(batch, None))


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float,
                     key_mask: jax.Array | None = None, causal: bool = False) -> jax.Array:
    """Self-attention output [B, T, N, hd] in q's dtype by the splash kernel (module docstring)."""
    b, t, n, hd = q.shape
    if k.shape[1] != t:
        raise ValueError(f"splash attention is self-attention: {t} queries vs {k.shape[1]} keys")
    specs = _spmd_specs((b, n, t, hd), (b, k.shape[2], t, hd))
    sequence_axes, shards = _sequence_shards() if specs is not None else ((), 1)
    # The padded length splits into `shards` whole lanes (each chip's query chunk is a whole block).
    padded = -(-t // (LANE * shards)) * LANE * shards
    real = jnp.ones((b, t), jnp.int32) if key_mask is None else jnp.asarray(key_mask).astype(jnp.int32)
    segments = jnp.pad(real, ((0, 0), (0, padded - t)))

    def head_major(x: jax.Array) -> jax.Array:  # [B, T, H, hd] -> [B, H, Tp, hd]
        return jnp.pad(x.transpose(0, 2, 1, 3), ((0, 0), (0, 0), (0, padded - t), (0, 0)))

    qh = head_major(q * jnp.asarray(scale, q.dtype))
    kh, vh = head_major(k), head_major(v)
    local = functools.partial(_splash_local, causal=causal, interpret=target_platform() != "tpu",
                              sequence_axes=sequence_axes, shards=shards)
    if specs is not None:
        qspec, kspec, sspec = specs
        # Context parallelism: each chip its own query chunk against every key (the keys / values are
        # all-gathered over the sequence axes; their gradients are summed back by shard_map's transpose).
        chunked = sequence_axes[0] if len(sequence_axes) == 1 else (sequence_axes or None)
        qspec = PartitionSpec(qspec[0], qspec[1], chunked, None)
        qseg = PartitionSpec(sspec[0], chunked)
        local = jax.shard_map(local, in_specs=(qspec, kspec, kspec, qseg, sspec), out_specs=qspec, check_vma=False)
    out = local(qh, kh, vh, segments, segments)
    return out[:, :, :t].transpose(0, 2, 1, 3).astype(q.dtype)


def splash_prefix_partial(q: jax.Array, k: jax.Array, v: jax.Array,
                          key_mask: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Forward-only splash of query rows against a shared prompt prefix (the sampler's scoring and
    decode, `attention.shared_prefix_attention`), in that function's partial-softmax form so that the
    suffix part merges exactly: q [B, K, M, hd] (scaled; M stacked rows per kv head), k / v [B, K, P, hd],
    key_mask [B, P]. Returns (row log-sum-exp [B, K, M, 1], ones [B, K, M, 1], the normalised output
    [B, K, M, hd]) in float32: the kernel's softmax is the partial one with max = logsumexp and sum 1.
    Every row sees the whole prefix (no causal rule); padded prefix keys are segment 0."""
    b, nk, rows, hd = q.shape
    plen = k.shape[2]
    rp, pp = -(-rows // LANE) * LANE, -(-plen // LANE) * LANE
    real = jnp.ones((b, plen), jnp.int32) if key_mask is None else jnp.asarray(key_mask).astype(jnp.int32)
    kv_segments = jnp.pad(real, ((0, 0), (0, pp - plen)))
    q_segments = jnp.ones((b, rp), jnp.int32)
    qp = jnp.pad(q, ((0, 0), (0, 0), (0, rp - rows), (0, 0)))
    kp, vp = (jnp.pad(x, ((0, 0), (0, 0), (0, pp - plen), (0, 0))) for x in (k, v))
    interpret = target_platform() != "tpu"

    def local(q, k, v, qs, ks):
        blocks = splash.BlockSizes(block_q=_block_size(q.shape[2]), block_kv=_block_size(k.shape[2]),
                                   block_kv_compute=_block_size(k.shape[2]))
        mask = splash_mask.MultiHeadMask([splash_mask.FullMask((q.shape[2], k.shape[2]))] * q.shape[1])
        kernel = splash.make_splash_mha(mask, block_sizes=blocks, save_residuals=True, head_shards=1,
                                        q_seq_shards=1, interpret=interpret)
        out, (lse,) = jax.vmap(lambda q, k, v, qs, ks: kernel(q, k, v, segment_ids=splash.SegmentIds(q=qs, kv=ks)))(
            q, k, v, qs, ks)
        return out.astype(jnp.float32), lse.astype(jnp.float32)

    specs = _spmd_specs(qp.shape, kp.shape)
    if specs is not None:
        heads, sspec = specs[1], specs[2]
        lse_spec = PartitionSpec(heads[0], heads[1], None)
        local = jax.shard_map(local, in_specs=(heads, heads, heads, sspec, sspec), out_specs=(heads, lse_spec),
                              check_vma=False)
    out, lse = local(qp, kp, vp, q_segments, kv_segments)
    lse = lse[:, :, :rows, None]
    return lse, jnp.ones_like(lse), out[:, :, :rows]


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float, key_mask: jax.Array | None = None,
                    causal: bool = False, implementation: str = "cudnn") -> jax.Array:
    """Self-attention output [B, T, N, hd] by cuDNN's fused kernel (module docstring).

    `implementation` is passed to `jax.nn.dot_product_attention`; tests pass "xla" to check this
    function's reordering and lengths on a machine without cuDNN."""
    b, t = q.shape[:2]
    # cuDNN's training kernels take even lengths only (jax's `check_is_flash_attention`: "Unsupported
    # sequence length" for an odd T): an odd T gets one padding position, excluded by the lengths.
    pad = t % 2
    if key_mask is None and not pad:
        return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=causal, implementation=implementation)
    real = jnp.ones((b, t), bool) if key_mask is None else jnp.asarray(key_mask).astype(bool)
    if pad:
        q, k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (q, k, v))
        real = jnp.pad(real, ((0, 0), (0, pad)))
    # Stable: real tokens first in their own order, then the padding.
    order = jnp.argsort(~real, axis=1, stable=True)
    lengths = jnp.sum(real, axis=1, dtype=jnp.int32)

    def gather(x: jax.Array) -> jax.Array:
        return jnp.take_along_axis(x, order[:, :, None, None], axis=1)

    out = jax.nn.dot_product_attention(gather(q), gather(k), gather(v), scale=scale, is_causal=causal,
                                       query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                                       implementation=implementation)
    # out[b, i] belongs to position order[b, i]: scatter back.
    restore = jnp.argsort(order, axis=1)
    return jnp.take_along_axis(out, restore[:, :, None, None], axis=1)[:, :t]
