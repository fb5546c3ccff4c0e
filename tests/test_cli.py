"""The command line as a user meets it: clear one-line errors, overrides, simulate, topology show."""

import json
import socket

import pytest
from click.testing import CliRunner

from p2pfl.cli.main import cli
from p2pfl.config import save_config
from tests.conftest import run_cli, small_config


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args):
    return runner.invoke(cli, list(args), catch_exceptions=False)


def test_simulate_with_overrides_writes_a_run_folder(runner, tmp_path):
    path = tmp_path / "c.yaml"
    config = small_config(agents=3, rounds=4)
    config.network.addresses = None  # --agents 5 then derives 5 addresses from base_port
    save_config(config, path)
    result = invoke(runner, "run", str(path), "--in-process", "--agents", "5", "--topology", "complete",
                    "--rounds", "6", "--seed", "3", "--out", str(tmp_path / "out"), "--no-progress")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["agents"], summary["topology"], summary["rounds"], summary["seed"]) == (5, "complete", 6, 3)
    assert summary["bytes_sent_per_agent_per_round"] > 0
    assert (tmp_path / "out" / "topology.png").exists() and (tmp_path / "out" / "config.yaml").exists()
    lines = (tmp_path / "out" / "agents" / "004" / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    for key in ("loss", "bytes_sent", "bytes_received", "compute_seconds", "comm_seconds", "wait_seconds",
                "test_accuracy"):
        assert key in record


def one_line_error(result, *fragments):
    assert result.exit_code != 0
    text = result.stderr.strip()
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in text, text


@pytest.mark.parametrize("args, fragments", [
    (["--topology", "hypercube"], ["unknown topology 'hypercube'", "choose one of"]),
    (["--agents", "1"], ["agents must be >= 2"]),
    (["--alpha", "0"], ["alpha must be > 0"]),
    (["--dataset", "fashion-mnist", "--data-path", "/nonexistent/fm"], ["does not exist", "make fmnist"]),
    (["--algorithm", "sgd-magic"], ["unknown algorithm"]),
    (["--topology", "torus", "--agents", "7"], ["composite"]),
])
def test_bad_input_is_one_clear_line(runner, tmp_path, args, fragments):
    path = tmp_path / "c.yaml"
    config = small_config()
    config.network.addresses = None
    save_config(config, path)
    one_line_error(invoke(runner, "run", str(path), "--in-process", "--no-progress", "--out", str(tmp_path / "o"), *args),
                   *fragments)


def test_disconnected_topology_file(runner, tmp_path):
    edges = tmp_path / "g.txt"
    edges.write_text("0 1\n2 3\n")
    path = tmp_path / "c.yaml"
    save_config(small_config(), path)
    one_line_error(invoke(runner, "run", str(path), "--in-process", "--topology-file", str(edges)), "disconnected")


def test_malformed_yaml_and_unknown_keys(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("agents: [1, 2\nrounds: 3\n")
    one_line_error(invoke(runner, "run", str(bad), "--in-process"), "not valid YAML", "line")
    typo = tmp_path / "typo.yaml"
    typo.write_text("agnets: 4\n")
    one_line_error(invoke(runner, "run", str(typo), "--in-process"), "unknown key 'agnets'", "known keys")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("rounds: many\n")
    one_line_error(invoke(runner, "run", str(wrong), "--in-process"), "rounds must be an integer")
    one_line_error(invoke(runner, "run", str(tmp_path / "missing.yaml")), "does not exist")


def test_port_in_use_is_reported_before_launch(runner, tmp_path):
    config = small_config(agents=3)
    holder = socket.socket()
    holder.bind(("127.0.0.1", int(config.network.addresses[1].rsplit(":", 1)[1])))
    holder.listen()
    try:
        path = tmp_path / "c.yaml"
        save_config(config, path)
        one_line_error(invoke(runner, "run", str(path), "--out", str(tmp_path / "o")), "already in use", "agent 1")
    finally:
        holder.close()


def test_unreachable_neighbour_times_out_with_a_clear_error(runner, tmp_path):
    config = small_config(agents=3)
    config.network.startup_timeout = 1.0
    path = tmp_path / "c.yaml"
    save_config(config, path)
    result = invoke(runner, "agent", "--config", str(path), "--id", "0", "--out", str(tmp_path / "o"))
    assert result.exit_code == 3
    last = result.stderr.strip().splitlines()[-1]  # a hand-started agent logs to the terminal before the error
    assert last.startswith("error: agent 0: neighbour(s) 1 at tcp://127.0.0.1:")
    assert "did not answer within 1s" in last and "p2pfl agent --id" in last


def test_errors_in_a_real_process_have_no_traceback(tmp_path):
    result = run_cli("run", "--agents", "1", "--in-process")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: agents must be >= 2, got 1; raise --agents"


def test_topology_show_prints_facts_and_writes_a_png(runner, tmp_path):
    png = tmp_path / "t.png"
    result = invoke(runner, "topology", "show", "torus", "--agents", "16", "--png", str(png))
    assert result.exit_code == 0
    assert "diameter: 4" in result.output and "spectral_gap" in result.output
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_topology_show_describes_a_dynamic_sequence(runner, tmp_path):
    png = tmp_path / "d.png"
    result = invoke(runner, "topology", "show", "one-peer-exponential", "--agents", "8", "--png", str(png))
    assert result.exit_code == 0
    facts = {key.strip(): value for key, value in (line.split(": ", 1) for line in result.output.splitlines())}
    assert facts["period"] == "3" and float(facts["contraction"]) < 1e-9  # log2(8) rounds: exact average
    assert float(facts["sent_per_round"]) == 1
    assert png.read_bytes()[:4] == b"\x89PNG"
    random = invoke(runner, "topology", "show", "random-matching", "--agents", "8", "--rounds", "20", "--png", str(png))
    assert "period: none (random)" in random.output and "window: 20" in random.output
