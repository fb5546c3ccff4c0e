"""Coordinator methods: one class per method behind one registry; nothing else branches on a method's name."""

import ast
import dataclasses
from pathlib import Path

import pytest

from p2pfl.registry import ALGORITHMS, METHODS, parse_algorithm_options

PACKAGE = Path(__file__).resolve().parents[1] / "p2pfl"
NAMES = set(METHODS)  # the coordinator methods (a gossip option may share a name: qgm variant "ccl")


def test_every_coordinator_method_has_its_own_coordinator_class():
    assert set(METHODS) == {name for name, entry in ALGORITHMS.items() if entry.centralized}
    assert len({method.coordinator for method in METHODS.values()}) == len(METHODS)


def test_every_name_is_one_gossip_algorithm_or_one_coordinator_method_with_frozen_typed_options():
    for name, entry in ALGORITHMS.items():
        assert (entry.factory is None) != (entry.method is None), name
        assert dataclasses.is_dataclass(entry.options) and entry.options.__dataclass_params__.frozen, name
        assert parse_algorithm_options(name, {}) == entry.options().checked()


def test_rounds_before_the_clustered_rounds_come_from_the_method_class():
    before = {name: m.coordinator.rounds_before(parse_algorithm_options(name, {})) for name, m in METHODS.items()}
    assert before == {**{name: 0 for name in METHODS}, "cpcfl": 5}
    coordinator_mode = parse_algorithm_options("cpcfl", {"pretrain_mode": "coordinator"})
    assert METHODS["cpcfl"].coordinator.rounds_before(coordinator_mode) == 0
    assert METHODS["cpcfl"].client.rounds_before(coordinator_mode) == 0


def names_compared(tree: ast.AST) -> list[str]:
    """String constants that an `==`, `!=` or `in` compares with, where one is a coordinator method's name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                items = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                found += [i.value for i in items if isinstance(i, ast.Constant) and i.value in NAMES]
    return found


def test_no_code_branches_on_a_coordinator_method_name():
    assert names_compared(ast.parse('if config.algorithm in ("ifca", "cpcfl"): pass')) == ["ifca", "cpcfl"]
    branches = {str(path.relative_to(PACKAGE)): names_compared(ast.parse(path.read_text()))
                for path in PACKAGE.rglob("*.py")}
    assert {path: names for path, names in branches.items() if names} == {}


def test_parsed_options_are_typed_frozen_and_keep_an_integer_given_for_a_float():
    options = parse_algorithm_options("ccl", {"gamma": 1, "variant": "ccl"})
    assert (options.gamma, options.variant, options.lambda_m) == (1, "ccl", 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.gamma = 0.5
    fedavg = parse_algorithm_options("fedavg", {"models": 3, "client_timeout": 5})
    assert (fedavg.models, fedavg.coordinator_timeout) == (1, 20.0)  # derived by dataclasses.replace
