"""Behaviour kept across refactors: the per-round records of every algorithm and coordinator method
equal the ones recorded in tests/golden/records.json (see tests/golden_records.py)."""

import json

from tests.golden_records import GOLDEN, record_all


def test_every_method_records_the_golden_rounds():
    golden = json.loads(GOLDEN.read_text())
    got = json.loads(json.dumps(record_all()))  # as stored: tuples become lists, keys strings
    assert sorted(got) == sorted(golden)
    for name in golden:
        assert got[name] == golden[name], f"{name}: per-round records changed"
