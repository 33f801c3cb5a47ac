"""Integrity checks of array pytrees: content checksums (checkpoint verification) and finiteness.

Why checksums of the arrays rather than of the files: Orbax writes each process's shards into OCDBT
files whose layout depends on the mesh, and a run may resume on another mesh; a checksum of each
array's logical contents is the same whatever the sharding, is computed on device where the arrays
already are (one reduction per array, collective over hosts, never a host copy of the weights), and
verifies what was actually restored rather than what sits on disk.

The checksum of an array is two uint32 words over its elements' bit patterns `v_i` (float32 as its
bits, 16-bit types widened, bool/int8 widened):

    weighted = Σ v_i · (2i + 1)             mod 2**32   (any change of one element changes it: the
                                                          weight is odd, so ±2^k·odd ≠ 0 mod 2**32)
    mixed    = Σ fmix32(v_i ⊕ fmix32(i))    mod 2**32   (MurmurHash3's finaliser: swaps and scattered
                                                          changes do not cancel)

plus the shape and dtype. It is an integrity check against storage corruption (flipped bits, torn or
stale files), not a cryptographic hash.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser (full avalanche of a uint32)."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _as_uint32_words(x: jax.Array) -> jax.Array:
    """The bit patterns of `x` as a flat uint32 array (64-bit types as two words per element)."""
    size = jnp.dtype(x.dtype).itemsize
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32).reshape(-1)
    if size in (4, 8):  # 8-byte elements become [..., 2] words
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    unsigned = {2: jnp.uint16, 1: jnp.uint8}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).reshape(-1)


def _checksum(x: jax.Array) -> jax.Array:
    """[2] uint32: (weighted, mixed) of one array (see the module docstring)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    v = _as_uint32_words(x)
    i = jax.lax.iota(jnp.uint32, v.shape[0])
    weighted = jnp.sum(v * (2 * i + 1), dtype=jnp.uint32)
    mixed = jnp.sum(_fmix32(v ^ _fmix32(i)), dtype=jnp.uint32)
    return jnp.stack([weighted, mixed])


_checksums_jit = jax.jit(lambda leaves: [_checksum(x) for x in leaves])


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray))


def _array_leaves(tree: Any) -> list[tuple[str, Any]]:
    """(path, leaf) of every array leaf, paths as `jax.tree_util.keystr` gives them."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in flat if _is_array(leaf)]


def _describe(x: Any) -> str:
    dtype = jax.random.key_data(x).dtype if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x.dtype
    return f"{jnp.dtype(dtype).name}{list(x.shape)}"


def _by_device_set(leaves: list[tuple[str, Any]]) -> list[list[tuple[str, Any]]]:
    """Leaves grouped so that one jitted call sees one set of devices (a committed single-device array
    and a mesh-sharded one cannot share a computation); numpy leaves go to the default device."""
    groups: dict[Any, list[tuple[str, Any]]] = {}
    for k, x in leaves:
        key = frozenset(d.id for d in x.sharding.device_set) if isinstance(x, jax.Array) else None
        groups.setdefault(key, []).append((k, x if isinstance(x, jax.Array) else jnp.asarray(x)))
    return list(groups.values())


def tree_checksums(tree: Any) -> dict[str, str]:
    """{leaf path: "dtype[shape]:weighted:mixed"} for every array leaf of `tree` (jax or numpy).

    Collective when arrays span processes (every process calls it; all get the same answer). Arrays
    are reduced where they live, one jitted call per set of devices.
    """
    out = {}
    for group in _by_device_set(_array_leaves(tree)):
        sums = jax.device_get(_checksums_jit([x for _, x in group]))
        for (k, x), s in zip(group, sums):
            a, b = (int(w) for w in np.asarray(s))
            out[k] = f"{_describe(x)}:{a:08x}:{b:08x}"
    return dict(sorted(out.items()))


def checksum_mismatches(expected: dict[str, str], tree: Any) -> list[str]:
    """Readable differences between saved checksums and `tree`'s (empty when it verifies)."""
    actual = tree_checksums(tree)
    bad = [f"{k}: saved {expected[k]}, restored {actual.get(k, '(absent)')}" for k in expected
           if actual.get(k) != expected[k]]
    bad += [f"{k}: restored but has no saved checksum" for k in actual if k not in expected]
    return bad


def _nonfinite_count(x: jax.Array) -> jax.Array:
    return jnp.sum(~jnp.isfinite(x), dtype=jnp.int32)


_nonfinite_jit = jax.jit(lambda leaves: [_nonfinite_count(x) for x in leaves])


def nonfinite_leaves(tree: Any) -> dict[str, int]:
    """{leaf path: number of NaN/±inf values} of the floating array leaves that have any (empty: all
    finite). Collective when arrays span processes."""
    leaves = [(k, x) for k, x in _array_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    out = {}
    for group in _by_device_set(leaves):
        counts = jax.device_get(_nonfinite_jit([x for _, x in group]))
        out.update({k: int(c) for (k, _), c in zip(group, counts) if int(c)})
    return dict(sorted(out.items()))


def all_finite(tree: Any) -> jax.Array:
    """Traceable: a bool scalar, True when every floating leaf of `tree` is finite (integer leaves,
    such as optimizer step counts, are always finite)."""
    oks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
           if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(oks)) if oks else jnp.asarray(True)
