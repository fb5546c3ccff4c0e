"""Typed options: each algorithm's `options:` as a frozen dataclass, built once from the config's plain
mapping by one parser, so the code past validation reads `options.lambda_m`, never `options["lambda_m"]`."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Callable, Mapping, Self

from p2pfl.errors import UserError


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of every options dataclass; `checked` holds the cross-field checks and derived values."""

    def checked(self) -> Self:
        """Raise a UserError for values that do not fit together; return the options to run with
        (a copy by dataclasses.replace where a value is derived from others)."""
        return self


def kind_of(hint: Any) -> tuple[str, Callable[[Any], bool]]:
    """What a value of a field typed `hint` must be: a phrase for the message, and a test.
    An int is a fine float (YAML writes 1 for 1.0); a bool is never a number."""
    if hint is bool:
        return "true or false", lambda v: isinstance(v, bool)
    if hint is int:
        return "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return "a finite number", lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                                             and math.isfinite(v))
    if hint is str:
        return "a string", lambda v: isinstance(v, str)
    if typing.get_origin(hint) is list:
        item = kind_of(typing.get_args(hint)[0])[1]
        return "a list", lambda v: isinstance(v, list) and all(item(x) for x in v)
    return "any value", lambda v: True


def field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return f.default


def option_defaults(cls: type[Options]) -> dict[str, Any]:
    """Every option of `cls` with its default, in declaration order (the config reference lists these)."""
    return {f.name: field_default(f) for f in dataclasses.fields(cls)}


def parse_options(cls: type[Options], options: Mapping[str, Any], algorithm: str) -> Options:
    """The config's `options:` mapping as a checked `cls`: each value of its field's type (checked first,
    in the mapping's order), no unknown key (a UserError naming the known ones), then the class's checks."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in options.items():
        if key not in fields:
            continue
        phrase, test = kind_of(hints[key])
        if not test(value):
            hint = " (written in quotes: drop them)" if isinstance(value, str) and phrase != "a string" else ""
            raise UserError(f"options.{key} must be {phrase} like its default {field_default(fields[key])!r}, "
                            f"got {value!r}{hint}")
    unknown = set(options) - set(fields)
    if unknown:
        raise UserError(f"unknown option {sorted(unknown)[0]!r} for algorithm {algorithm}; "
                        f"known: {', '.join(sorted(fields)) or 'none'}")
    return cls(**options).checked()
