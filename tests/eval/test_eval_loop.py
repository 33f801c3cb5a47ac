"""The evaluation loop's QVHighlights metrics where labels exist (hand-computed cases)."""
import numpy as np
import pytest

from vtg_jax.data.records import GroundingRecord
from vtg_jax.eval.loop import _clip_scores, qvhighlights_metrics
from vtg_jax.eval.qvhighlights import highlight_metrics

REC = GroundingRecord(video_id="v", duration=20.0, query="q", spans=((2.0, 4.0), (10.0, 12.0)),
                      saliency=((1, (4, 4, 3)), (5, (1, 0, 2)), (6, (4, 4, 4))))


def test_multi_window_queries_get_mr_map():
    # One greedy window matching one of two GT windows exactly: precision 1 at rank 1, recall 1/2 -> AP 0.5.
    m = qvhighlights_metrics([REC], ["2.0 to 4.0"], [(2.0, 4.0)])
    assert m["MR-mAP"] == pytest.approx(0.5) and m["MR-R1@0.7"] == 1.0 and m["MR/n"] == 1
    assert "n" not in m  # never overwrites the R@m figures' keys


def test_single_window_queries_have_no_mr_metrics():
    rec = GroundingRecord(video_id="v", duration=20.0, query="q", spans=((2.0, 4.0),))
    assert qvhighlights_metrics([rec], ["2.0 to 4.0"], [(2.0, 4.0)]) == {}


def test_highlight_scores_map_to_nearest_labelled_clip():
    text = "<answer>3.0, 11.0, 13.0 scores: 4, 1, 3</answer>"
    # clips of 2 s: clip 1 centre 3 s, clip 5 centre 11 s, clip 6 centre 13 s
    np.testing.assert_array_equal(_clip_scores(text, [1, 5, 6], 2.0), [4.0, 1.0, 3.0])
    m = qvhighlights_metrics([REC], [text], [(2.0, 4.0)])
    want = highlight_metrics([np.array([4.0, 1.0, 3.0])], [np.array([[4, 4, 3], [1, 0, 2], [4, 4, 4]], float)])
    assert m["HL-mAP"] == pytest.approx(want["HL-mAP"]) and m["HL-HIT@1"] == pytest.approx(want["HL-HIT@1"])
    assert qvhighlights_metrics([REC], ["no highlight here"], [None])["HL/parse_failures"] == 1
