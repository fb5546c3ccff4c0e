"""Every shipped example config loads and validates (the ones needing files are checked up to them)."""

from pathlib import Path

import pytest

from p2pfl.config import load_config
from p2pfl.validation import validate_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.name != "hosts.yaml"], ids=lambda p: p.name)
def test_example_configs_validate(path):
    validate_config(load_config(path))
