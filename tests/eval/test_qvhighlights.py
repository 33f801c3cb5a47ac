"""Hand-computed QVHighlights MR mAP / R1 and HL mAP / HIT@1 (vtg_jax.eval.qvhighlights)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtg_jax.eval import (
    MR_IOU_THRESHOLDS,
    detection_average_precision,
    highlight_metrics,
    interpolated_average_precision,
    moment_retrieval_metrics,
    ranking_average_precision,
    temporal_iou_matrix,
)
from vtg_jax.eval.qvhighlights import full_video_saliency, paired_temporal_iou


def test_thresholds():
    assert MR_IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_interpolated_ap_hand():
    # envelope: precision 1 on recall (0, .5], max(.5, 2/3) = 2/3 on (.5, 1].
    ap = interpolated_average_precision(np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0]))
    assert ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # recall never reaches 1: the tail (0.5, 1] contributes 0.
    assert interpolated_average_precision(np.array([1.0]), np.array([0.5])) == pytest.approx(0.5)


GT1 = [[0, 10], [20, 30]]
# (start, end, score), deliberately not sorted by score.
PRED1 = [[20, 25, 0.7], [0, 10, 0.9], [0, 9, 0.8]]
# Ranked: [0,10] IoU 1 with GT0 (TP); [0,9] IoU .9 with GT0, locked, GT1 IoU 0 (FP);
# [20,25] IoU .5 with GT1 (TP at theta = 0.5 only).
AP_05 = 0.5 * 1 + 0.5 * 2 / 3
AP_HIGH = 0.5  # theta >= 0.55: TP, FP, FP -> recall stops at 0.5 with precision 1.


def test_detection_ap_single_query():
    ranked = np.array(sorted(PRED1, key=lambda r: -r[2]), float)
    ap = detection_average_precision(ranked, np.array(GT1, float))
    np.testing.assert_allclose(ap, [AP_05] + [AP_HIGH] * 9)


def test_locked_gt_redirects_match():
    gt = np.array([[0, 10], [1, 11]], float)  # IoU([0,10],[1,11]) = 9/11 ~ 0.818
    pred = np.array([[0, 10, 0.9], [0, 10, 0.8]], float)
    ap = detection_average_precision(pred, gt, (0.5, 0.85))
    np.testing.assert_allclose(ap, [1.0, 0.5])


def test_mr_metrics_with_parse_failure():
    out = moment_retrieval_metrics([PRED1, None], [GT1, [[0, 5]]])
    assert out["MR-mAP@0.5"] == pytest.approx(AP_05 / 2)
    assert out["MR-mAP@0.75"] == pytest.approx(AP_HIGH / 2)
    assert out["MR-mAP"] == pytest.approx((AP_05 + 9 * AP_HIGH) / 10 / 2)
    assert out["MR-R1@0.5"] == 0.5 and out["MR-R1@0.7"] == 0.5
    assert out["n"] == 2 and out["parse_failures"] == 1 and out["invalid_windows"] == 0


def test_r1_uses_top_score_and_best_gt():
    # Top-scored window overlaps the second GT window with IoU 0.6.
    out = moment_retrieval_metrics([[[0, 1, 0.1], [20, 26, 0.9]]], [[[0, 1], [20, 30]]])
    assert out["MR-R1@0.5"] == 1.0 and out["MR-R1@0.7"] == 0.0


def test_max_pred_windows_truncates_by_score():
    pred = [[50, 60, 1.0 - 0.01 * i] for i in range(10)] + [[0, 10, 0.0]]
    assert moment_retrieval_metrics([pred], [[[0, 10]]])["MR-mAP"] == 0.0
    full = moment_retrieval_metrics([pred], [[[0, 10]]], max_pred_windows=None)
    assert full["MR-mAP"] == pytest.approx(1 / 11)


def test_empty_and_invalid_windows():
    out = moment_retrieval_metrics([np.zeros((0, 3)), [[0, 10, np.nan], [0, 10, 1.0]]], [[[0, 10]], [[0, 10]]])
    assert out["MR-mAP"] == pytest.approx(0.5)
    assert out["invalid_windows"] == 1 and out["parse_failures"] == 0
    with pytest.raises(ValueError, match="empty"):
        moment_retrieval_metrics([], [])
    with pytest.raises(ValueError, match="GT windows"):
        moment_retrieval_metrics([[[0, 1, 1]]], [np.zeros((0, 2))])
    with pytest.raises(ValueError, match="shape"):
        moment_retrieval_metrics([[[0, 1]]], [[[0, 1]]])


def test_ranking_ap_hand():
    # Ranked labels 1,0,1,0 -> precision at the positives 1 and 2/3.
    assert ranking_average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    # Tied scores are one threshold: {0,1} gives P=.5,R=.5; then P=2/3,R=1; envelope 2/3 at both.
    assert ranking_average_precision([1, 0, 1], [0.5, 0.5, 0.1]) == pytest.approx(2 / 3)
    assert ranking_average_precision([0, 0], [0.3, 0.1]) == 0.0
    assert ranking_average_precision([1, 1], [0.3, 0.1]) == 1.0


GT_SAL = np.array([[4, 3, 4], [2, 4, 1], [0, 0, 0], [4, 4, 4]], float)
PRED_SAL = np.array([0.1, 0.9, 0.3, 0.5])


def test_highlight_very_good():
    # >= 4 labels per annotator: [1,0,0,1], [0,1,0,1], [1,0,0,1]; ranking by pred: clips 1,3,2,0.
    # AP: annotator 0 -> labels 0,1,0,1 -> mean(1/2, 2/4) = .5; annotator 1 -> 1,1,0,0 -> 1; a2 = .5.
    # HIT@1: top clip 1 is rated 4 by annotator 1.
    out = highlight_metrics([PRED_SAL, None], [GT_SAL, GT_SAL])
    assert out["HL-mAP"] == pytest.approx((0.5 + 1.0 + 0.5) / 6)
    assert out["HL-HIT@1"] == 0.5
    assert out["n"] == 2 and out["parse_failures"] == 1


def test_highlight_fair_and_miss():
    out = highlight_metrics([PRED_SAL], [GT_SAL], min_score=2)
    # >= 2 labels: [1,1,0,1] for a0, [1,1,0,1] a1, [1,0,0,1] a2 -> ranked 1,1,0,1 / 1,1,0,1 / 0,1,0,1.
    assert out["HL-mAP"] == pytest.approx(((1 + 1 + 3 / 4) / 3 * 2 + 0.5) / 3)
    pred = np.array([0.9, 0.9, 0.0, 0.0])  # argmax tie -> clip 0 (rated 4, 3, 4)
    assert highlight_metrics([pred], [GT_SAL])["HL-HIT@1"] == 1.0
    assert highlight_metrics([[0.0, 0.0, 1.0, 0.0]], [GT_SAL])["HL-HIT@1"] == 0.0


def test_highlight_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        highlight_metrics([[[0.1, 0.2, 0.3, 0.4]]], [GT_SAL])
    with pytest.raises(ValueError, match="empty"):
        highlight_metrics([], [])
    # An empty vector is no prediction: a parse failure, not an error.
    out = highlight_metrics([[]], [GT_SAL])
    assert out["HL-mAP"] == 0.0 and out["HL-HIT@1"] == 0.0 and out["parse_failures"] == 1


def test_highlight_short_vector_padded_with_zeros():
    # [0.9, 0.1] -> [0.9, 0.1, 0, 0]: ranked clip 0, clip 1, then {2, 3} tied at 0.
    # VeryGood a0 {0, 3}: P1 R1/2, P1/2, P2/4 R1 -> mean(1, 1/2); a1 {1, 3}: P0, P1/2 R1/2, P2/4 R1
    # -> mean(1/2, 1/2); a2 as a0. HIT@1: clip 0 (rated 4 by a0).
    out = highlight_metrics([[0.9, 0.1]], [GT_SAL])
    assert out["HL-mAP"] == pytest.approx((3 / 4 + 1 / 2 + 3 / 4) / 3)
    assert out["HL-HIT@1"] == 1.0 and out["parse_failures"] == 0
    # HIT@1 takes the argmax of the vector as given (clip 0), not of the padded one (clip 2, a miss);
    # AP ranks the padded [-1, -2, 0, 0]: {2, 3} P1/2 R1/2, 0 P2/3 R1, 1 P2/4 -> a0: 2/3;
    # a1 {1, 3}: P1/2 R1/2, P1/3, P2/4 R1 -> mean(1/2, 1/2); a2 as a0.
    out = highlight_metrics([[-1.0, -2.0]], [GT_SAL])
    assert out["HL-HIT@1"] == 1.0
    assert out["HL-mAP"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)


def test_highlight_long_vector_cut_and_top_past_the_end_misses():
    want_ap = (0.5 + 1.0 + 0.5) / 3  # test_highlight_very_good: AP on the first 4 entries
    out = highlight_metrics([np.r_[PRED_SAL, 7.0]], [GT_SAL])
    assert out["HL-mAP"] == pytest.approx(want_ap) and out["HL-HIT@1"] == 0.0  # argmax 4 >= 4 clips
    out = highlight_metrics([np.r_[PRED_SAL, 0.2]], [GT_SAL])
    assert out["HL-mAP"] == pytest.approx(want_ap) and out["HL-HIT@1"] == 1.0  # argmax clip 1


def test_full_video_saliency():
    # 149 s -> int(149 / 2) = 74 clips (official floor; ceil would be 75); unlabelled clips 0.
    g = full_video_saliency(149.0, ((3, (4, 2, 1)), (10, (1, 1, 1))))
    assert g.shape == (74, 3)
    assert g[3].tolist() == [4, 2, 1] and g[10].tolist() == [1, 1, 1] and g.sum() == 10
    assert full_video_saliency(150.0, ()).shape == (75, 3)
    assert full_video_saliency(7.0, None).shape == (3, 3)
    # A labelled clip past int(D / 2) (the official script raises) extends the video by that clip.
    assert full_video_saliency(7.0, ((3, (4, 4, 4)),)).shape == (4, 3)
    assert full_video_saliency(1.5, ()).shape == (1, 3)  # shorter than one clip: one clip
    with pytest.raises(ValueError, match="negative"):
        full_video_saliency(10.0, ((-1, (4, 4, 4)),))
    with pytest.raises(ValueError, match="duration"):
        full_video_saliency(0.0, ())


def test_r1_paired_iou_exact_threshold():
    # (0, 1.3) vs (0, 2.6): the length union 1.3 + 2.6 - 1.3 = 2.6000000000000005 gives
    # 0.4999999999999999; the official paired hull 2.6 - 0 gives 1.3 / 2.6 = 0.5 exactly.
    assert float(temporal_iou_matrix(np.array([[0.0, 1.3]]), np.array([[0.0, 2.6]]))[0, 0]) < 0.5
    np.testing.assert_array_equal(paired_temporal_iou([[0.0, 1.3], [3.0, 4.0]], [[0.0, 2.6], [0.0, 1.0]]),
                                  [0.5, 0.0])
    assert paired_temporal_iou([[1.0, 1.0]], [[1.0, 1.0]])[0] == 0.0  # zero hull
    out = moment_retrieval_metrics([[[0.0, 1.3, 1.0]]], [[[0.0, 2.6]]], iou_thresholds=(0.5,))
    assert out["MR-R1@0.5"] == 1.0  # R1: paired IoU, as the official compute_mr_r1
    assert out["MR-mAP@0.5"] == 0.0  # AP: cross IoU (length union), as the official AP
    # The R1 GT window is the one of highest (cross) IoU with the top window: (20, 26) vs GT1 -> 6/10.
    out = moment_retrieval_metrics([[[20, 26, 0.9]]], [[[0, 22], [20, 30]]])
    assert out["MR-R1@0.5"] == 1.0 and out["MR-R1@0.7"] == 0.0


def test_gt_iou_tie_goes_to_higher_index():
    # p1 ties on both GT windows (IoU 0.6) and locks GT1; p2 then matches GT0 -> two TPs at 0.5
    # (a lower-index tie-break would lock GT0 and make p2 a FP: AP 0.5).
    gt = np.array([[0, 10], [5, 15]], float)
    pred = np.array([[2.5, 12.5, 0.9], [0, 9, 0.8]], float)
    iou = temporal_iou_matrix(pred[:1, :2], gt)
    assert iou[0, 0] == iou[0, 1] == pytest.approx(0.6)
    np.testing.assert_allclose(detection_average_precision(pred, gt, (0.5,)), [1.0])


def _reference_style_ap(y, s):
    """Independent formulation in the reference's shape: PR points in increasing-threshold order,
    a (precision 1, recall 0) sentinel, forward max-interpolation, mean where recall changes."""
    y, s = np.asarray(y, bool), np.asarray(s, float)
    if y.all() or not y.any():
        return float(y.all())
    prec, rec = [], []
    for thr in np.unique(s):  # increasing thresholds
        pos = s >= thr
        prec.append(np.sum(y & pos) / np.sum(pos))
        rec.append(np.sum(y & pos) / np.sum(y))
    prec, rec = np.array(prec + [1.0]), np.array(rec + [0.0])
    for i in range(1, len(prec)):
        prec[i] = max(prec[i - 1], prec[i])
    return float(np.mean(prec[np.nonzero(np.diff(rec))]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), min_size=1, max_size=12))
def test_ranking_ap_matches_reference_style(pairs):
    y = [p[0] for p in pairs]
    s = [float(p[1]) for p in pairs]  # few distinct values -> many ties
    assert ranking_average_precision(y, s) == pytest.approx(_reference_style_ap(y, s))
