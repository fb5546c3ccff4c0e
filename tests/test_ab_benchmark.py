"""benchmarks/ab.py: two variants of one gossip run, time-sliced against each other (the full runs live in
benchmarks/, not in the suite)."""

import json
import os
from types import SimpleNamespace

import pytest

from tests.conftest import free_ports, load_benchmark as load


def test_ab_runs_both_variants_at_once_with_b_s_environment_only_in_b(tmp_path, no_leaked_agents, monkeypatch):
    # The dataset cache folder is read from the environment by every run: B's lands where B's variable says.
    cache_a, cache_b = tmp_path / "cache_a", tmp_path / "cache_b"
    monkeypatch.setenv("P2PFL_CACHE_DIR", str(cache_a))
    rows = load("ab").main(["--quick", "--slice", "0.05", "--env-b", f"P2PFL_CACHE_DIR={cache_b}",
                            "--base-port", str(free_ports(1)[0]), "--results", str(tmp_path / "out")])
    assert len(rows) == 1
    row = rows[0]
    assert row["a_s_per_round"] > 0 and row["b_s_per_round"] > 0
    assert row["b_over_a"] == pytest.approx(row["b_s_per_round"] / row["a_s_per_round"])
    assert row["b_over_a_median_rounds"] == pytest.approx(row["b_median_round_s"] / row["a_median_round_s"])
    assert any(cache_a.rglob("*.npy")) and any(cache_b.rglob("*.npy"))  # each run prepared its own copy
    saved = json.loads((tmp_path / "out" / "ab.json").read_text())
    assert saved["pairs"] == rows and "--env-b" in saved["command"]
    assert "B / A over 1 pairs" in (tmp_path / "out" / "ab.md").read_text()


def test_ab_runs_b_from_its_own_tree(tmp_path, monkeypatch):
    scale = load("scale")
    started = {}
    monkeypatch.setattr(scale.subprocess, "Popen", lambda command, **kwargs: started.update(kwargs, command=command)
                        or SimpleNamespace(pid=0))
    monkeypatch.setattr(scale, "Watcher", lambda *args, **kwargs: SimpleNamespace(start=lambda: None))
    args = SimpleNamespace(rounds=5, model="mlp", data="digits")
    tree = tmp_path / "tree"
    scale.Launch(args, 3, "ring", "dsgdm-n", 40000, 0, tmp_path, root=tree, env={"X": "1"}).start()
    assert started["command"][4] == str(tree / "examples" / "ring16.yaml")
    assert started["cwd"] == tree  # its own tree's p2pfl, first on the path, with B's variable
    assert started["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(tree) and started["env"]["X"] == "1"


@pytest.mark.parametrize("bad", ["NOVALUE", "=1"])
def test_ab_refuses_an_environment_without_a_name_and_a_value(bad):
    with pytest.raises(SystemExit, match="VAR=VALUE"):
        load("ab").parse_env([bad])


def test_ab_refuses_a_tree_that_is_not_a_checkout(tmp_path):
    with pytest.raises(SystemExit, match="not a p2pfl checkout"):
        load("ab").main(["--quick", "--tree-b", str(tmp_path)])
