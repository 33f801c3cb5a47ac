"""ActivityNet Captions: `{video_id: {"duration", "timestamps": [[s, e], ...], "sentences": [...]}}`.

One record per sentence, qid `"<video_id>#<sentence index>"`. A video whose timestamps and sentences
differ in length keeps the pairs both lists have; each unpaired item counts as `missing_field`.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from vtg_jax.data.adapters._common import Collector, DatasetFormatError, LoadStats, VideoExists, read_json
from vtg_jax.data.records import GroundingRecord


def load_activitynet(path: Any, *, manifest: Optional[Mapping[str, Any]] = None,
                     video_exists: Optional[VideoExists] = None, reversed_spans: str = "swap",
                     source: str = "activitynet") -> tuple[list[GroundingRecord], LoadStats]:
    data = read_json(path)
    if not isinstance(data, Mapping):
        raise DatasetFormatError(f"{path}: ActivityNet Captions json must map video ids to entries")
    col = Collector(source, manifest=manifest, video_exists=video_exists, reversed_spans=reversed_spans)
    for vid, entry in data.items():
        if not isinstance(entry, Mapping):
            col.skip("unparsable")
            continue
        stamps = entry.get("timestamps")
        sents = entry.get("sentences")
        stamps = stamps if isinstance(stamps, list) else []
        sents = sents if isinstance(sents, list) else []
        if not stamps and not sents:
            col.skip("missing_field")
            continue
        for j in range(max(len(stamps), len(sents))):
            if j >= len(stamps) or j >= len(sents):
                col.skip("missing_field")
                continue
            col.add(video_id=vid, duration=entry.get("duration"), query=sents[j], spans=stamps[j],
                    qid=f"{vid}#{j}")
    return col.result(path)
