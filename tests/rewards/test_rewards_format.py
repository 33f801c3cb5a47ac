"""Format rewards (TempSamp/Time-R1 think-answer, TVG-R1, LongVTG timestamp) and highlight reward."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtg_jax.rewards import (
    batch_format,
    f2_score,
    format_think_answer,
    format_timestamp,
    format_tvg,
    highlight_reward,
    highlight_reward_text,
    parse_highlight,
    weighted_mse,
)

GOOD = "<think>the person opens the door</think>\n<answer>12.54 to 17.83</answer>"


@pytest.mark.parametrize("text,expected", [
    (GOOD, 1.0),
    ("  <Think>x</Think><Answer>1 to 2</Answer>\n", 1.0),  # §3.3 spelling, surrounding space
    ("<answer>1 to 2</answer>", 0.0),  # no think
    ("<answer>1 to 2</answer><think>x</think>", 0.0),  # wrong order
    ("prefix <think>x</think><answer>1 to 2</answer>", 0.0),  # text outside the tags
    ("<think>x</think><answer>1 to 2</answer> trailing", 0.0),
    ("<think>x</think><answer>1</answer><answer>2</answer>", 0.0),  # repeated answer
    ("<think>x<think>y</think><answer>1 to 2</answer>", 0.0),  # nested think
    ("<think>x</think><answer>1 to 2", 0.0),  # truncated
    ("", 0.0),
    (None, 0.0),
])
def test_format_think_answer(text, expected):
    assert format_think_answer(text) == expected


def test_format_tvg_containment():
    assert format_tvg(GOOD) == 1.0
    # TVG-R1 §3.3.1 is a containment test: order and extra text do not matter
    assert format_tvg("blah </answer><answer> x <think></think>") == 1.0
    assert format_tvg("<think>x</think> 1 to 2") == 0.0
    assert format_tvg("<think>x</think><time>[1, 2]</time>") == 0.0
    assert format_tvg("<think>x</think><time>[1, 2]</time>", answer_tag="time") == 1.0
    assert format_tvg(None) == 0.0


@pytest.mark.parametrize("text,expected", [
    ("<think>r</think><timestamp>30.5 to 41.0</timestamp>", 1.0),
    ("<think>r</think>\n<answer>B</answer>\n<timestamp>30.5 to 41.0</timestamp>", 1.0),
    ("<think>r</think><timestamp>30.5 to 41.0</timestamp><answer>B</answer>", 1.0),
    ("<timestamp>30.5 to 41.0</timestamp>", 0.0),
    ("<think>r</think><answer>30.5 to 41.0</answer>", 0.0),
    ("<think>r</think><timestamp>1 to 2</timestamp><timestamp>3 to 4</timestamp>", 0.0),
    ("<think>r</think><timestamp>1 to 2</timestamp> extra", 0.0),
    (12, 0.0),
])
def test_format_timestamp(text, expected):
    assert format_timestamp(text) == expected


def test_batch_format():
    out = batch_format(format_think_answer, [GOOD, "x"])
    assert out.dtype == np.float32 and out.tolist() == [1.0, 0.0]
    assert batch_format(format_tvg, []).shape == (0,)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_format_never_raises(text):
    for fn in (format_think_answer, format_tvg, format_timestamp):
        assert fn(text) in (0.0, 1.0)


# ---- highlight reward (TempSamp-R1 §3.3) ----

def test_parse_highlight_paper_example():
    text = ("<answer>The highlight timestamps are in the 82, 84, 86, 88, 90, 92, 94, 96, 98, 100 seconds. "
            "Their saliency scores are 1.3, 1.7, 1.7, 1.7, 1.3, 1.7, 2.3, 2.3, 2.3</answer>")
    ts, scores = parse_highlight(text)
    assert ts == [82, 84, 86, 88, 90, 92, 94, 96, 98, 100]
    assert scores == [1.3, 1.7, 1.7, 1.7, 1.3, 1.7, 2.3, 2.3, 2.3]
    assert parse_highlight("nothing here") is None
    assert parse_highlight(None) is None


def test_f2_hand_values():
    # pred clips {41, 42, 43}, gt {42, 43, 44, 45}: P = 2/3, R = 1/2, F2 = 5PR/(4P+R) = (5/3)/(19/6)
    assert f2_score([82, 84, 86], [84, 86, 88, 90]) == pytest.approx((5 / 3) / (8 / 3 + 1 / 2))
    assert f2_score([83.0], [82.0]) == 1.0  # same 2-s clip
    assert f2_score([], [82.0]) == 0.0
    assert f2_score([10.0], [82.0]) == 0.0


def test_wmse_hand_values():
    # gt clips 42 (s=2), 43 (s=4); pred 42 -> 1, 43 missing -> 0
    # WMSE = (4·1 + 16·16) / (4 + 16) = 260 / 20 = 13
    assert weighted_mse([84], [1.0], [84, 86], [2.0, 4.0]) == pytest.approx(13.0)
    assert weighted_mse([84, 86], [2.0, 4.0], [84, 86], [2.0, 4.0]) == 0.0
    # all-zero gt scores: plain MSE over gt clips
    assert weighted_mse([84], [1.0], [84, 86], [0.0, 0.0]) == pytest.approx(0.5)


def test_highlight_reward_hand_values():
    # perfect: 0.6 · 1 + 0.4 / (1 + 0)
    assert highlight_reward([84, 86], [2.0, 4.0], [84, 86], [2.0, 4.0]) == pytest.approx(1.0)
    # pred {42} vs gt {42, 43}: P 1, R 1/2 -> F2 = 2.5/4.5; WMSE 13 as above
    expected = 0.6 * (2.5 / 4.5) + 0.4 / 14.0
    assert highlight_reward([84], [1.0], [84, 86], [2.0, 4.0]) == pytest.approx(expected)
    # missing scores count as 0
    assert highlight_reward([84, 86], [2.0], [84, 86], [2.0, 4.0]) == pytest.approx(0.6 + 0.4 / (1 + 256 / 20))
    assert highlight_reward([], [], [84], [1.0]) == 0.0
    assert highlight_reward([84], [1.0], [], []) == 0.0
    text = "<answer>The highlight timestamps are in the 84, 86 seconds. Their saliency scores are 2, 4</answer>"
    assert highlight_reward_text(text, [84, 86], [2.0, 4.0]) == pytest.approx(1.0)
    assert highlight_reward_text("junk", [84], [1.0]) is None
