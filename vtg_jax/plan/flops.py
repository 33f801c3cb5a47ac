"""Model FLOPs of one iteration, counted from the architecture (what MFU divides by).

"Model FLOPs" are the multiply-adds the math needs, x 2, on real tokens: no padding, no recomputation
(remat), no optimizer. A forward pass costs 2 FLOPs per weight per token for every matmul (language
stack, LM head where logits are taken, vision tower per patch) plus attention (QK^T and PV: 4 x
heads x head_dim per query and key pair; causal self-attention over S tokens has S(S+1)/2 pairs). A
trained pass costs 3 forwards (the backward pass computes gradients of activations and of weights);
a frozen vision tower runs forward only.

The compiler's own count (`cost_analysis`, per chip) is the hardware FLOPs: it includes remat, padding
and every elementwise op, so hardware / model FLOPs > 1 measures what the program spends beyond the
math.
"""
from __future__ import annotations

from vtg_jax.models.qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig
from vtg_jax.models.qwen_vl.size import text_layer_weights


def text_forward(t: TextConfig, tokens: int, context_pairs: int, logits: int) -> float:
    """Forward FLOPs of the language stack on `tokens` tokens whose queries see `context_pairs` keys in
    all (summed over tokens), with the LM head on `logits` positions."""
    per_layer = 2 * tokens * text_layer_weights(t) + 4 * t.num_attention_heads * t.head_dim * context_pairs
    return float(t.num_hidden_layers * per_layer + 2 * logits * t.hidden_size * t.vocab_size)


def causal_pairs(length: int, prefix: int = 0) -> int:
    """(query, key) pairs of `length` tokens attending causally after `prefix` earlier tokens."""
    return length * prefix + length * (length + 1) // 2


def vision_forward(cfg: QwenVLConfig, groups: int, grid_h: int, grid_w: int) -> float:
    """Forward FLOPs of the vision tower on one video of `groups` x grid_h x grid_w patches."""
    v: VisionConfig = cfg.vision
    n = groups * grid_h * grid_w
    d, i = v.hidden_size, v.intermediate_size
    frame = grid_h * grid_w
    window = min(frame, (v.window_size // v.patch_size) ** 2)
    mlp = (3 if cfg.family == "qwen2_5_vl" else 2) * d * i
    flops = 2 * n * v.patch_dim * d
    for block in range(v.depth):
        full = cfg.family == "qwen3_vl" or block in v.fullatt_block_indexes
        segment = frame if full else window
        flops += 2 * n * (4 * d * d + mlp) + 4 * d * n * segment
    units = n // v.spatial_merge_size**2
    merged = d * v.spatial_merge_size**2
    mergers = 1 + (len(v.deepstack_visual_indexes) if cfg.family == "qwen3_vl" else 0)
    flops += mergers * 2 * units * (merged * merged + merged * v.out_hidden_size)
    return float(flops)


def text_attention(t: TextConfig, context_pairs: int) -> float:
    """The attention part of `text_forward` (QK^T and PV over `context_pairs` query-key pairs)."""
    return float(t.num_hidden_layers * 4 * t.num_attention_heads * t.head_dim * context_pairs)


def vision_full_attention(cfg: QwenVLConfig, groups: int, grid_h: int, grid_w: int) -> float:
    """The full-attention (frame-group segment) part of `vision_forward`, the vision attention a TPU runs
    in the splash kernel (Qwen2.5's 64-patch windows stay in XLA)."""
    v: VisionConfig = cfg.vision
    blocks = v.depth if cfg.family == "qwen3_vl" else len(v.fullatt_block_indexes)
    n = groups * grid_h * grid_w
    return float(blocks * 4 * v.hidden_size * n * grid_h * grid_w)


def prefill(cfg: QwenVLConfig, prompts: int, prompt_tokens: int, vision: float) -> float:
    """A prefill of `prompts` prompts (vision tower + prompt, logits at the last position)."""
    return prompts * (vision + text_forward(cfg.text, prompt_tokens, causal_pairs(prompt_tokens), 1))


def completions(cfg: QwenVLConfig, rows: int, prompt_tokens: int, new_tokens: int) -> float:
    """Decoding or teacher-forcing `new_tokens` tokens on `rows` rows after a cached prompt."""
    return rows * text_forward(cfg.text, new_tokens, causal_pairs(new_tokens, prompt_tokens), new_tokens)


def train_step(cfg: QwenVLConfig, prompts: int, rows: int, prompt_tokens: int, new_tokens: int, vision: float,
               frozen_vision: bool, shared_prefix: bool = False) -> float:
    """One update on `rows` completions of `prompts` prompts: the text stack over prompt + completion of
    every row (forward + backward), logits on the completions, the tower once per prompt. With
    `shared_prefix` (the shared-prefix update) the prompt's text stack runs once per prompt and each row
    only its completion, attending to the prompt."""
    if shared_prefix:
        text = (prompts * text_forward(cfg.text, prompt_tokens, causal_pairs(prompt_tokens), 0)
                + completions(cfg, rows, prompt_tokens, new_tokens))
    else:
        seq = prompt_tokens + new_tokens
        text = rows * text_forward(cfg.text, seq, causal_pairs(seq), new_tokens)
    return 3 * text + prompts * vision * (1 if frozen_vision else 3)
