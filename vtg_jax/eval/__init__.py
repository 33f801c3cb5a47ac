"""Evaluation metrics: R@m / mIoU for temporal grounding, QVHighlights MR mAP and HL mAP / HIT@1."""
from vtg_jax.eval.metrics import (
    DEFAULT_THRESHOLDS,
    grounding_metrics,
    mean_iou,
    prediction_ious,
    predictions_to_array,
    recall_at_iou,
    temporal_iou,
    temporal_iou_matrix,
)
from vtg_jax.eval.qvhighlights import (
    MR_IOU_THRESHOLDS,
    detection_average_precision,
    highlight_metrics,
    interpolated_average_precision,
    moment_retrieval_metrics,
    ranking_average_precision,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MR_IOU_THRESHOLDS",
    "detection_average_precision",
    "grounding_metrics",
    "highlight_metrics",
    "interpolated_average_precision",
    "mean_iou",
    "moment_retrieval_metrics",
    "prediction_ious",
    "predictions_to_array",
    "ranking_average_precision",
    "recall_at_iou",
    "temporal_iou",
    "temporal_iou_matrix",
]
