import networkx as nx
import numpy as np
import pytest

from p2pfl.errors import UserError
from p2pfl.topologies import TOPOLOGIES, build_topology, describe, mixing_matrix, spectral_gap


@pytest.mark.parametrize("kind", [k for k in TOPOLOGIES if k != "file"])
def test_every_builder_gives_a_connected_doubly_stochastic_symmetric_matrix(kind):
    graph = build_topology(kind, 16, seed=1, p=0.5)
    w = mixing_matrix(graph)
    assert nx.is_connected(graph)
    np.testing.assert_allclose(w.sum(0), 1)
    np.testing.assert_allclose(w.sum(1), 1)
    np.testing.assert_allclose(w, w.T)
    assert (w >= 0).all()


def test_ring_uniform_weights_are_one_third():
    w = mixing_matrix(build_topology("ring", 6))
    assert w[0, 0] == pytest.approx(1 / 3) and w[0, 1] == pytest.approx(1 / 3) and w[0, 5] == pytest.approx(1 / 3)
    assert w[0, 2] == 0


def test_metropolis_hastings_on_a_star():
    w = mixing_matrix(build_topology("star", 4))  # hub degree 3, leaves degree 1
    assert w[0, 1] == pytest.approx(1 / 4)  # 1 / (1 + max(3, 1))
    assert w[1, 1] == pytest.approx(3 / 4)
    assert w[0, 0] == pytest.approx(1 / 4)


def test_torus_and_circulant_shapes():
    torus = build_topology("torus", 16)
    assert all(d == 4 for _, d in torus.degree)
    circ = build_topology("circulant", 32)
    assert sorted(circ[0]) == [1, 4, 28, 31]
    assert sorted(build_topology("exponential", 8)[0]) == [1, 2, 4, 6, 7]


def test_spectral_gap_orders_graphs_by_mixing_speed():
    assert spectral_gap(build_topology("complete", 8)) == pytest.approx(1.0)
    assert spectral_gap(build_topology("ring", 16)) < spectral_gap(build_topology("torus", 16)) < 1
    facts = describe(build_topology("ring", 16))
    assert facts["diameter"] == 8 and facts["degree_max"] == 2


def test_graph_files_edge_list_and_graphml(tmp_path):
    edges = tmp_path / "g.txt"
    edges.write_text("a b\nb c\nc a\nc d\n")
    graph = build_topology("file", 0, path=str(edges))
    assert graph.number_of_nodes() == 4 and sorted(graph.nodes) == [0, 1, 2, 3]
    gml = tmp_path / "g.graphml"
    nx.write_graphml(nx.cycle_graph(5), gml)
    assert build_topology("file", 0, path=str(gml)).number_of_edges() == 5


@pytest.mark.parametrize("kind, agents, match", [
    ("hypercube", 8, "unknown topology"),
    ("ring", 1, "at least 2"),
    ("torus", 7, "composite"),
    ("random-regular", 5, "even"),
])
def test_bad_topologies_are_user_errors(kind, agents, match):
    with pytest.raises(UserError, match=match):
        build_topology(kind, agents)


def test_disconnected_graph_is_refused_with_a_fix(tmp_path):
    edges = tmp_path / "two.txt"
    edges.write_text("0 1\n2 3\n")
    with pytest.raises(UserError, match="disconnected .2 components"):
        build_topology("file", 4, path=str(edges))
    with pytest.raises(UserError, match="disconnected"):
        build_topology("erdos-renyi", 30, p=0.01)
    with pytest.raises(UserError, match="does not exist"):
        build_topology("file", 4, path=str(tmp_path / "nope.txt"))
