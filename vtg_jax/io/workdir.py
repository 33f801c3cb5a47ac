"""JSON files of a run's workdir (run_config.json, summary.json, eval.json, ...), written by the main
process only so that a multi-host run writes each file once."""
from __future__ import annotations

import json
import os
from typing import Any, Optional

from vtg_jax.parallel.distributed import is_main_process


def save_json(workdir: str, name: str, obj: Any) -> None:
    """<workdir>/<name> = obj as indented JSON (main process only)."""
    if is_main_process():
        with open(os.path.join(workdir, name), "w") as f:
            json.dump(obj, f, indent=1)


def load_json(workdir: str, name: str) -> Optional[dict]:
    """<workdir>/<name> as JSON, or None when the file does not exist."""
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
