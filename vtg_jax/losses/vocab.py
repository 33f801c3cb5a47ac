"""The timestamp subset S_time of a vocabulary (LongVTG-R1 §3.2: "digits, time separators, timestamp
tokens"), as a boolean mask for ``subset_kl`` / ``token_aware_kl``.

A token is in S_time when its decoded text is non-empty and either
  * consists only of digits 0-9, '.', ':', '-', ',', '[', ']' and whitespace (so " ", " 1", "12.",
    ":", "-", "[", "]," qualify), or
  * is one of ``words`` (default: "to", the separator of "12.5 to 20.1") after stripping whitespace.

Decoding handles the two space markers of subword vocabularies: GPT-2/Qwen byte-level BPE (every
byte mapped to a printable character: 'Ġ' = space, 'Ċ' = newline, 'ĉ' = tab, ...) and SentencePiece
('▁' = space). Special tokens such as "<|im_end|>" never qualify.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional

import numpy as np

_TIMESTAMP_RE = re.compile(r"[0-9.:\-,\[\]\s]+")


def _byte_level_decoder() -> dict[str, int]:
    """Inverse of the byte -> printable-unicode table of byte-level BPE (GPT-2 style).

    Printable latin-1 bytes map to themselves; the other 68 bytes (controls, space, 0x7f-0xa0, 0xad)
    map in increasing order to U+0100, U+0101, ...
    """
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    table = {chr(b): b for b in keep}
    shifted = 0
    for b in range(256):
        if b not in keep:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


_BYTE_DECODER = _byte_level_decoder()


def decode_token(token: str) -> Optional[str]:
    """Surface text of one vocabulary entry, or None when it is not valid UTF-8 on its own."""
    if "▁" in token:  # SentencePiece
        return token.replace("▁", " ")
    if all(ch in _BYTE_DECODER for ch in token):  # byte-level BPE (plain ASCII also lands here)
        try:
            return bytes(_BYTE_DECODER[ch] for ch in token).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return token


def _get_vocab(tokenizer_or_vocab: Any) -> Mapping[str, int]:
    if isinstance(tokenizer_or_vocab, Mapping):
        return tokenizer_or_vocab
    get_vocab = getattr(tokenizer_or_vocab, "get_vocab", None)
    if get_vocab is None:
        raise TypeError(
            "timestamp_token_mask wants a HF tokenizer, a tokenizers.Tokenizer or a dict token -> id; "
            f"got {type(tokenizer_or_vocab).__name__}"
        )
    try:
        return get_vocab(with_added_tokens=True)  # tokenizers.Tokenizer
    except TypeError:
        return get_vocab()  # transformers tokenizers (already include added tokens)


def is_timestamp_text(text: str, words: Iterable[str] = ("to",)) -> bool:
    """True for decoded token text that belongs to S_time (see module docstring)."""
    if not text:
        return False
    if _TIMESTAMP_RE.fullmatch(text):
        return True
    return text.strip() in set(words)


def timestamp_token_mask(
    tokenizer_or_vocab: Any, vocab_size: Optional[int] = None, words: Iterable[str] = ("to",)
) -> np.ndarray:
    """``bool[V]`` mask of the timestamp tokens S_time of a vocabulary.

    Args:
      tokenizer_or_vocab: a ``transformers`` tokenizer, a ``tokenizers.Tokenizer``, or a dict token -> id.
      vocab_size: length V of the mask, e.g. the model's (padded) logits width; defaults to max id + 1.
        Ids beyond the tokenizer's vocabulary are False.
      words: whole words that also count as timestamp tokens (stripped, case-sensitive).
    """
    vocab = _get_vocab(tokenizer_or_vocab)
    size = max(vocab.values()) + 1 if vocab else 0
    if vocab_size is not None:
        if vocab_size < size:
            raise ValueError(f"vocab_size={vocab_size} is smaller than the tokenizer's max id + 1 = {size}")
        size = vocab_size
    words = tuple(words)
    mask = np.zeros(size, dtype=bool)
    for token, idx in vocab.items():
        text = decode_token(token)
        if text is not None and is_timestamp_text(text, words):
            mask[idx] = True
    return mask
