"""Public annotation formats → `GroundingRecord`s, with one validation policy and counted stats.

Every loader is `load_<name>(path, **options) -> (records, stats)`; `load_dataset(name, path, ...)`
dispatches by name. The validation policy (drop / swap / clip, each counted in `LoadStats`) lives in
`adapters/_common.py`; the schema each adapter accepts is in its module docstring:

  name            module                     file
  charades_sta    adapters/charades.py       charades_sta_{train,test}.txt (+ durations csv / manifest)
  activitynet     adapters/activitynet.py    ActivityNet Captions train.json / val_{1,2}.json
  qvhighlights    adapters/qvhighlights.py   highlight_{train,val}_release.jsonl
  timelens        adapters/generic.py        TimeLens-Bench json / TimeLens-100K jsonl (one record per event)
  time_r1         adapters/generic.py        Time-R1 train_2k5.json (video_start / video_end → clip records)
  next_gqa        adapters/qa.py             gsub_{val,test}.json + {val,test}.csv
  rextime         adapters/qa.py             rextime_{train,val}.json (+ durations) or the evaluation's
                                             ground-truth jsonl (qid, query, duration, vid, relevant_windows, ans)
  jsonl           adapters/generic.py        our own records jsonl (records.write_jsonl); what data.train /
                                             val / test read, bad lines skipped, counted and logged

Common keyword options: `manifest` (frame-store manifest: a mapping video_id → entry with an optional
duration; videos absent from it are dropped), `video_exists` (predicate on video_id; False → dropped),
`reversed_spans` ("swap", the default, or "drop"). Charades-STA / ReXTime / TimeLens / Time-R1 also take
`durations` (mapping, json or csv) for annotations without a duration.

Queries are taken as written (whitespace stripped), except where a dataset's own loader normalises them:
TimeLens (whitespace collapsed, leading / trailing periods removed) and Time-R1 (lower-cased, one
trailing period removed). Every file may use LF or CRLF line endings.
"""
from __future__ import annotations

from typing import Any, Callable

from vtg_jax.data.adapters._common import DatasetFormatError, LoadStats
from vtg_jax.data.adapters.activitynet import load_activitynet
from vtg_jax.data.adapters.charades import load_charades_sta
from vtg_jax.data.adapters.generic import load_records_jsonl, load_time_r1, load_timelens
from vtg_jax.data.adapters.qa import load_next_gqa, load_rextime
from vtg_jax.data.adapters.qvhighlights import load_qvhighlights
from vtg_jax.data.records import GroundingRecord

Loader = Callable[..., tuple[list[GroundingRecord], LoadStats]]

LOADERS: dict[str, Loader] = {
    "charades_sta": load_charades_sta,
    "activitynet": load_activitynet,
    "qvhighlights": load_qvhighlights,
    "timelens": load_timelens,
    "time_r1": load_time_r1,
    "next_gqa": load_next_gqa,
    "rextime": load_rextime,
    "jsonl": load_records_jsonl,
}

_ALIASES = {"charades": "charades_sta", "anet": "activitynet", "activitynet_captions": "activitynet",
            "qvh": "qvhighlights", "nextgqa": "next_gqa", "timer1": "time_r1", "records": "jsonl"}


def load_dataset(name: str, path: Any, **options: Any) -> tuple[list[GroundingRecord], LoadStats]:
    """Loads `path` with the adapter registered as `name` (case- and dash-insensitive)."""
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(LOADERS)}")
    return LOADERS[key](path, **options)


__all__ = ["DatasetFormatError", "LoadStats", "LOADERS", "load_dataset", "load_charades_sta", "load_activitynet",
           "load_qvhighlights", "load_timelens", "load_time_r1", "load_next_gqa", "load_rextime",
           "load_records_jsonl"]
