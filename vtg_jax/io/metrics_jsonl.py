"""metrics.jsonl, one JSON record per logged step, read back as the surviving run wrote it (torn lines of
a killed writer skipped, a resumed run's superseded steps dropped) and truncated on resume."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Optional


def json_value(x: float) -> Optional[float]:
    """NaN → null, so the file is strict JSON."""
    return x if math.isfinite(x) else None


def _parse_line(line: str) -> Optional[dict[str, Any]]:
    """A record from one jsonl line, or None if torn/garbled (a killed writer can leave half a line)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
        return None
    return {k: (math.nan if v is None else v) for k, v in rec.items()}


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl in step order of the surviving run: bad lines skipped, null → NaN.

    If the step goes backwards (a resumed run appended without truncating), the earlier records at
    steps >= the new step are superseded by the newer ones.
    """
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = _parse_line(line)
            if rec is None:
                continue
            if records and rec["step"] < records[-1]["step"]:
                records = [r for r in records if r["step"] < rec["step"]]
            records.append(rec)
    return records


def truncate_jsonl(path: str, start_step: int) -> tuple[float, dict[str, Any]]:
    """Keep only parseable lines with step <= start_step (atomic rewrite); return their largest wall_time
    and the last kept record."""
    if not os.path.exists(path):
        return 0.0, {}
    kept, last_wall, last = [], 0.0, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = _parse_line(line)
            if rec is not None and rec["step"] <= start_step:
                kept.append(line if line.endswith("\n") else line + "\n")
                last = rec
                wall = rec.get("wall_time", 0.0)
                if isinstance(wall, (int, float)) and math.isfinite(wall):
                    last_wall = max(last_wall, float(wall))
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)
    return last_wall, last
