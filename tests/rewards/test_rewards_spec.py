"""RewardSpec: weighted composition, metrics, parse-failure counting, registry, paper presets."""
import numpy as np
import pytest

from vtg_jax.rewards import (
    LONGVTG_R1,
    TEMPSAMP_R1,
    TEMPSAMP_R1_HIGHLIGHT,
    TERMS,
    TIME_R1,
    TVG_R1,
    RewardSpec,
    register_term,
)

COMPLETIONS = [
    "<think>door</think><answer>2 to 6</answer>",  # IoU 1/3 with [4, 8]
    "<answer>4 to 8</answer>",  # IoU 1, no think
    "<think>x</think><answer>I am not sure</answer>",  # format ok, unparsable
    "total garbage",  # unparsable, bad format
]
GTS = np.array([[4.0, 8.0]] * 4)
D = np.array([10.0] * 4)


def test_tvg_r1_combined_reward_hand_values():
    rewards, metrics = TVG_R1(COMPLETIONS, GTS)
    # 0.9 · IoU + 0.1 · format
    expected = [0.9 / 3 + 0.1, 0.9, 0.1, 0.0]
    np.testing.assert_allclose(rewards, expected, rtol=1e-6)
    assert rewards.dtype == np.float32 and rewards.shape == (4,)
    assert metrics["reward/iou"] == pytest.approx((1 / 3 + 1) / 4)
    assert metrics["reward/format_tvg"] == pytest.approx(0.5)
    assert metrics["reward/total"] == pytest.approx(np.mean(expected))
    assert metrics["reward/parse_fail"] == 0.5
    assert metrics["reward/parse_fail_count"] == 2.0


def test_spec_with_durations_time_r1_and_longvtg():
    r, m = TIME_R1(COMPLETIONS, GTS, D)
    np.testing.assert_allclose(r, [1 / 3 * 0.64 + 1, 1.0, 1.0, 0.0], rtol=1e-6)
    assert set(m) >= {"reward/tiou", "reward/format_think_answer", "reward/parse_fail"}
    lv = ["<think>a</think><timestamp>2 to 6</timestamp>", "<think>a</think><timestamp>?</timestamp>"]
    r, m = LONGVTG_R1(lv, GTS[:2], D[:2])
    # eq. 1 (no QA term) and eq. 7: (0.8/3 + 0.2 · 0.8) + 1, then 0 + 1 (format ok, unparsable)
    np.testing.assert_allclose(r, [0.8 / 3 + 0.16 + 1.0, 1.0], rtol=1e-6)
    assert m["reward/parse_fail_count"] == 1.0


def test_iou_term_clips_when_durations_given():
    spec = RewardSpec(terms=(("iou", 1.0),))
    c = ["<answer>5 to 20</answer>"]
    assert spec(c, [[5.0, 10.0]])[0][0] == pytest.approx(1 / 3)
    assert spec(c, [[5.0, 10.0]], [10.0])[0][0] == pytest.approx(1.0)
    # per-sample bad duration scores 0 (never raises)
    assert spec(c, [[5.0, 10.0]], [0.0])[0][0] == 0.0


def test_errors_are_loud_for_config_mistakes():
    with pytest.raises(ValueError, match="unknown reward terms"):
        RewardSpec(terms=(("ioou", 1.0),))
    with pytest.raises(ValueError, match="needs durations"):
        RewardSpec(terms=(("tiou", 1.0),))(["1 to 2"], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="already registered"):
        register_term("iou", TERMS["iou"])


def test_empty_batch_and_nan_gt():
    r, m = TVG_R1([], np.zeros((0, 2)))
    assert r.shape == (0,) and m["reward/total"] == 0.0 and m["reward/parse_fail"] == 0.0
    r, _ = TEMPSAMP_R1(["<think>a</think><answer>1 to 2</answer>"], [[np.nan, 2.0]])
    assert r.tolist() == [1.0]  # IoU 0 for a NaN ground truth, format 1


def test_custom_term_and_highlight_spec():
    register_term("length_penalty_test", lambda b: np.array([-len(c) / 100 for c in b.completions], np.float32))
    try:
        spec = RewardSpec(terms=(("iou", 1.0), ("length_penalty_test", 1.0)))
        r, m = spec(["1 to 2"], [[1.0, 2.0]])
        assert r[0] == pytest.approx(1.0 - 0.06) and "reward/length_penalty_test" in m
    finally:
        TERMS.pop("length_penalty_test")
    text = ("<think>a</think><answer>The highlight timestamps are in the 84, 86 seconds. "
            "Their saliency scores are 2, 4</answer>")
    r, m = TEMPSAMP_R1_HIGHLIGHT([text, "junk"], [([84, 86], [2.0, 4.0])] * 2)
    np.testing.assert_allclose(r, [2.0, 0.0])
    assert m["reward/parse_fail_count"] == 1.0


def test_registry_names():
    for name in ("iou", "tiou", "cendist", "cendist_iou", "format_think_answer", "format_tvg",
                 "format_tvg_time", "format_timestamp", "highlight"):
        assert name in TERMS
