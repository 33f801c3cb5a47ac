"""timestamp_token_mask over dict vocabularies, tokenizers.Tokenizer and HF tokenizers."""
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from vtg_jax.losses import decode_token, is_timestamp_text, timestamp_token_mask

# Byte-level (GPT-2 / Qwen) spelling: 'Ġ' = space, 'Ċ' = newline.
BYTE_VOCAB = {
    "0": 0, "1": 1, "12": 2, ".": 3, ":": 4, "Ġ": 5, "Ġto": 6, "to": 7, "Ġ-": 8, ",": 9, "[": 10,
    "]": 11, "Ġ3": 12, "hello": 13, "Ġhello": 14, "top": 15, "Ġtoo": 16, "s": 17, "Ċ": 18, "1.5s": 19,
    "Ġ12.5": 20, "Ġ(": 21, "Ġ[": 22, "]Ġ": 23, "Ġto": 6, "Ġon": 24, "Ã©": 25,
}
BYTE_EXPECTED = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 20, 22, 23}


def _expected_mask(n, ids):
    m = np.zeros(n, bool)
    m[list(ids)] = True
    return m


def test_decode_token_markers():
    assert decode_token("Ġto") == " to"
    assert decode_token("Ċ") == "\n"
    assert decode_token("▁12") == " 12"
    assert decode_token("Ã©") == "é"
    assert decode_token("hello") == "hello"


def test_is_timestamp_text():
    for text in ["0", " 12.5", "12:30", " - ", "[", "],", " to", "to ", " ", "1,2"]:
        assert is_timestamp_text(text), text
    for text in ["", "hello", "top", " too", "s", "1.5s", " (", "To", "<|im_end|>"]:
        assert not is_timestamp_text(text), text
    assert is_timestamp_text(" s", words=("to", "s"))


def test_dict_vocab_byte_level():
    mask = timestamp_token_mask(BYTE_VOCAB)
    assert mask.dtype == np.bool_ and mask.shape == (26,)
    np.testing.assert_array_equal(mask, _expected_mask(26, BYTE_EXPECTED))
    padded = timestamp_token_mask(BYTE_VOCAB, vocab_size=32)
    assert padded.shape == (32,) and not padded[26:].any()
    with pytest.raises(ValueError):
        timestamp_token_mask(BYTE_VOCAB, vocab_size=10)


def test_sentencepiece_dict_vocab():
    vocab = {"▁to": 0, "▁1": 1, "5": 2, "▁the": 3, "<0x0A>": 4, "▁": 5}
    np.testing.assert_array_equal(timestamp_token_mask(vocab), [True, True, True, False, False, True])


def _byte_level_tokenizer():
    tok = Tokenizer(models.BPE(vocab={k: v for k, v in BYTE_VOCAB.items()}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.add_special_tokens(["<|im_end|>"])
    return tok


def test_tokenizers_tokenizer_and_added_tokens():
    tok = _byte_level_tokenizer()
    mask = timestamp_token_mask(tok)
    assert mask.shape == (27,)  # 26 base ids + the special token
    np.testing.assert_array_equal(mask, _expected_mask(27, BYTE_EXPECTED))


def test_transformers_tokenizer():
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=_byte_level_tokenizer())
    mask = timestamp_token_mask(hf)
    np.testing.assert_array_equal(mask, _expected_mask(27, BYTE_EXPECTED))


def test_rejects_unknown_type():
    with pytest.raises(TypeError):
        timestamp_token_mask(["0", "1"])
