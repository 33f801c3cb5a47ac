"""The `--config.<key>` flags the entry points (`vtg_jax.main`, `vtg_jax.plan`) check and take themselves
before absl and ml_collections parse the command line:

* a key the recipe's config does not have stops with the keys valid where it goes wrong (ml_collections
  raises a bare KeyError: `--config.grpo.beta=0.1` on configs/opd.py, which has no `grpo` section);
* `--config.<key>=None` sets a knob off (`run.config.OFF`, or a key whose value is None): ml_collections'
  parsers read no None for a typed field, so the flag is taken out of argv and applied after parsing.

    argv, none_keys = take_config_flags(sys.argv)     # before app.run parses sys.argv
    set_none(config, none_keys)                       # on the parsed config
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

from vtg_jax.run.config import OFF

PREFIX = "--config."


def _config_spec(argv: list[str]) -> str:
    """The value of `--config=<file>[:arg]` (or `--config <file>`), "" without one."""
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return ""


def load_config_file(spec: str) -> Any:
    """`get_config(arg)` of `<file>[:arg]`, as ml_collections' config flag loads it."""
    path, colon, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ValueError(f"--config={spec}: no such config file {path!r}")
    module_spec = importlib.util.spec_from_file_location(f"vtg_config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if colon else module.get_config()


def _key_of(flag: str) -> str:
    """"grpo.beta" of `--config.grpo.beta=0.1`, `--config.grpo.beta` or `--noconfig.x.flag`."""
    name = flag.split("=", 1)[0]
    return name[len(PREFIX):] if name.startswith(PREFIX) else name[len("--noconfig."):]


def value_at(config: Any, key: str) -> Any:
    """`config`'s value at dotted `key`; ValueError naming the keys valid where the path goes wrong."""
    node, parts = config, key.split(".")
    for i, part in enumerate(parts):
        if not hasattr(node, "keys") or part not in node:
            where = "config" + "".join(f".{p}" for p in parts[:i])
            valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else f"none ({where} is a value)"
            raise ValueError(f"--config.{key}: {where} has no key {part!r}; its keys: {valid}")
        node = node[part]
    return node


def _nullable(config: Any, key: str) -> bool:
    return ".".join(key.split(".")[-2:]) in OFF or value_at(config, key) is None


def take_config_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv without its `--config.<key>=None` flags, those keys), after checking every `--config.<key>`
    flag against the config file `--config` names (ValueError for a key it does not have, or None for a
    key that cannot be None). Without `--config`, argv is returned as it is."""
    spec = _config_spec(argv)
    flags = [a for a in argv if a.startswith((PREFIX, "--noconfig."))]
    if not spec or not flags:
        return list(argv), []
    config = load_config_file(spec)
    rest, none_keys = [], []
    for a in argv:
        if a.startswith((PREFIX, "--noconfig.")):
            key = _key_of(a)
            value_at(config, key)
            if a.endswith("=None"):
                if not _nullable(config, key):
                    raise ValueError(f"--config.{key}=None: {key} cannot be None (the keys that can: "
                                     f"{', '.join(OFF)}, and those whose value is None)")
                none_keys.append(key)
                continue
        rest.append(a)
    return rest, none_keys


def set_none(config: Any, keys: list[str]) -> None:
    """Sets each dotted key of `keys` to None in `config` (locked or not: the keys exist)."""
    for key in keys:
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = None
