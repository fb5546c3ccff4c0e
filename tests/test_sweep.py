"""`p2pfl sweep`: a tiny grid on digits, resumed, then mean ± std per cell and the plot."""

import json

import pytest
from click.testing import CliRunner

from p2pfl.cli.main import cli
from p2pfl.config import save_config
from p2pfl.errors import UserError
from p2pfl.sweep import aggregate, parse_grid
from tests.conftest import small_config


def sweep(config_path, out, *extra):
    return CliRunner().invoke(cli, ["sweep", str(config_path), "--grid", "algorithm=dsgdm-n,local", "--seeds", "0,1",
                                    "--simulate", "--no-progress", "--out", str(out), *extra], catch_exceptions=False)


def test_grid_values_are_yaml():
    assert parse_grid(["optim.lr=0.1,1e-2", "model_args.hidden=[64],[128, 64]", "topology=ring,torus"]) == [
        ("optim.lr", [0.1, 0.01]), ("model_args.hidden", [[64], [128, 64]]), ("topology", ["ring", "torus"])]
    with pytest.raises(UserError, match="lists no values"):
        parse_grid(["optim.lr="])


def test_sweep_runs_resumes_and_aggregates(tmp_path):
    path = tmp_path / "c.yaml"
    config = small_config(agents=3, rounds=4, eval_every=2)
    config.network.addresses = None
    save_config(config, path)
    out = tmp_path / "sweep"
    result = sweep(path, out)
    assert result.exit_code == 0, result.output
    folders = sorted(p.parent.relative_to(out).as_posix() for p in out.glob("*/seed-*/summary.json"))
    assert folders == ["algorithm=dsgdm-n/seed-0", "algorithm=dsgdm-n/seed-1", "algorithm=local/seed-0",
                       "algorithm=local/seed-1"]
    assert "local models accuracy (%), mean ± std" in result.output and "algorithm=local" in result.output
    results = json.loads((out / "results.json").read_text())
    cell = results["cells"][0]
    assert cell["cell"] == "algorithm=dsgdm-n" and cell["seeds"] == [0, 1]
    assert cell["local_accuracy_mean"]["n"] == 2 and cell["consensus_accuracy"]["mean"] is not None
    assert (out / "results.md").read_text().count("\n") == 4 and (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"

    stamp = (out / "algorithm=local" / "seed-1" / "summary.json").stat().st_mtime_ns
    (out / "algorithm=local" / "seed-0" / "summary.json").unlink()  # as if interrupted before the summary
    again = sweep(path, out)
    assert again.exit_code == 0, again.output
    assert again.output.count("done before, skipped") == 3
    assert (out / "algorithm=local" / "seed-1" / "summary.json").stat().st_mtime_ns == stamp
    assert (out / "algorithm=local" / "seed-0" / "summary.json").exists()

    changed = sweep(path, out, "--set", "optim.lr=0.5")
    assert changed.exit_code == 2 and "holds a run of a different config" in changed.stderr


def test_mean_and_std_over_seeds():
    rows = [{"cell": "a", "values": {}, "seed": s, "summary": {"local_accuracy_mean": v, "consensus_accuracy": None}}
            for s, v in enumerate([0.5, 0.7])]
    cell = aggregate(rows)[0]
    assert cell["local_accuracy_mean"]["mean"] == pytest.approx(0.6)
    assert cell["local_accuracy_mean"]["std"] == pytest.approx(0.1414, abs=1e-4)  # sample std (n - 1)
    assert cell["consensus_accuracy"]["mean"] is None


def test_coordinator_methods_report_their_final_metric(tmp_path):
    from p2pfl.config import RunConfig
    from p2pfl.sweep import write_results

    rows = [{"cell": f"algorithm={a}", "values": {"algorithm": a}, "seed": s,
             "summary": {"final_accuracy": v, "metric": "accuracy"}}
            for a, values in (("fedavg", [0.5, 0.6]), ("ifca", [0.9, 0.94])) for s, v in enumerate(values)]
    table = aggregate(rows)
    assert [c["final_accuracy"]["mean"] for c in table] == pytest.approx([0.55, 0.92])
    write_results(tmp_path, RunConfig(), rows, table, "accuracy")
    text = (tmp_path / "results.md").read_text()
    assert "clients' own models, final accuracy (%)" in text and "| algorithm=ifca | 2 | 92.00 ± 2.83 |" in text
    assert (tmp_path / "sweep.png").exists()
