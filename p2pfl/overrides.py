"""`--set key.path=value`: any config key from the command line, typed and validated like the file."""

from __future__ import annotations

import re
from typing import Any, Iterable

import yaml

from p2pfl.config import RunConfig, from_dict
from p2pfl.errors import UserError


FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def parse_value(text: str) -> Any:
    """A YAML scalar or flow value: `0.1` is a number, `true` a bool, `[128, 64]` a list, `ring` a string."""
    try:
        return numbers(yaml.safe_load(text)) if text.strip() else None
    except yaml.YAMLError:
        return text  # an unquoted string YAML cannot read (e.g. `a: b`) stays a string


def numbers(value: Any) -> Any:
    """YAML 1.1 reads 1e-2 as a string; on a command line it is a number, also inside `{ratio: 1e-2}`."""
    if isinstance(value, str) and FLOAT.match(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()}
    return value


def split_assignment(item: str, flag: str = "--set") -> tuple[str, str]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"{flag} {item!r} is not KEY=VALUE; write e.g. {flag} optim.lr=0.05")
    return key, value


def set_key(data: dict, key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict; `topology=ring` means `topology.kind=ring`."""
    parts = key.split(".")
    if parts == ["topology"] and isinstance(value, str):
        parts = ["topology", "kind"]
    target = data
    for depth, part in enumerate(parts[:-1]):
        child = target.get(part)
        if child is None:
            child = {}
        if not isinstance(child, dict):
            where = ".".join(parts[:depth + 1])
            raise UserError(f"cannot set {key}: {where} is a {type(child).__name__}, not a group of keys")
        target[part] = child
        target = child
    target[parts[-1]] = value


def apply_sets(config: RunConfig, items: Iterable[str], flag: str = "--set") -> RunConfig:
    """A new config with every `key=value` applied; types and unknown keys are checked as in a config file."""
    items = list(items)
    if not items:
        return config
    for item in items:
        key, text = split_assignment(item, flag)
        data = config.to_dict()
        set_key(data, key, parse_value(text))
        try:
            config = from_dict(data)
        except UserError as exc:
            raise UserError(f"{flag} {item}: {exc}") from None
    return config


def apply_values(config: RunConfig, values: dict[str, Any]) -> RunConfig:
    """Like apply_sets, from already parsed values (a sweep cell)."""
    data = config.to_dict()
    for key, value in values.items():
        set_key(data, key, value)
    return from_dict(data)
