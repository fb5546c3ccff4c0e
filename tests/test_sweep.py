"""`p2pfl sweep`: a tiny grid on digits, resumed, then mean ± std per cell and the plot; named cells, diverged
runs and extra metric columns."""

import json

import pytest
import yaml
from click.testing import CliRunner

from p2pfl.cli.main import cli
from p2pfl.config import save_config
from p2pfl.errors import UserError
from p2pfl.sweep import aggregate, metrics_of
from p2pfl.sweep_cells import cells_of, parse_cell, parse_grid, read_cells_file
from tests.conftest import small_config


def sweep(config_path, out, *extra, grid=("--grid", "algorithm=dsgdm-n,local"), seeds="0,1"):
    return CliRunner().invoke(cli, ["sweep", str(config_path), *grid, "--seeds", seeds, "--in-process", "--no-progress",
                                    "--out", str(out), *extra], catch_exceptions=False)


def digits_config(tmp_path, **changes):
    path = tmp_path / "c.yaml"
    config = small_config(agents=4, rounds=4, eval_every=2, **changes)
    config.network.addresses = None
    save_config(config, path)
    return path


def test_grid_values_are_yaml():
    assert parse_grid(["optim.lr=0.1,1e-2", "model_args.hidden=[64],[128, 64]", "topology=ring,torus"]) == [
        ("optim.lr", [0.1, 0.01]), ("model_args.hidden", [[64], [128, 64]]), ("topology", ["ring", "torus"])]
    with pytest.raises(UserError, match="lists no values"):
        parse_grid(["optim.lr="])


def test_sweep_runs_resumes_and_aggregates(tmp_path):
    path = digits_config(tmp_path)
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
    cell = aggregate(rows, metrics_of(rows))[0]
    assert cell["local_accuracy_mean"]["mean"] == pytest.approx(0.6)
    assert cell["local_accuracy_mean"]["std"] == pytest.approx(0.1414, abs=1e-4)  # sample std (n - 1)
    assert cell["consensus_accuracy"]["mean"] is None


def test_coordinator_methods_report_their_final_metric(tmp_path):
    from p2pfl.config import RunConfig
    from p2pfl.sweep import write_results

    rows = [{"cell": f"algorithm={a}", "values": {"algorithm": a}, "seed": s,
             "summary": {"final_accuracy": v, "metric": "accuracy", "final_ari": ari, "final_clusters_found": found}}
            for a, values, ari, found in (("fedavg", [0.5, 0.6], None, None), ("ifca", [0.9, 0.94], 1.0, 4))
            for s, v in enumerate(values)]
    metrics = metrics_of(rows, extra=("final_clusters_found",))
    assert [m.key for m in metrics] == ["final_accuracy", "final_ari", "final_clusters_found"]
    table = aggregate(rows, metrics)
    assert [c["final_accuracy"]["mean"] for c in table] == pytest.approx([0.55, 0.92])
    write_results(tmp_path, RunConfig(), rows, table, metrics)
    text = (tmp_path / "results.md").read_text()
    assert "| cell | seeds | clients' own models, final accuracy (%) | final ARI | final_clusters_found |" in text
    assert "| algorithm=ifca | 2 | 92.00 ± 2.83 | 1.000 ± 0.000 | 4.000 ± 0.000 |" in text
    assert "| algorithm=fedavg | 2 | 55.00 ± 7.07 | n/a | n/a |" in text
    assert (tmp_path / "sweep.png").exists()


def test_named_cells_set_several_keys_and_combine_with_the_grid(tmp_path):
    cells_file = tmp_path / "cells.yaml"
    cells_file.write_text("gossip, fast: {algorithm: dsgdm-n, optim.lr: 0.2}\n")
    out = tmp_path / "sweep"
    result = sweep(digits_config(tmp_path), out, "--cells", str(cells_file),
                   "--cell", "no gossip: algorithm=local, options={}", grid=("--grid", "optim.batch_size=8,16"),
                   seeds="0")
    assert result.exit_code == 0, result.output
    folders = sorted(p.parent.parent.name for p in out.glob("*/seed-0/summary.json"))
    assert folders == ["gossip__fast,optim.batch_size=16", "gossip__fast,optim.batch_size=8",
                       "no_gossip,optim.batch_size=16", "no_gossip,optim.batch_size=8"]
    config = yaml.safe_load((out / "gossip__fast,optim.batch_size=16" / "seed-0" / "config.yaml").read_text())
    assert (config["algorithm"], config["optim"]["lr"], config["optim"]["batch_size"]) == ("dsgdm-n", 0.2, 16)
    cells = [c["cell"] for c in json.loads((out / "results.json").read_text())["cells"]]
    assert cells == ["gossip, fast, optim.batch_size=8", "gossip, fast, optim.batch_size=16",
                     "no gossip, optim.batch_size=8", "no gossip, optim.batch_size=16"]


def test_cells_are_parsed_and_checked_before_any_run(tmp_path):
    assert parse_cell("top-k 1%: algorithm=choco, options={compressor: topk, ratio: 1e-2}, model_args.hidden=[8, 4]") \
        == ("top-k 1%", {"algorithm": "choco", "options": {"compressor": "topk", "ratio": 0.01},
                         "model_args.hidden": [8, 4]})
    with pytest.raises(UserError, match="is not 'NAME: key=value"):
        parse_cell("algorithm=choco")
    with pytest.raises(UserError, match="which --grid varies too"):
        cells_of([("algorithm", ["qgm"])], [("a", {"algorithm": "choco"})])
    with pytest.raises(UserError, match="two cells are named"):
        cells_of([], [("a", {}), ("a", {"seed": 1})])
    (tmp_path / "bad.yaml").write_text("a: [1, 2]\n")
    with pytest.raises(UserError, match="cell 'a' must map config keys"):
        read_cells_file(tmp_path / "bad.yaml")
    out = tmp_path / "sweep"
    result = CliRunner().invoke(cli, ["sweep", str(digits_config(tmp_path)), "--cell", "ok: optim.lr=0.1",
                                      "--cell", "typo: optim.lrr=0.1", "--in-process", "--out", str(out)])
    assert result.exit_code == 2 and "cell 'typo': unknown key 'lrr' in optim" in result.stderr
    assert not list(out.glob("*/seed-*"))  # nothing ran


def test_a_diverged_run_is_counted_and_left_out_of_the_means_and_an_extra_metric_is_a_column(tmp_path):
    out = tmp_path / "sweep"
    # max_loss far below any cross-entropy: the guard stops every run of that cell at its first step
    args = ("--cell", "stable: optim.lr=0.1", "--cell", "guarded: max_loss=1e-9", "--metric",
            "bytes_sent_per_agent_per_round")
    result = sweep(digits_config(tmp_path), out, *args, grid=())
    assert result.exit_code == 0, result.output
    cells = {c["cell"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert cells["guarded"]["diverged"] == 2 and cells["guarded"]["local_accuracy_mean"]["n"] == 0
    assert cells["stable"]["diverged"] == 0 and cells["stable"]["local_accuracy_mean"]["n"] == 2
    assert cells["stable"]["bytes_sent_per_agent_per_round"]["mean"] > 1000
    text = (out / "results.md").read_text()
    assert text.splitlines()[0] == ("| cell | seeds | diverged | local models accuracy (%) | consensus model accuracy "
                                    "(%) | bytes_sent_per_agent_per_round |")
    assert text.splitlines()[3].startswith("| guarded | 2 | 2 | n/a | n/a |")
    # resumed: the diverged runs are finished runs, not rerun
    again = sweep(digits_config(tmp_path), out, *args, grid=())
    assert again.output.count("done before, skipped") == 4

    bad = sweep(digits_config(tmp_path), out, "--cell", "stable: optim.lr=0.1", "--metric", "nonsense", grid=())
    assert bad.exit_code == 2 and "--metric nonsense: no run's summary has it" in bad.stderr


def test_a_cell_with_one_finite_run_shows_its_value_without_a_spread():
    from p2pfl.sweep import fmt, markdown_table

    def row(seed, status, accuracy=None):
        return {"cell": "a", "name": None, "values": {}, "seed": seed,
                "summary": {"status": status, "local_accuracy_mean": accuracy, "consensus_accuracy": accuracy}}

    rows = [row(0, "finished", 0.6543), row(1, "diverged"), row(2, "diverged")]
    table = aggregate(rows)
    stat = table[0]["local_accuracy_mean"]
    assert (stat["mean"], stat["std"], stat["n"], table[0]["diverged"]) == (0.6543, None, 1, 2)
    assert fmt(stat, percent=True) == "65.43"  # not "65.43 ± 0.00": one run has no spread
    assert "| a | 3 | 2 | 65.43 | 65.43 |" in markdown_table(table, metrics_of(rows, "accuracy", ()))
    two = aggregate([row(0, "finished", 0.5), row(1, "finished", 0.7)])[0]["local_accuracy_mean"]
    assert fmt(two, percent=True) == "60.00 ± 14.14"
