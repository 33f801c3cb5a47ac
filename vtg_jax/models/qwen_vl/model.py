"""`QwenVL`: the Qwen2.5-VL / Qwen3-VL conditional-generation model as one NNX module.

Equivalent of HF `Qwen{2_5,3}VLForConditionalGeneration` in transformers 5.23:
    visual          VisionTower (vision.py)
    language_model  TextModel (text.py): embed_tokens, layers, norm
    lm_head         Dense (absent when `cfg.tie_word_embeddings`; then logits = h @ embed_tokens.T)

Host-side work (3-D rope index, vision-tower index arrays) happens in `prepare_inputs`, which `__call__`
runs automatically for numpy inputs. A jitted caller runs `prepare_inputs` on the host and passes its
`position_ids` and `vision_inputs`, so everything inside the model is pure array code with static shapes.

A sampler composes the pieces: `embed(...)` (visual features scattered in + DeepStack additions),
`language_model(embeds, position_ids, attention_mask, deepstack, cache=[LayerKV...], cache_index=i)`
(text.py documents the KV-cache contract, and the shared-prefix cache `SharedPrefixKV`) and `logits(hidden)`; `prepare_inputs(...)["rope_deltas"]`
gives decode positions `last_prompt_pos + 1 + k` on all three axes, as HF generate places them.
"""
from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vtg_jax.models.qwen_vl.attention import check_impl
from vtg_jax.models.qwen_vl.config import QwenVLConfig
from vtg_jax.models.qwen_vl.rope import get_rope_index, text_position_ids
from vtg_jax.models.qwen_vl.remat import check_remat
from vtg_jax.models.qwen_vl.text import TextModel, dense, logical_constraint
from vtg_jax.models.qwen_vl.vision import VisionTower, prepare_vision_inputs


def _np(x: Any) -> np.ndarray | None:
    return None if x is None else np.asarray(x)


def prepare_inputs(
    cfg: QwenVLConfig,
    input_ids: Any,
    attention_mask: Any = None,
    image_grid_thw: Any = None,
    video_grid_thw: Any = None,
    second_per_grid_ts: Any = None,
    mm_token_type_ids: Any = None,
) -> dict[str, Any]:
    """Host-side (numpy) inputs of a jitted forward: {"position_ids" [3,B,S], "rope_deltas" [B,1],
    "vision_inputs" (dict, or None without pixels)}.

    The vision tower runs ONCE on the concatenation of image then video rows, so `vision_inputs` is
    built for `concat(image_grid_thw, video_grid_thw)`; attention segments never cross grid entries
    (one segment per temporal patch group), so this equals HF's two separate tower calls.

    Positions mimic HF `compute_3d_position_ids`: with grids and `mm_token_type_ids`, the rope
    index; with grids but no `mm_token_type_ids`, Qwen3 raises and Qwen2.5 warns and falls back to
    arange(S) (what HF does, silently); without grids, arange(S) on all axes.
    """
    ids = np.asarray(input_ids)
    bsz, seq = ids.shape
    grids = [g for g in (_np(image_grid_thw), _np(video_grid_thw)) if g is not None]
    deltas = np.zeros((bsz, 1), np.int64)
    if grids and mm_token_type_ids is None:
        if cfg.family == "qwen3_vl":
            raise ValueError("Qwen3-VL: image/video grids were given but mm_token_type_ids is missing; pass "
                             "the processor's mm_token_type_ids so that M-RoPE positions can be computed")
        warnings.warn("Qwen2.5-VL: mm_token_type_ids missing with image/video inputs; falling back to 1-D "
                      "positions like transformers does. Pass mm_token_type_ids for correct M-RoPE.")
        positions = text_position_ids(attention_mask, seq, bsz)
    elif grids:
        positions, deltas = get_rope_index(cfg, ids, mm_token_type_ids, attention_mask, image_grid_thw,
                                           video_grid_thw, second_per_grid_ts)
    else:
        positions = text_position_ids(attention_mask, seq, bsz)
    vision_inputs = None
    if grids:
        vision_inputs = prepare_vision_inputs(cfg.vision, cfg.family, np.concatenate(grids).astype(np.int64))
    return {"position_ids": positions, "rope_deltas": deltas, "vision_inputs": vision_inputs}


def scatter_visual(
    cfg: QwenVLConfig, embeds: jax.Array, input_ids: jax.Array, feats: jax.Array, n_image: int,
    n_video: int, deepstack: list[jax.Array] | tuple = (),
) -> tuple[jax.Array, list[jax.Array]]:
    """Replace placeholder embeddings by visual features, in sequence order (HF `masked_scatter`).

    `feats` holds the n_image image tokens then the n_video video tokens. Image placeholders take image
    features in order, video placeholders video features. DeepStack features ([n_image+n_video, D] each)
    are gathered the same way and zero elsewhere, which equals HF's `h[visual_mask] += ds[k]` with
    images and videos interleaved in sequence order.
    """
    b, s, d = embeds.shape
    flat = input_ids.reshape(-1)
    is_img = (flat == cfg.image_token_id) & (n_image > 0)
    is_vid = (flat == cfg.video_token_id) & (n_video > 0)
    idx = jnp.where(is_img, jnp.cumsum(is_img) - 1, jnp.cumsum(is_vid) - 1 + n_image)
    idx = jnp.clip(idx, 0, max(n_image + n_video - 1, 0))
    vis = (is_img | is_vid)[:, None]
    out = jnp.where(vis, feats[idx].astype(embeds.dtype), embeds.reshape(-1, d)).reshape(b, s, d)
    ds = [jnp.where(vis, f[idx].astype(embeds.dtype), 0).reshape(b, s, d) for f in deepstack]
    return out, ds


def _check_placeholders(cfg: QwenVLConfig, input_ids: Any, n_image: int, n_video: int) -> None:
    """HF raises when placeholder counts do not match the features; do the same for concrete inputs."""
    if isinstance(input_ids, jax.core.Tracer):
        return
    ids = np.asarray(input_ids)
    for name, tok, n in (("image", cfg.image_token_id, n_image), ("video", cfg.video_token_id, n_video)):
        got = int((ids == tok).sum())
        if n and got != n:
            raise ValueError(f"{name} features and {name} tokens do not match: tokens {got}, features {n}")


class QwenVL(nnx.Module):
    """Qwen2.5-VL / Qwen3-VL for conditional generation.

    `attention_impl` ("auto", "xla", "chunked", "splash", "cudnn"; `attention.py`) selects the attention
    kernel of the text decoder and the vision tower: "auto" chooses while tracing, for the platform the
    program runs on (the active mesh's devices): Pallas splash attention on TPU, cuDNN flash attention on
    GPU in bfloat16 (XLA's einsum in float32), the chunked custom-VJP kernel on CPU (about 3x faster
    attention fwd+bwd there). `set_attention_impl` changes it after construction (e.g. after
    `from_pretrained`).
    """

    def __init__(self, cfg: QwenVLConfig, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 remat: str = "none", attention_impl: str = "auto", rngs: nnx.Rngs):
        check_remat(remat)
        check_impl(attention_impl)
        self.cfg, self.dtype = cfg, dtype
        self.visual = VisionTower(cfg.vision, cfg.family, dtype=dtype, param_dtype=param_dtype,
                                  remat=remat != "none", attention_impl=attention_impl, rngs=rngs)
        self.language_model = TextModel(cfg.text, dtype=dtype, param_dtype=param_dtype, remat=remat,
                                        attention_impl=attention_impl, rngs=rngs)
        self.lm_head: nnx.Linear | None = nnx.data(None)
        if not cfg.tie_word_embeddings:
            self.lm_head = dense(cfg.text.hidden_size, cfg.text.vocab_size, ("embed", "vocab"), bias=False,
                                 dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def set_attention_impl(self, impl: str) -> None:
        """Switch the attention kernel of the whole model ("auto", "xla", "chunked", "splash", "cudnn")."""
        self.visual.set_attention_impl(impl)
        self.language_model.set_attention_impl(impl)

    # -- building blocks (also used by the sampler) ---------------------------------------------------

    def embed(
        self, input_ids: Any, pixel_values: Any = None, pixel_values_videos: Any = None,
        vision_inputs: dict[str, Any] | None = None,
    ) -> tuple[jax.Array, list[jax.Array]]:
        """Token embeddings with visual features scattered in, and per-layer DeepStack additions."""
        ids = jnp.asarray(input_ids)
        embeds = self.language_model.embed_tokens(ids)
        pixels = [jnp.asarray(p) for p in (pixel_values, pixel_values_videos) if p is not None]
        if not pixels:
            return embeds, []
        if vision_inputs is None:
            raise ValueError("pixel inputs need vision_inputs (or grids, so that __call__ can build them)")
        if pixels[-1].ndim == 3:
            return self._embed_shards(ids, embeds, pixel_values, pixels[-1], vision_inputs)
        merge2 = self.cfg.vision.spatial_merge_size**2
        n_image = 0 if pixel_values is None else pixels[0].shape[0] // merge2
        n_video = 0 if pixel_values_videos is None else pixels[-1].shape[0] // merge2
        _check_placeholders(self.cfg, input_ids, n_image, n_video)
        dtype = self.visual_dtype()
        rows = jnp.concatenate([p.astype(dtype) for p in pixels], axis=0)  # images then videos
        feats, deepstack = self.visual(rows, vision_inputs)
        return scatter_visual(self.cfg, embeds, ids, feats, n_image, n_video, deepstack)

    def _embed_shards(self, ids: jax.Array, embeds: jax.Array, images: Any, videos: jax.Array,
                      vision_inputs: dict[str, Any]) -> tuple[jax.Array, list[jax.Array]]:
        """Vision shards (`VisionTower`): videos [D, N, C] are D packings, shard d holding the videos of
        prompts d*B/D .. (d+1)*B/D - 1; each shard's features fill its own prompts' placeholders."""
        if images is not None:
            raise ValueError("vision shards ([D, N, C] pixel rows) carry videos only; pass images packed")
        shards, b = videos.shape[0], ids.shape[0]
        if b % shards:
            raise ValueError(f"{b} prompts do not split into {shards} vision shards")
        feats, deepstack = self.visual(videos.astype(self.visual_dtype()), vision_inputs)  # [D, U, E]

        def scatter(e: jax.Array, i: jax.Array, f: jax.Array, ds: list[jax.Array]):
            return scatter_visual(self.cfg, e, i, f, 0, f.shape[0], ds)

        split = (shards, b // shards)
        out, ds = jax.vmap(scatter)(embeds.reshape(*split, *embeds.shape[1:]), ids.reshape(*split, -1), feats,
                                    deepstack)
        return out.reshape(embeds.shape), [x.reshape(embeds.shape) for x in ds]

    def visual_dtype(self) -> Any:
        """HF casts pixels to the tower's weight dtype in its patch embed."""
        leaves = jax.tree.leaves(nnx.state(self.visual, nnx.Param))
        return leaves[0].dtype if leaves else self.dtype

    def logits(self, hidden: jax.Array) -> jax.Array:
        if self.lm_head is not None:
            out = self.lm_head(hidden)
        else:  # tied: h @ embed_tokens.T, as HF ties lm_head to embed_tokens
            out = self.language_model.embed_tokens.attend(hidden)
        return logical_constraint(out, ("batch", "length", "vocab"))

    # -- HF-compatible forward -----------------------------------------------------------------------

    def __call__(
        self,
        input_ids: Any,
        attention_mask: Any = None,
        pixel_values: Any = None,
        image_grid_thw: Any = None,
        pixel_values_videos: Any = None,
        video_grid_thw: Any = None,
        second_per_grid_ts: Any = None,
        mm_token_type_ids: Any = None,
        position_ids: Any = None,
        vision_inputs: dict[str, Any] | None = None,
        output_hidden_states: bool = False,
    ) -> jax.Array | dict[str, Any]:
        """Logits [B, T, V] for HF-named, HF-layout inputs (numpy, torch-converted, or jax arrays).

        `position_ids` ([3,B,T]) and `vision_inputs` are computed on the host by `prepare_inputs` when
        not given; jitted callers must pass them. The array part then runs through one `nnx.jit`
        (`forward`), so eager calls are compiled once per shape (nested inside a caller's jit it is
        simply inlined). With `output_hidden_states=True` the result is a dict {"logits",
        "hidden_states"} where hidden_states follows HF (see `TextModel.__call__`).
        """
        need_pos = position_ids is None
        need_vis = vision_inputs is None and (pixel_values is not None or pixel_values_videos is not None)
        if need_pos or need_vis:
            if isinstance(input_ids, jax.core.Tracer):
                raise ValueError("under jit, pass position_ids (and vision_inputs with pixels) computed on "
                                 "the host by prepare_inputs")
            host = prepare_inputs(self.cfg, input_ids, attention_mask, image_grid_thw, video_grid_thw,
                                  second_per_grid_ts, mm_token_type_ids)
            position_ids = host["position_ids"] if need_pos else position_ids
            vision_inputs = host["vision_inputs"] if need_vis else vision_inputs
        merge2 = self.cfg.vision.spatial_merge_size**2
        _check_placeholders(self.cfg, input_ids, 0 if pixel_values is None else len(pixel_values) // merge2,
                            0 if pixel_values_videos is None else len(pixel_values_videos) // merge2)
        return _jit_forward(self, input_ids, attention_mask, pixel_values, pixel_values_videos, position_ids,
                            vision_inputs, output_hidden_states=output_hidden_states)

    def forward(
        self, input_ids: Any, attention_mask: Any, pixel_values: Any, pixel_values_videos: Any,
        position_ids: Any, vision_inputs: dict[str, Any] | None, output_hidden_states: bool = False,
    ) -> jax.Array | dict[str, Any]:
        """The pure-array forward (everything host-side already done); see `__call__`."""
        embeds, deepstack = self.embed(input_ids, pixel_values, pixel_values_videos, vision_inputs)
        out = self.language_model(embeds, jnp.asarray(position_ids), attention_mask=attention_mask,
                                  deepstack=deepstack, output_hidden_states=output_hidden_states)
        logits = self.logits(out["last_hidden_state"])
        if output_hidden_states:
            return {"logits": logits, "hidden_states": out["hidden_states"]}
        return logits


@nnx.jit(static_argnames="output_hidden_states")
def _jit_forward(model: QwenVL, *args: Any, output_hidden_states: bool) -> Any:
    return model.forward(*args, output_hidden_states=output_hidden_states)


def trainable_filter(freeze_vision: bool) -> Any:
    """nnx filter of the trained parameters: all Params, minus the vision tower when frozen (so the
    tower gets no gradients and no optimizer state: use it in `nnx.DiffState` / `nnx.Optimizer(wrt=)`)."""
    if freeze_vision:
        return nnx.All(nnx.Param, nnx.Not(nnx.PathContains("visual")))
    return nnx.Param
