"""Qwen-VL processor: prompt template -> chat text -> token ids with expanded video placeholders; frames ->
normalised patch rows; M-RoPE position ids.

Follows transformers 5.23's Qwen2.5-VL / Qwen3-VL processors (placeholder expansion, fused
normalisation, patch layout, Qwen3 textual timestamps) and the models' `get_rope_index`.

Token layout of the video inside the user turn (`<|vision_start|>` … `<|vision_end|>` is the chat
template's wrapper, which stays; only `<|video_pad|>` is replaced):
  * plain (Qwen2.5 default):  VS  VID × gt·gh·gw/4  VE
  * timestamps (Qwen3; optional for Qwen2.5):  VS  [<t seconds> VS VID × gh·gw/4 VE] × gt  VE
    with t = mean of the two frame timestamps of the temporal group, formatted `.1f` (as Qwen3-VL's processor).
With timestamps, one video becomes gt separate video-token runs. `get_rope_index` (ours and HF's) gives
each run one row of `video_grid_thw`: Qwen3 splits its [gt, gh, gw] row itself, Qwen2.5 does not, so for
Qwen2.5 with timestamps this processor returns `video_grid_thw` already split into gt rows [1, gh, gw]
(and `second_per_grid_ts` repeated). The vision tower output is unchanged by the split (attention never
spans temporal groups and windows are per group); each group's temporal M-RoPE id then restarts
at the run's start, the absolute time being carried by the timestamp text.

Arrays are returned for ONE sample, unbatched (the loader pads and batches).
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import numpy as np

from vtg_jax.data.prompts import CHAT_TEMPLATES, DEFAULT_SYSTEM, TEMPLATES, PromptTemplate, get_template
from vtg_jax.models.qwen_vl.config import QwenVLConfig

IGNORE_INDEX = -100
IM_START, IM_END, EOT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
VIDEO_PLACEHOLDER = VISION_START + VIDEO_PAD + VISION_END
IMAGE_PLACEHOLDER = VISION_START + IMAGE_PAD + VISION_END
# Brief §3: OPENAI_CLIP mean/std for Qwen2.5, 0.5/0.5 for Qwen3.
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
NORM = {"qwen2_5_vl": (CLIP_MEAN, CLIP_STD), "qwen3_vl": ((0.5,) * 3, (0.5,) * 3)}


# ---------------------------------------------------------------------------------------------------
# Pixels: fused normalisation, temporal padding and patch layout of HF's video processors.


def normalize(frames: np.ndarray, family: str) -> np.ndarray:
    """uint8 [..., H, W, 3] -> float32 (x - 255·mean) / (255·std), fused as HF does (mean·255 in fp32)."""
    mean, std = NORM[family]
    m = np.asarray(mean, np.float32) * np.float32(255.0)
    s = np.asarray(std, np.float32) * np.float32(255.0)
    return (frames.astype(np.float32) - m) / s


def _check_pixels(x: np.ndarray, what: str, cfg: QwenVLConfig) -> None:
    v = cfg.vision
    if x.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 RGB, got dtype {x.dtype}")
    if x.shape[-1] != v.in_channels:
        raise ValueError(f"{what} must be channels-last with {v.in_channels} channels, got shape {x.shape}")
    factor = v.patch_size * v.spatial_merge_size
    h, w = x.shape[-3], x.shape[-2]
    if h % factor or w % factor or h == 0 or w == 0:
        raise ValueError(f"{what} is {h}x{w}; height and width must be positive multiples of patch·merge = "
                         f"{factor} (smart-resize the frames first)")


def patchify(frames: np.ndarray, cfg: QwenVLConfig) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [T, H, W, C] -> (float32 rows [gt·gh·gw, C·tps·P·P], grid [1, 3] int64).

    T is padded to a multiple of temporal_patch_size by repeating the last frame; rows follow
    view(gt, tps, C, gh/m, m, P, gw/m, m, P).permute(0, 3, 6, 4, 7, 2, 1, 5, 8) (HF's layout).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ValueError(f"frames must be [T>0, H, W, C], got shape {frames.shape}")
    _check_pixels(frames, "frames", cfg)
    v = cfg.vision
    tps, p, m = v.temporal_patch_size, v.patch_size, v.spatial_merge_size
    if pad := -frames.shape[0] % tps:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
    t, h, w, c = frames.shape
    gt, gh, gw = t // tps, h // p, w // p
    x = normalize(frames, cfg.family).transpose(0, 3, 1, 2)  # [T, C, H, W]
    x = x.reshape(gt, tps, c, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    rows = np.ascontiguousarray(x.reshape(gt * gh * gw, c * tps * p * p))
    return rows, np.array([[gt, gh, gw]], np.int64)


def patchify_image(image: np.ndarray, cfg: QwenVLConfig) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [H, W, C] -> (`pixel_values` rows, `image_grid_thw` [1, 3]); the image is repeated tps times."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got shape {image.shape}")
    return patchify(np.repeat(image[None], cfg.vision.temporal_patch_size, axis=0), cfg)


def group_timestamps(timestamps: Sequence[float], temporal_patch_size: int) -> np.ndarray:
    """Per temporal group, the mean of its first and last frame timestamps; the list is padded by repeating
    the last timestamp, as Qwen3's `_calculate_timestamps` pads the frame indices."""
    ts = [float(t) for t in timestamps]
    if pad := -len(ts) % temporal_patch_size:
        ts += [ts[-1]] * pad
    return np.array([(ts[i] + ts[i + temporal_patch_size - 1]) / 2 for i in range(0, len(ts), temporal_patch_size)])


# ---------------------------------------------------------------------------------------------------
# Chat text (Qwen `<|im_start|>role\n…<|im_end|>\n` turns).


def chat_messages(user_text: str, *, system: Optional[str] = None, answer: Optional[str] = None,
                  media: str = "video") -> list[dict[str, Any]]:
    """The conversation as HF chat messages (for `apply_chat_template`): media item before the text."""
    msgs: list[dict[str, Any]] = []
    if system is not None:
        msgs.append({"role": "system", "content": [{"type": "text", "text": system}]})
    user = ([{"type": media}] if media else []) + [{"type": "text", "text": user_text}]
    msgs.append({"role": "user", "content": user})
    if answer is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return msgs


def render_chat(family: str, user_text: str, *, system: Optional[str] = None, answer: Optional[str] = None,
                media: str = "video") -> str:
    """What the family's chat template renders for `chat_messages(...)`: with `answer` the assistant turn
    is complete (SFT); without it the text ends with the generation prompt `<|im_start|>assistant\\n`."""
    if family not in DEFAULT_SYSTEM:
        raise ValueError(f"unknown family {family!r}")
    system = DEFAULT_SYSTEM[family] if system is None else system
    placeholder = {"video": VIDEO_PLACEHOLDER, "image": IMAGE_PLACEHOLDER, "": ""}[media]
    text = f"{IM_START}system\n{system}{IM_END}\n" if system is not None else ""
    text += f"{IM_START}user\n{placeholder}{user_text}{IM_END}\n{IM_START}assistant\n"
    return text if answer is None else text + f"{answer}{IM_END}\n"


class _Encoder:
    """`encode(text) -> list[int]` over a transformers tokenizer or a `tokenizers.Tokenizer` (no BOS/EOS)."""

    def __init__(self, tokenizer: Any):
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
        self.tok = tokenizer
        self._raw = hasattr(tokenizer, "token_to_id") and not hasattr(tokenizer, "convert_tokens_to_ids")
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str, cache: bool = False) -> list[int]:
        if cache and text in self._cache:
            return self._cache[text]
        if self._raw:
            ids = list(self.tok.encode(text, add_special_tokens=False).ids)
        else:
            ids = list(self.tok.encode(text, add_special_tokens=False))
        if cache:
            self._cache[text] = ids
        return ids

    def token_id(self, token: str) -> Optional[int]:
        if self._raw:
            return self.tok.token_to_id(token)
        ids = self.encode(token)
        return ids[0] if len(ids) == 1 else None


# ---------------------------------------------------------------------------------------------------
# The processor.


class QwenVLProcessor:
    """frames + timestamps + query (+ answer) -> model inputs for one sample.

    Args:
      cfg: the model config (family, special token ids, vision patch sizes, rope-index rule).
      tokenizer: a transformers tokenizer, a `tokenizers.Tokenizer`, or a local directory to load one from.
      template: a name in `prompts.TEMPLATES` or a `PromptTemplate`.
      fps: the nominal sampling rate of the frames; Qwen2.5 `second_per_grid_ts = temporal_patch_size / fps`
        unless a call gives the rate its frames were actually sampled at (`sample_fps`).
      interleave_timestamps: `<t seconds>` text before each temporal group. Default: Qwen3 yes (its
        processor always does; without separators its rope index fails), Qwen2.5 no.
      system: overrides the template's system instruction (None: template's, else the family default).
    """

    def __init__(self, cfg: QwenVLConfig, tokenizer: Any, *, template: str | PromptTemplate = "default",
                 fps: float = 2.0, interleave_timestamps: Optional[bool] = None, system: Optional[str] = None):
        self.cfg = cfg
        self.family = cfg.family
        self.template = template if isinstance(template, PromptTemplate) else get_template(template)
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = float(fps)
        qwen3 = cfg.family == "qwen3_vl"
        self.interleave = qwen3 if interleave_timestamps is None else bool(interleave_timestamps)
        if qwen3 and not self.interleave:
            raise ValueError("Qwen3-VL needs the textual timestamps between temporal groups ("
                             "contiguous video-token runs break its rope index); use interleave_timestamps=True")
        self.system = system if system is not None else self.template.system
        self.enc = _Encoder(tokenizer)
        self.ids = {VIDEO_PAD: cfg.video_token_id, IMAGE_PAD: cfg.image_token_id,
                    VISION_START: cfg.vision_start_token_id, VISION_END: cfg.vision_end_token_id}
        for token, want in self.ids.items():
            got = self.enc.token_id(token)
            if got != want:
                raise ValueError(f"tokenizer maps {token} to {got}, but the model config expects {want}")
        self.im_end_id = self.enc.token_id(IM_END)
        if self.im_end_id is None:
            raise ValueError(f"tokenizer has no single token for {IM_END}")

    def render(self, query: str, answer: Optional[str] = None, duration: Optional[float] = None,
               options: Sequence[str] = ()) -> str:
        """The chat text with one unexpanded video placeholder (what `apply_chat_template` gives)."""
        user = self.template.format(query, duration, options)
        self._check_text(user, answer)
        return render_chat(self.family, user, system=self.system, answer=answer)

    def _check_text(self, *texts: Optional[str]) -> None:
        for token in (*self.ids, IM_START, IM_END, EOT):
            if any(t is not None and token in t for t in texts):
                raise ValueError(f"query/answer text contains the special token {token}")

    def _video_ids(self, grid: np.ndarray, group_ts: np.ndarray) -> list[int]:
        gt, gh, gw = (int(x) for x in grid[0])
        per_group = gh * gw // self.cfg.vision.spatial_merge_size**2
        vid = self.cfg.video_token_id
        if not self.interleave:
            return [vid] * (gt * per_group)
        ids: list[int] = []
        vs, ve = self.cfg.vision_start_token_id, self.cfg.vision_end_token_id
        for t in group_ts:
            ids += self.enc.encode(f"<{t:.1f} seconds>", cache=True) + [vs] + [vid] * per_group + [ve]
        return ids

    def __call__(self, frames: np.ndarray, timestamps: Sequence[float], query: str, answer: Optional[str] = None,
                 duration: Optional[float] = None, options: Sequence[str] = (),
                 sample_fps: Optional[float] = None) -> dict[str, np.ndarray]:
        """Model inputs for one sample (unbatched arrays).

        frames: uint8 [T, H, W, 3], H and W multiples of patch·merge. timestamps: T frame times (s).
        sample_fps: the rate these frames were sampled at (a frame store's `sample_fps`: qwen-vl-utils
        samples n / total · video_fps, not the nominal fps); None: the processor's `fps`.
        Returns input_ids, attention_mask, mm_token_type_ids (0 text / 1 image / 2 video), labels
        (-100 except the answer tokens and its `<|im_end|>`), loss_mask, prompt_length (tokens up to and
        including `<|im_start|>assistant\\n`), pixel_values_videos, video_grid_thw, video_timestamps
        (per group), second_per_grid_ts (Qwen2.5), and position_ids [3, S] / rope_deltas [1].
        """
        frames = np.asarray(frames)
        ts = np.asarray(timestamps, np.float64).reshape(-1)
        if frames.ndim != 4 or len(ts) != frames.shape[0]:
            raise ValueError(f"need frames [T, H, W, C] and T timestamps, got frames {frames.shape} and "
                             f"{len(ts)} timestamps")
        if not np.all(np.isfinite(ts)) or np.any(np.diff(ts) < 0):
            raise ValueError("timestamps must be finite and non-decreasing")
        pixels, grid = patchify(frames, self.cfg)
        group_ts = group_timestamps(ts, self.cfg.vision.temporal_patch_size)

        self._check_text(answer)
        before, after = self.render(query, None, duration, options).split(VIDEO_PAD)
        prompt = self.enc.encode(before) + self._video_ids(grid, group_ts) + self.enc.encode(after)
        target = [] if answer is None else self.enc.encode(answer) + [self.im_end_id]
        tail = [] if answer is None else self.enc.encode("\n")
        input_ids = np.array(prompt + target + tail, np.int32)
        loss_mask = np.zeros(len(input_ids), np.int32)
        loss_mask[len(prompt):len(prompt) + len(target)] = 1
        mm = ((input_ids == self.cfg.image_token_id) * 1 + (input_ids == self.cfg.video_token_id) * 2).astype(np.int32)

        out: dict[str, np.ndarray] = {
            "input_ids": input_ids,
            "attention_mask": np.ones(len(input_ids), np.int32),
            "mm_token_type_ids": mm,
            "labels": np.where(loss_mask == 1, input_ids, IGNORE_INDEX).astype(np.int32),
            "loss_mask": loss_mask,
            "prompt_length": np.array(len(prompt), np.int32),
            "pixel_values_videos": pixels,
            "video_timestamps": group_ts.astype(np.float32),
        }
        qwen25 = self.family == "qwen2_5_vl"
        if qwen25 and self.interleave:  # one grid row per video-token run (see module docstring)
            grid = np.repeat(np.array([[1, grid[0, 1], grid[0, 2]]], np.int64), grid[0, 0], axis=0)
        out["video_grid_thw"] = grid
        if qwen25:
            fps = self.fps if sample_fps is None else float(sample_fps)
            if not (np.isfinite(fps) and fps > 0):
                raise ValueError(f"sample_fps must be > 0, got {sample_fps}")
            out["second_per_grid_ts"] = np.full(len(grid), self.cfg.vision.temporal_patch_size / fps, np.float32)
        out.update(self._positions(out))
        return out

    def _positions(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """3-D M-RoPE ids by the model's `get_rope_index`; empty when it is not importable."""
        try:
            from vtg_jax.models.qwen_vl.rope import get_rope_index
        except ImportError:  # the model package is optional for pure data work
            return {}
        pos, deltas = get_rope_index(self.cfg, out["input_ids"][None], out["mm_token_type_ids"][None],
                                     out["attention_mask"][None], video_grid_thw=out["video_grid_thw"],
                                     second_per_grid_ts=out.get("second_per_grid_ts"))
        return {"position_ids": pos[:, 0], "rope_deltas": deltas[0]}


# ---------------------------------------------------------------------------------------------------
# Tiny tokenizer for tests and the synthetic demo.

TINY_SPECIAL_TOKENS = {IMAGE_PAD: 1000, VIDEO_PAD: 1001, VISION_START: 1002, VISION_END: 1003,
                       EOT: 1004, IM_START: 1005, IM_END: 1006, "<|vision_pad|>": 1007}
# Qwen2's split pattern, changed so that every digit and every punctuation mark is its own pre-token.
_SPLIT = r" ?\p{L}+|\p{N}|[^\s\p{L}\p{N}]|\s*[\r\n]+|\s+(?!\S)|\s+"
_WORDS = ("the a an of in on to and with at from is are was person man woman people dog cat ball car box "
          "red green blue yellow white black purple orange circle square triangle object appears moves "
          "changes color left right up down jumps stops starts opens closes walks runs sits stands holds "
          "picks puts takes door table chair light turns video event time start end seconds second before "
          "after then while")


def _tiny_corpus() -> list[str]:
    corpus = [t.user.replace("{", "").replace("}", "") for t in TEMPLATES.values()]
    corpus += [t.system for t in TEMPLATES.values() if t.system]
    corpus += ["system user assistant You are a helpful assistant.", _WORDS] * 4
    corpus += ["<think> </think> <answer> </answer> <timestamp> </timestamp> <time> </time>"] * 4
    return corpus


def build_tiny_tokenizer(path: str, family: str = "qwen2_5_vl") -> str:
    """Builds a byte-level BPE tokenizer (vocab 1008 ≤ the tiny presets' 1024) into directory `path`.

    Ids 0..999 are the 256 byte symbols, merges learnt from the templates (digits and punctuation never
    merge), and reserved fillers; the Qwen special tokens take the tiny presets' ids (TINY_SPECIAL_TOKENS:
    image 1000, video 1001, vision_start 1002, vision_end 1003). The family's chat template goes into
    tokenizer_config.json, so `transformers.AutoTokenizer.from_pretrained(path)` works. Returns `path`.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    if family not in CHAT_TEMPLATES:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(CHAT_TEMPLATES)}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    first_special = min(TINY_SPECIAL_TOKENS.values())
    trainer = trainers.BpeTrainer(vocab_size=first_special, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_tiny_corpus(), trainer)
    n = tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(f"<|reserved_{i}|>", special=True) for i in range(first_special - n)])
    for token, want in sorted(TINY_SPECIAL_TOKENS.items(), key=lambda kv: kv[1]):
        tok.add_special_tokens([AddedToken(token, special=True, normalized=False)])
        if tok.token_to_id(token) != want:
            raise RuntimeError(f"tiny tokenizer: {token} got id {tok.token_to_id(token)}, expected {want}")
    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": IM_END, "pad_token": EOT,
              "unk_token": None, "bos_token": None, "model_max_length": 131072, "add_bos_token": False,
              "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATES[family]}
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return path
