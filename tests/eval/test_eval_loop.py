"""The evaluation loop's QVHighlights metrics: the official protocol (moment_detr standalone_eval) on a
small QVHighlights-format split, checked against figures computed by hand from the protocol."""
import numpy as np
import pytest

from vtg_jax.data.records import GroundingRecord
from vtg_jax.eval.loop import _clip_scores, qvhighlights_metrics
from vtg_jax.rewards.parse import parse_span

REC = GroundingRecord(video_id="v", duration=20.0, query="q", spans=((2.0, 4.0), (10.0, 12.0)),
                      saliency=((1, (4, 4, 3)), (5, (1, 0, 2)), (6, (4, 4, 4))))


def test_multi_window_queries_get_mr_map():
    # One greedy window matching one of two GT windows exactly: precision 1 at rank 1, recall 1/2 -> AP 0.5.
    m = qvhighlights_metrics([REC], ["2.0 to 4.0"], [(2.0, 4.0)])
    assert m["MR-mAP"] == pytest.approx(0.5) and m["MR-R1@0.7"] == 1.0 and m["MR/n"] == 1
    assert "n" not in m  # never overwrites the R@m figures' keys


def test_single_window_non_qvhighlights_queries_have_no_qvh_metrics():
    rec = GroundingRecord(video_id="v", duration=20.0, query="q", spans=((2.0, 4.0),), source="charades_sta")
    assert qvhighlights_metrics([rec], ["2.0 to 4.0"], [(2.0, 4.0)]) == {}


def test_mr_always_reported_for_qvhighlights_records():
    # One GT window per query, QVHighlights source, no saliency: MR is reported, HL is not.
    recs = [GroundingRecord(video_id="v", duration=150.0, query="q", spans=((10.0, 20.0),), source="qvhighlights"),
            GroundingRecord(video_id="w", duration=150.0, query="q", spans=((0.0, 4.0),), source="qvhighlights")]
    m = qvhighlights_metrics(recs, ["10 to 20", "x"], [(10.0, 20.0), None])
    assert m["MR-mAP"] == pytest.approx(0.5) and m["MR-R1@0.5"] == 0.5 and m["MR-R1@0.7"] == 0.5
    assert m["MR/n"] == 2 and m["MR/parse_failures"] == 1
    assert not any(k.startswith("HL") for k in m)
    # A record that carries saliency counts as QVHighlights whatever its source.
    rec = GroundingRecord(video_id="v", duration=20.0, query="q", spans=((2.0, 4.0),), saliency=((1, (4, 4, 4)),))
    assert "MR-mAP" in qvhighlights_metrics([rec], ["2 to 4"], [(2.0, 4.0)])


def test_clip_scores_highlight_answer():
    text = ("<answer>The highlight timestamps are in the 3.0, 11.0, 11.5, 13.0 seconds. "
            "Their saliency scores are 4, 1, 2.5</answer>")
    # clip floor(t / 2): 1 <- 4; 5 <- max(1, 2.5); 6 <- missing score = 0; other clips 0.
    want = np.zeros(10)
    want[1], want[5] = 4.0, 2.5
    np.testing.assert_array_equal(_clip_scores(text, 10, 2.0), want)
    # A timestamp past the last clip: one trailing entry with the max score of those clips.
    past = _clip_scores("<answer>3, 25, 40 seconds. Scores: 1, 2, 0.5</answer>", 10, 2.0)
    np.testing.assert_array_equal(past, np.r_[0.0, 1.0, np.zeros(8), 2.0])
    # Absurd timestamps stay bounded.
    assert _clip_scores("<answer>99999999999999 seconds. Scores: 1</answer>", 10).shape == (11,)


def test_clip_scores_span_answer_and_failures():
    # "31 to 36": clip 15 = [30, 32] half covered, clips 16, 17 whole, others 0.
    got = _clip_scores("<answer>31 to 36</answer>", 75, 2.0)
    want = np.zeros(75)
    want[15], want[16], want[17] = 0.5, 1.0, 1.0
    np.testing.assert_array_equal(got, want)
    # A span running past the end of a 10-clip (20 s) video: "19 to 22.5" covers clip 9 half; past the
    # end clip 10 whole and clip 11 a quarter -> one trailing entry max(1, 0.25).
    np.testing.assert_array_equal(_clip_scores("19 to 22.5", 10), np.r_[np.zeros(9), 0.5, 1.0])
    # Only past the end: 20.5 to 21 covers a quarter of clip 10.
    np.testing.assert_array_equal(_clip_scores("20.5 to 21", 10), np.r_[np.zeros(10), 0.25])
    np.testing.assert_array_equal(_clip_scores("8 to 4", 10), np.zeros(10))  # reversed: covers nothing
    assert _clip_scores("I cannot tell.", 75) is None
    assert _clip_scores("<answer></answer>", 75) is None


# ---------------------------------------------------------------------------------------------------
# A QVHighlights-format split of four queries, with answers of every kind, and the protocol by hand.
#
# Q1: 149 s video -> int(149 / 2) = 74 clips (the official mk_gt_scores floors; ceil would give 75).
#     Highlight answer: 20 -> clip 10: 3.0; 22, 23 -> clip 11: max(2.0, 4.0) = 4.0; 26 -> clip 13: 1.0;
#     100 -> clip 50 (unlabelled): 4.5; 148.5 -> clip 74, past the last clip: 5.0, the top score.
# Q2: 150 s (75 clips). Span answer "31 to 36": clip 15 0.5, clips 16, 17 1.0, the other 72 clips 0.
# Q3: 150 s. Span answer "0 to 1.3": clip 0 0.65, the other 74 clips 0. Two GT windows.
# Q4: 150 s. Unparsable answer: AP 0 for each annotator, no hit, a parse failure (MR too).
RECORDS = [
    GroundingRecord(video_id="a", duration=149.0, query="q1", spans=((20.0, 28.0),), qid="1", source="qvhighlights",
                    saliency=((10, (4, 4, 2)), (11, (3, 4, 4)), (12, (2, 1, 4)), (13, (4, 0, 0)))),
    GroundingRecord(video_id="b", duration=150.0, query="q2", spans=((30.0, 40.0),), qid="2", source="qvhighlights",
                    saliency=((15, (1, 1, 1)), (16, (4, 2, 4)), (17, (4, 4, 1)), (18, (2, 4, 3)), (19, (0, 0, 4)))),
    GroundingRecord(video_id="c", duration=150.0, query="q3", spans=((0.0, 2.6), (100.0, 110.0)), qid="3",
                    source="qvhighlights",
                    saliency=((0, (4, 3, 2)), (1, (4, 4, 4)), (50, (1, 2, 3)), (51, (2, 2, 2)), (52, (3, 3, 3)),
                              (53, (4, 0, 0)), (54, (0, 0, 4)))),
    GroundingRecord(video_id="d", duration=150.0, query="q4", spans=((10.0, 20.0),), qid="4", source="qvhighlights",
                    saliency=((5, (4, 4, 4)),)),
]
TEXTS = [
    "<answer>The highlight timestamps are in the 20, 22, 23, 26, 100, 148.5 seconds. "
    "Their saliency scores are 3.0, 2.0, 4.0, 1.0, 4.5, 5.0</answer>",
    "<answer>31 to 36</answer>",
    "<think>t</think><answer>0 to 1.3</answer>",
    "I cannot tell.",
]

# Ranking AP (official get_ap): clips ranked by score, tied scores form one group; at each group
# boundary P = TP / ranked so far, R = TP / positives; P interpolated as the max P at any later
# boundary; AP = mean interpolated P over the boundaries where R increases.
#
# Q1 ranks (in-video clips only: clip 74 is cut for AP) 50, 11, 10, 13, then 70 clips tied at 0
# (74 in all, clip 12 among them).
#   VeryGood (>= 4) positives: a0 {10, 13}  a1 {10, 11}  a2 {11, 12}
#     a0: 50 P0, 11 P0, 10 P1/3 R1/2, 13 P2/4 R1            -> mean(1/2, 1/2)          = 1/2
#     a1: 50 P0, 11 P1/2 R1/2, 10 P2/3 R1                    -> mean(2/3, 2/3)          = 2/3
#     a2: 11 P1/2 R1/2, 10 P1/3, 13 P1/4, rest P2/74 R1      -> mean(1/2, 2/74)
#   Good (>= 3): a0 {10, 11, 13} -> 11 P1/2, 10 P2/3, 13 P3/4 R1 -> 3/4; a1 as above 2/3; a2 as above.
#   Fair (>= 2): a0 {10..13}: 11 P1/2 R1/4, 10 P2/3 R2/4, 13 P3/4 R3/4, rest P4/74 R1
#                  -> mean(3/4, 3/4, 3/4, 4/74); a1 {10, 11} 2/3;
#                a2 {10, 11, 12}: 11 P1/2 R1/3, 10 P2/3 R2/3, 13 P2/4, rest P3/74 R1
#                  -> mean(2/3, 2/3, 3/74)
#   HIT@1: the top score is clip 74, past the video's 74 clips -> a miss at every threshold.
# Q2 ranks {16, 17} (tied), 15, then 72 clips tied at 0 (75 in all).
#   VeryGood: a0 {16, 17} -> P1 R1 -> 1;  a1 {17, 18}, a2 {16, 19}: group P1/2 R1/2, 15 P1/3, rest P2/75
#     -> mean(1/2, 2/75) each.
#   Good: a0 {16, 17} 1; a1 {17, 18} mean(1/2, 2/75); a2 {16, 18, 19}: P1/2 R1/3, rest P3/75 -> mean(1/2, 3/75)
#   Fair: a0 {16, 17, 18}, a1 {16, 17, 18}: P1 R2/3, rest P3/75 -> mean(1, 3/75); a2 {16, 18, 19} mean(1/2, 3/75)
#   HIT@1: top = clip 16 (first of the tie), rated 4 by annotators 0 and 2 -> a hit at every threshold.
# Q3 ranks 0, then 74 clips tied at 0.
#   VeryGood: a0 {0, 1, 53}: P1 R1/3, rest P3/75 -> mean(1, 3/75); a1 {1}: rest P1/75 -> 1/75; a2 {1, 54} -> 2/75
#   Good: a0 {0, 1, 52, 53} mean(1, 4/75); a1 {0, 1, 52} mean(1, 3/75); a2 {1, 50, 52, 54} (clip 0 is 2) 4/75
#   Fair: a0 {0, 1, 51, 52, 53} mean(1, 5/75); a1 {0, 1, 50, 51, 52} mean(1, 5/75);
#         a2 {0, 1, 50, 51, 52, 54} mean(1, 6/75)
#   HIT@1: top = clip 0, rated 4 by annotator 0 (>= 2, 3 and 4) -> a hit at every threshold.
# Q4: 0, 0, 0 and a miss.
HAND_AP = {
    "VeryGood": [1 / 2, 2 / 3, (1 / 2 + 2 / 74) / 2,
                 1.0, (1 / 2 + 2 / 75) / 2, (1 / 2 + 2 / 75) / 2,
                 (1 + 3 / 75) / 2, 1 / 75, 2 / 75,
                 0.0, 0.0, 0.0],
    "Good": [3 / 4, 2 / 3, (1 / 2 + 2 / 74) / 2,
             1.0, (1 / 2 + 2 / 75) / 2, (1 / 2 + 3 / 75) / 2,
             (1 + 4 / 75) / 2, (1 + 3 / 75) / 2, 4 / 75,
             0.0, 0.0, 0.0],
    "Fair": [(3 * 3 / 4 + 4 / 74) / 4, 2 / 3, (2 / 3 + 2 / 3 + 3 / 74) / 3,
             (1 + 3 / 75) / 2, (1 + 3 / 75) / 2, (1 / 2 + 3 / 75) / 2,
             (1 + 5 / 75) / 2, (1 + 5 / 75) / 2, (1 + 6 / 75) / 2,
             0.0, 0.0, 0.0],
}
HAND_HIT = 2 / 4  # Q2 and Q3 hit, Q1 (top clip past the end) and Q4 (unparsable) miss, at every threshold.

# MR, one window of score 1 per answer (the span parse_span reads), paired IoU for R1:
#   Q1: the highlight answer's last span is "4.5, 5.0" -> (4.5, 5.0), IoU 0 with (20, 28): AP 0, no R1.
#   Q2: (31, 36) vs (30, 40): IoU 5 / 10 = 0.5 -> AP 1 at θ = 0.5, 0 above; R1@0.5 hit, R1@0.7 miss.
#   Q3: (0, 1.3) vs (0, 2.6): the length union 1.3 + 2.6 - 1.3 gives IoU 0.4999999999999999 in float64
#       -> a false positive at θ = 0.5 (AP 0, as the official cross IoU); the official paired IoU of R1 is
#       1.3 / (2.6 - 0) = 0.5 exactly -> R1@0.5 hit.
#   Q4: parse failure: AP 0, no R1.
HAND_MR = {"MR-mAP@0.5": (0 + 1 + 0 + 0) / 4, "MR-mAP@0.75": 0.0, "MR-mAP": (0.25 + 9 * 0.0) / 10,
           "MR-R1@0.5": (0 + 1 + 1 + 0) / 4, "MR-R1@0.7": 0.0, "MR/n": 4, "MR/parse_failures": 1}


def test_qvhighlights_split_matches_the_protocol_by_hand():
    preds = [parse_span(t) for t in TEXTS]  # as `evaluate` does
    assert preds == [(4.5, 5.0), (31.0, 36.0), (0.0, 1.3), None]
    m = qvhighlights_metrics(RECORDS, TEXTS, preds)
    assert m["HL-mAP"] == pytest.approx(np.mean(HAND_AP["VeryGood"]), abs=1e-12)
    assert m["HL-min-Good/mAP"] == pytest.approx(np.mean(HAND_AP["Good"]), abs=1e-12)
    assert m["HL-min-Fair/mAP"] == pytest.approx(np.mean(HAND_AP["Fair"]), abs=1e-12)
    assert m["HL-HIT@1"] == m["HL-min-Good/HIT@1"] == m["HL-min-Fair/HIT@1"] == HAND_HIT
    assert m["HL/n"] == 4 and m["HL/parse_failures"] == 1
    for k, v in HAND_MR.items():
        assert m[k] == pytest.approx(v, abs=1e-12), k
    # The labelled-clips-only ranking this replaces scored Q2's annotator 1 (VeryGood {17, 18}) over
    # clips 15..19 only: 16 and 17 tied, then 15, 18, 19 tied at 0 -> mean(1/2, 2/5) instead of
    # mean(1/2, 2/75): unlabelled clips are negatives now.
    assert HAND_AP["VeryGood"][4] != pytest.approx((1 / 2 + 2 / 5) / 2)


def test_qvhighlights_split_paired_iou_decides_r1():
    # The length union misses Q3 at θ = 0.5; the official paired IoU hits.
    from vtg_jax.eval.metrics import temporal_iou
    from vtg_jax.eval.qvhighlights import paired_temporal_iou

    assert float(temporal_iou(np.array([0.0, 1.3]), np.array([0.0, 2.6]))) < 0.5
    assert paired_temporal_iou([[0.0, 1.3]], [[0.0, 2.6]])[0] == 0.5
    m = qvhighlights_metrics(RECORDS[2:3], TEXTS[2:3], [(0.0, 1.3)])
    assert m["MR-R1@0.5"] == 1.0 and m["MR-mAP@0.5"] == 0.0
