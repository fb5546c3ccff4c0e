"""A diverged run fails at once, names the round and the loss term, and says so in its summary."""

import json
import math
import re

import pytest
import torch
from click.testing import CliRunner

import p2pfl.algorithms.dsgd as dsgd
from p2pfl.agents.divergence import check_divergence
from p2pfl.agents.setup import prepare
from p2pfl.agents.simulate import run_simulation
from p2pfl.cli.main import cli
from p2pfl.config import save_config
from p2pfl.errors import Diverged
from tests.conftest import run_cli, small_config

FINE = torch.zeros(5)


@pytest.mark.parametrize("out,named", [
    ({"loss": math.nan, "ce": math.nan, "model_term": 0.1, "data_term": 0.1}, "CE = nan"),
    ({"loss": math.inf, "ce": 1.0, "model_term": math.inf, "data_term": 0.1}, "L_m = inf"),
    ({"loss": 3e5, "ce": 2.0, "model_term": 2e4, "data_term": 3e5}, "L_d = 3e+05"),  # the largest above the limit
    ({"loss": 2e4}, "loss = 2e+04"),
])
def test_the_term_that_broke_is_named(out, named):
    with pytest.raises(Diverged, match=re.escape(f"agent 3 diverged at round 17: {named}")):
        check_divergence(3, 17, out, FINE, max_loss=1e4)


def test_finite_spikes_below_the_limit_pass_and_zero_checks_finiteness_only():
    check_divergence(0, 0, {"loss": 129.0, "ce": 20.3, "model_term": 1270.0}, FINE, max_loss=1e4)
    check_divergence(0, 0, {"loss": 1e30}, FINE, max_loss=0)
    with pytest.raises(Diverged, match="parameters non-finite"):
        check_divergence(0, 0, {"loss": 1.0}, torch.tensor([0.0, math.nan]), max_loss=0)


def test_an_injected_nan_gradient_stops_the_run_at_that_round(tmp_path, monkeypatch):
    real = dsgd.local_gradient
    calls: dict[int, int] = {}

    def poisoned(ctx, x, y, params, loss_fn=None):
        g, loss = real(ctx, x, y, params, loss_fn)
        calls[ctx.agent_id] = calls.get(ctx.agent_id, -1) + 1
        if ctx.agent_id == 2 and calls[2] == 5:
            g = g.clone()
            g[0] = math.nan  # the loss stays finite: only the parameters can tell
        return g, loss

    monkeypatch.setattr(dsgd, "local_gradient", poisoned)
    config = small_config(agents=4, rounds=20)
    # Its neighbours drop the non-finite message it sent that round (the exchange checks every tensor).
    with pytest.raises(Diverged, match="agent 2 diverged at round 5: parameters non-finite"):
        run_simulation(prepare(config), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "agents" / "002" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["round"] == 5 and "diverged" in rows[-1]


def test_an_exploding_run_exits_non_zero_with_a_diverged_summary(tmp_path):
    config = small_config(agents=4, rounds=60, optim__lr=200.0, optim__momentum=0.9)
    save_config(config, tmp_path / "c.yaml")
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "c.yaml"), "--in-process", "--no-progress",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == Diverged.exit_code, result.output
    assert "diverged at round" in result.stderr and "Traceback" not in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "diverged at round" in summary["diverged"]
    assert "status" in result.stdout and "diverged" in result.stdout


def test_processes_stop_together_on_divergence(tmp_path, no_leaked_agents):
    config = small_config(agents=4, rounds=400, optim__lr=200.0, optim__momentum=0.9)
    save_config(config, tmp_path / "c.yaml")
    result = run_cli("run", str(tmp_path / "c.yaml"), "--no-progress", "--out", str(tmp_path / "out"))
    assert result.returncode == Diverged.exit_code, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: agent ")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["agents_finished"] == 0
