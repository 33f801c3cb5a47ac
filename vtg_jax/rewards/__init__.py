"""Rewards for temporal video grounding: answer parsing, IoU family, CenDist, format, highlight.

Public API (see each module's docstring for the paper section and the edge-case policy):
parse_span, parse_spans, parse_time, count_parse_failures, last_tag_content (parse.py); iou, tiou, cendist,
cendist_iou (spans.py); format_think_answer, format_tvg, format_timestamp (format.py);
parse_highlight, f2_score, weighted_mse, highlight_reward (highlight.py); RewardSpec, TERMS,
register_term and the paper presets (spec.py).
"""
from vtg_jax.rewards.format import batch_format, format_think_answer, format_timestamp, format_tvg
from vtg_jax.rewards.highlight import (
    f2_score,
    highlight_reward,
    highlight_reward_text,
    parse_highlight,
    weighted_mse,
)
from vtg_jax.rewards.parse import count_parse_failures, last_tag_content, parse_span, parse_spans, parse_time
from vtg_jax.rewards.spans import cendist, cendist_iou, iou, tiou
from vtg_jax.rewards.spec import (
    IOU_ONLY,
    LONGVTG_R1,
    TEMPSAMP_R1,
    TEMPSAMP_R1_HIGHLIGHT,
    TERMS,
    TIME_R1,
    TVG_R1,
    RewardBatch,
    RewardSpec,
    register_term,
)

__all__ = [
    "parse_span", "parse_spans", "parse_time", "count_parse_failures", "last_tag_content",
    "iou", "tiou", "cendist", "cendist_iou",
    "format_think_answer", "format_tvg", "format_timestamp", "batch_format",
    "parse_highlight", "f2_score", "weighted_mse", "highlight_reward", "highlight_reward_text",
    "RewardSpec", "RewardBatch", "TERMS", "register_term",
    "TVG_R1", "TIME_R1", "TEMPSAMP_R1", "TEMPSAMP_R1_HIGHLIGHT", "LONGVTG_R1", "IOU_ONLY",
]
