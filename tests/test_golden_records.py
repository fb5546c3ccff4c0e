"""Behaviour kept across refactors: the per-round records of every algorithm and coordinator method
equal the ones recorded in tests/golden/records.json (see tests/golden_records.py)."""

import json

import pytest
import torch

from tests.golden_records import GOLDEN, RECORDED_WITH, record_all


def test_every_method_records_the_golden_rounds():
    recorded_with = RECORDED_WITH.read_text().strip()
    if torch.__version__ != recorded_with:
        pytest.skip(f"the records are bit-exact for torch {recorded_with} (the version `make` installs); "
                    f"this is {torch.__version__}")
    golden = json.loads(GOLDEN.read_text())
    got = json.loads(json.dumps(record_all()))  # as stored: tuples become lists, keys strings
    assert sorted(got) == sorted(golden)
    for name in golden:
        assert got[name] == golden[name], f"{name}: per-round records changed"
