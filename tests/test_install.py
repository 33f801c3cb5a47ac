"""The environment the suite runs in is the one `constraints.txt` pins (the README's commands and
.ci/run install with it): every pinned distribution is installed at its pinned version, so a pass
means a pass of exactly that set."""
from __future__ import annotations

import importlib.metadata
import pathlib
import re

from packaging.version import Version

CONSTRAINTS = pathlib.Path(__file__).resolve().parents[1] / "constraints.txt"


def _pins() -> dict[str, str]:
    pins = {}
    for n, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        assert m, f"{CONSTRAINTS}:{n}: not a name==version pin: {line!r}"
        pins[m.group(1)] = m.group(2)
    return pins


def test_installed_versions_are_the_pinned_ones():
    pins = _pins()
    assert {"jax", "jaxlib", "flax", "transformers", "torch", "qwen-vl-utils"} <= set(pins)
    wrong = {}
    for name, version in pins.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            wrong[name] = (version, "not installed")
            continue
        if Version(installed).public != Version(version).public:  # torch's "+cpu" label is a build, not a version
            wrong[name] = (version, installed)
    assert not wrong, f"installed versions differ from {CONSTRAINTS.name} (pinned, installed): {wrong}"
