"""In-process multi-agent harness for algorithm unit tests."""

from __future__ import annotations

import threading

import torch
from torch import nn

from p2pfl.registry import build_algorithm, parse_algorithm_options
from p2pfl.algorithms.base import AgentContext
from p2pfl.config import OptimConfig
from p2pfl.exchange import InMemoryHub
from p2pfl.models.base import FeatureClassifier
from p2pfl.topologies import build_topology
from p2pfl.topologies.mixing import SELF_WEIGHT


class TinyNet(FeatureClassifier):
    """features = tanh(A x), head = B f: small enough to check by hand."""

    def __init__(self, inputs: int = 3, width: int = 2, classes: int = 3):
        super().__init__()
        self.feature_dim = width
        self.body = nn.Linear(inputs, width)
        self.classifier = nn.Linear(width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(x))


def make_agents(algorithm: str, graph, optim: OptimConfig, options=None, rounds: int = 10, classes: int = 3,
                timeout: float = 5.0, seed: int = 0):
    hub = InMemoryHub()
    agents = []
    for i in sorted(graph.nodes):
        torch.manual_seed(seed)
        model = TinyNet(classes=classes)
        exchange = hub.endpoint(i, graph[i], "test", timeout)
        weights = {j: graph[i][j]["weight"] for j in sorted(graph[i])}
        ctx = AgentContext(i, weights, graph.nodes[i][SELF_WEIGHT], model, exchange, optim, rounds,
                           graph.number_of_nodes(), classes)
        agents.append(build_algorithm(algorithm, ctx, parse_algorithm_options(algorithm, options or {})))
    return agents


def step_all(agents, round_: int, batches) -> list[dict]:
    """One synchronous round: every agent steps in its own thread, as in --simulate."""
    results: list = [None] * len(agents)
    errors = []

    def body(i: int) -> None:
        try:
            results[i] = agents[i].step(round_, *batches[i])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(len(agents))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def graph(kind: str, n: int):
    return build_topology(kind, n)


def loops_in_threads(loops) -> tuple[list[threading.Thread], dict]:
    """Start each loop's run() in its own daemon thread; returns the threads and what each loop raised
    (by agent id; nothing when every loop finished)."""
    errors: dict = {}

    def body(loop):
        try:
            loop.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors[loop.agent_id] = exc

    threads = [threading.Thread(target=body, args=(loop,), daemon=True) for loop in loops]
    for t in threads:
        t.start()
    return threads, errors
