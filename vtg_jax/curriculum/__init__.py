"""Data curricula: Video-OPD TVDF (TRPV + DBTP: DSUS / Top-k / BBDS / GWDS), Time-R1 Gaussian
difficulty sampling (Video-OPD App. D.1) and TVG-R1 IoU filters."""
from vtg_jax.curriculum.filters import TVG_R1_EPS1, TVG_R1_EPS2, tvg_r1_coldstart_filter, tvg_r1_rl_filter
from vtg_jax.curriculum.gaussian import (
    TIME_R1_MU,
    TIME_R1_SIGMA,
    gaussian_log_weights,
    gaussian_probabilities,
    gaussian_sample,
    sample_without_replacement,
    time_r1_gaussian_sample,
)
from vtg_jax.curriculum.tvdf import (
    BBDS_NUM_BUCKETS,
    GWDS_CENTER,
    GWDS_SIGMA,
    aggregated_reverse_kl,
    bbds_select,
    bucket_assignment,
    dsus_select,
    gwds_select,
    iou_disagreement,
    topk_mean_iou,
    topk_select,
    trpv_filter,
    tvdf_select,
)

__all__ = [
    "BBDS_NUM_BUCKETS",
    "GWDS_CENTER",
    "GWDS_SIGMA",
    "TIME_R1_MU",
    "TIME_R1_SIGMA",
    "TVG_R1_EPS1",
    "TVG_R1_EPS2",
    "aggregated_reverse_kl",
    "bbds_select",
    "bucket_assignment",
    "dsus_select",
    "gaussian_log_weights",
    "gaussian_probabilities",
    "gaussian_sample",
    "gwds_select",
    "iou_disagreement",
    "sample_without_replacement",
    "time_r1_gaussian_sample",
    "topk_mean_iou",
    "topk_select",
    "trpv_filter",
    "tvdf_select",
    "tvg_r1_coldstart_filter",
    "tvg_r1_rl_filter",
]
