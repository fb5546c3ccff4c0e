"""Plots a paper could use: topologies in their natural layout, fitted accuracy axes, informative titles."""

import threading

import numpy as np
import pytest

from p2pfl.config import RunConfig
from p2pfl.report import fitted_limits, plot_curves, run_title, spread_curve
from p2pfl.topologies import build_topology
from p2pfl.topologies.draw import draw_topology, layout, topology_title


def test_torus_is_drawn_on_its_grid():
    graph = build_topology("torus", 9)
    positions = layout(graph, "torus")
    assert sorted({tuple(p) for p in positions.values()}) == sorted((float(c), float(-r)) for r in range(3)
                                                                    for c in range(3))
    assert all(abs(positions[u] - positions[v]).sum() == 1 for u, v in [(0, 1), (0, 3), (4, 5)])
    assert topology_title(graph, "torus") == "torus: 9 agents, degree 4, spectral gap 0.600"


def test_star_hub_in_the_centre_ring_on_a_circle():
    star = layout(build_topology("star", 8), "star")
    assert np.allclose(star[0], 0) and all(np.linalg.norm(star[u]) == pytest.approx(1.0) for u in range(1, 8))
    ring = layout(build_topology("ring", 8), "ring")
    assert all(np.linalg.norm(p) == pytest.approx(1.0) for p in ring.values())
    assert "degree 1-7" in topology_title(build_topology("star", 8), "star")


@pytest.mark.parametrize("kind, n", [("torus", 9), ("torus", 8), ("star", 6), ("erdos-renyi", 12), ("ring", 80)])
def test_every_kind_draws(tmp_path, kind, n):
    graph = build_topology(kind, n, p=0.5)
    path = draw_topology(graph, tmp_path / "t.png", kind, colors={u: u % 3 for u in graph.nodes}, note="groups")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_accuracy_axis_fits_the_data_and_titles_name_the_setting(tmp_path):
    low, high = fitted_limits([0.91, 0.93, 0.92])
    assert 0.85 < low < 0.91 and 0.93 < high < 0.99
    assert fitted_limits([0.0, 1.0]) == (0.0, 1.0)
    config = RunConfig(algorithm="qgm", agents=9)
    config.topology.kind = "torus"
    title = run_title(config)
    for fragment in ("qgm", "torus", "9 agents", "digits", "α=0.1"):
        assert fragment in title
    metrics = [[{"round": r, "loss": 1.0 / (r + 1) + a, "test_accuracy": 0.9 + 0.01 * a} for r in range(4)]
               for a in range(3)]
    rounds, mean, lo, hi = spread_curve(metrics, "test_accuracy")
    assert rounds == [0, 1, 2, 3] and lo[0] == pytest.approx(0.9) and hi[0] == pytest.approx(0.92)
    plot_curves(metrics, [(3, 0.93, 0.2)], tmp_path / "c.png", title)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_a_coordinator_run_has_curves_and_a_partition_summary(tmp_path):
    from click.testing import CliRunner

    from p2pfl.cli.main import cli
    from p2pfl.config import save_config
    from tests.conftest import small_config

    path = tmp_path / "c.yaml"
    save_config(small_config(agents=5, rounds=1, algorithm="ifca", data__partition="iid",
                             options={"models": 2, "clusters": 2, "cluster_kind": "rotation", "local_epochs": 1}), path)
    result = CliRunner().invoke(cli, ["run", str(path), "--in-process", "--no-progress", "--out", str(tmp_path / "o")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    import json

    partition = json.loads((tmp_path / "o" / "partition.json").read_text())  # the clients' data, with their cluster
    assert [(a["agent"], a["cluster"]) for a in partition["per_agent"]] == [(1, 0), (2, 0), (3, 1), (4, 1)]
    assert "partition: 4 clients x 359 training samples" in result.output


def test_plots_drawn_beside_the_start_are_joined_and_a_failure_is_a_warning_not_an_error(capsys):
    from p2pfl.cli.execute import draw_in_background

    drawn = []
    join = draw_in_background(lambda: drawn.append(threading.current_thread().name), "the plots")
    join()
    assert drawn == ["p2pfl-plots"]  # on its own thread, finished once joined

    def broken() -> None:
        raise ValueError("no such font")

    draw_in_background(broken, "the topology and partition plots")()  # the join does not raise
    assert "warning: the topology and partition plots were not drawn: ValueError: no such font" in \
        capsys.readouterr().err
