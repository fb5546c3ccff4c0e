"""User code by import path (`package.module:Name`), resolved the same way in the launcher and every agent."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from typing import Any, Callable

from p2pfl.errors import UserError

IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_import_path(name: str) -> bool:
    return bool(IMPORT_PATH.match(name or ""))


def load_object(spec: str, what: str) -> Any:
    """The object at `module:attr`; the current folder is importable, as with `python -m`."""
    if not is_import_path(spec):
        raise UserError(f"{what} {spec!r} is not an import path; write package.module:Name")
    module_name, attr = spec.split(":")
    cwd = os.getcwd()
    if cwd not in sys.path:  # `p2pfl` started as a console script does not put the folder it runs in on the path
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import {module_name!r} for {what} {spec}: {exc}; run from the folder that holds "
                        "the package or add it to PYTHONPATH") from None
    except Exception as exc:  # the user's module raised while importing
        raise UserError(f"importing {module_name!r} for {what} {spec} failed: {type(exc).__name__}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UserError(f"{module_name} has no {attr!r} (for {what} {spec}); check the name after the colon")
        target = getattr(target, part)
    return target


def accepted(function: Callable, name: str) -> bool:
    """Whether `function` (or a class's constructor) takes a keyword `name` (or **kwargs)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def check_arguments(function: Callable, args: dict, what: str, reserved: tuple[str, ...] = ()) -> None:
    """Every key of `args` is a parameter of `function`; the error lists the ones it takes."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    takes = [n for n, p in parameters.items() if n not in ("self", *reserved) and p.kind is not p.VAR_POSITIONAL]
    for key in args:
        if key not in parameters or key in reserved:
            raise UserError(f"model_args key {key!r} is not an argument of {what}; it takes "
                            f"{', '.join(takes) or 'none'}")
