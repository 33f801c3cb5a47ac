"""The row type of the HF <-> ours conversion table, and its standard tensor transforms.

One table maps every transformers-5 state_dict name (`model.visual.*`, `model.language_model.*`,
`lm_head.weight`) to a path in our NNX state. Legacy on-disk Qwen2.5 names
(`visual.*`, `model.layers.*`) are normalised by the loader (`convert.normalise_hf_name`) before lookup,
so rows only ever name the transformers-5 spelling.

Each row carries a pair of transforms: `to_ours(hf_array) -> our_array` and
`to_hf(our_array) -> hf_array`. Both act on host numpy arrays.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]
Path = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Row:
    """One tensor of the conversion table.

    hf: the transformers-5 state_dict key, e.g. "model.language_model.layers.0.self_attn.q_proj.weight".
    ours: the path of the `nnx.Param` in our model's state, e.g. ("language_model", "layers", 0,
        "attn", "q_proj", "kernel"); the value at that path is the parameter's array.
    to_ours / to_hf: inverse array transforms between the two layouts.
    """

    hf: str
    ours: Path
    to_ours: Transform
    to_hf: Transform


def identity(x: np.ndarray) -> np.ndarray:
    return x


def linear_kernel(x: np.ndarray) -> np.ndarray:
    """torch Linear weight (out, in) <-> Flax Dense kernel (in, out); its own inverse."""
    if x.ndim != 2:
        raise ValueError(f"linear weight must be 2-D, got shape {x.shape}")
    return np.ascontiguousarray(x.T)


def conv3d_to_dense(w: np.ndarray) -> np.ndarray:
    """Conv3d weight (D, C, T, P, P) with kernel == stride -> Dense kernel (C*T*P*P, D)."""
    return np.ascontiguousarray(w.reshape(w.shape[0], -1).T)


def dense_to_conv3d(shape: tuple[int, ...]) -> Transform:
    """The inverse of `conv3d_to_dense` for a Conv3d weight of `shape` (D, C, T, P, P)."""
    shape = tuple(int(s) for s in shape)

    def fn(k: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(k.T.reshape(shape))

    return fn


def linear(hf_prefix: str, ours_prefix: Path, bias: bool) -> list[Row]:
    """Rows of a torch Linear `hf_prefix.{weight,bias}` -> our Dense `ours_prefix.{kernel,bias}`."""
    rows = [Row(f"{hf_prefix}.weight", (*ours_prefix, "kernel"), linear_kernel, linear_kernel)]
    if bias:
        rows.append(Row(f"{hf_prefix}.bias", (*ours_prefix, "bias"), identity, identity))
    return rows


def norm(hf_prefix: str, ours_prefix: Path, bias: bool = False, scale_name: str = "scale") -> list[Row]:
    """Rows of an RMSNorm / LayerNorm `hf_prefix.{weight,bias}` -> `ours_prefix.{scale_name,bias}`."""
    rows = [Row(f"{hf_prefix}.weight", (*ours_prefix, scale_name), identity, identity)]
    if bias:
        rows.append(Row(f"{hf_prefix}.bias", (*ours_prefix, "bias"), identity, identity))
    return rows
