"""The cells of a sweep: named variants (`--cell`, `--cells FILE`) that set several keys at once, times a
product grid (`--grid key=v1,v2`). A benchmark row such as "CHOCO top-k 1%" is one named cell."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from p2pfl.errors import UserError
from p2pfl.overrides import FLOAT, parse_value, split_assignment


@dataclass
class Cell:
    values: dict[str, Any]
    name: str | None = None  # a named variant's label; None: the label lists the values
    grid: dict[str, Any] = field(default_factory=dict)  # the grid's part of `values`, shown after the name

    @property
    def label(self) -> str:
        shown = self.grid if self.name else self.values
        parts = ([self.name] if self.name else []) + [f"{k}={show(v)}" for k, v in shown.items()]
        return ", ".join(parts) or "base config"

    @property
    def folder(self) -> str:
        shown = self.grid if self.name else self.values
        name = [re.sub(r"[^\w.+-]", "_", self.name)] if self.name else []  # a comma in a name is no separator
        text = ",".join(name + [f"{k}={show(v)}" for k, v in shown.items()]) or "base"
        return re.sub(r"[^\w.,=+-]", "_", text)


def show(value: Any) -> str:
    """A value as --set reads it back: JSON for lists, dicts and null, lowercase booleans."""
    if value is None or isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_grid(items: list[str]) -> list[tuple[str, list[Any]]]:
    """`key=v1,v2,...` each; the values are read as a YAML flow list, so `hidden=[64],[128,64]` works."""
    grid = []
    for item in items:
        key, text = split_assignment(item, "--grid")
        try:
            values = yaml.safe_load(f"[{text}]")
        except yaml.YAMLError:
            raise UserError(f"--grid {item}: cannot read the values; write key=v1,v2 (quote values with commas)") \
                from None
        values = [float(v) if isinstance(v, str) and FLOAT.match(v) else v for v in values]
        if not values:
            raise UserError(f"--grid {item} lists no values; write key=v1,v2")
        if key in (k for k, _ in grid):
            raise UserError(f"--grid names {key} twice; give all its values in one --grid {key}=v1,v2")
        grid.append((key, values))
    return grid


def split_top_level(text: str) -> list[str]:
    """Split at the commas outside brackets and braces: `a=1, b=[1, 2]` is two assignments."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_cell(item: str) -> tuple[str, dict[str, Any]]:
    """`NAME: key=v, key=v` (values as in --set; `options={a: 1, b: 2}` replaces the whole group)."""
    name, sep, body = item.partition(":")
    if not sep or not name.strip():
        raise UserError(f"--cell {item!r} is not 'NAME: key=value, key=value'; write e.g. "
                        "--cell 'sign: algorithm=choco, options.compressor=sign'")
    values = {}
    for part in split_top_level(body):
        key, text = split_assignment(part, "--cell")
        if key in values:
            raise UserError(f"--cell {name.strip()} sets {key} twice")
        values[key] = parse_value(text)
    return name.strip(), values


def read_cells_file(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """A YAML mapping of cell name -> {dotted key: value}, in the order of the table's rows."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"--cells {path}: cannot read it ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"--cells {path} must be a YAML mapping of cell name -> {{key: value}}")
    cells = []
    for name, values in data.items():
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise UserError(f"--cells {path}: cell {name!r} must map config keys to values, got {values!r}")
        cells.append((str(name), {str(k): v for k, v in values.items()}))
    return cells


def cells_of(grid: list[tuple[str, list[Any]]], named: list[tuple[str, dict[str, Any]]] | None = None) -> list[Cell]:
    """Every named cell (or the base config alone) times every combination of the grid's values."""
    keys = [k for k, _ in grid]
    combos = [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in grid))]
    if not named:
        return [Cell(combo) for combo in combos]
    names = [name for name, _ in named]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"two cells are named {name!r}; give each cell its own name")
    cells = []
    for name, values in named:
        clash = sorted(set(values) & set(keys))
        if clash:
            raise UserError(f"cell {name!r} sets {', '.join(clash)}, which --grid varies too; set it in one place")
        cells += [Cell({**values, **combo}, name, combo) for combo in combos]
    folders = [c.folder for c in cells]
    for cell in cells:
        if folders.count(cell.folder) > 1:
            raise UserError(f"cells {cell.label!r} and another share the folder name {cell.folder!r}; rename one")
    return cells
