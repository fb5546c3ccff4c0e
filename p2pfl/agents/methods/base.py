"""What a centralized method plugs into the coordinator and client loops (DESIGN.md, coordinator peer).

A round is a fixed sequence of phases that both sides derive from the config alone (`phases`); in
each phase the coordinator sends every participant a request and collects the replies. The
coordinator side decides what to ask whom and what to do with the answers; the client side answers
one request. The math lives in p2pfl/algorithms/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from p2pfl.models.evaluation import evaluate
from p2pfl.algorithms.base import flat_params
from p2pfl.algorithms.method_options import FederatedOptions
from p2pfl.config import OptimConfig, RunConfig
from p2pfl.data.clusters import client_data, true_cluster
from p2pfl.data.dataset import ArrayDataset
from p2pfl.wire import TensorSpec
from p2pfl.seeds import stream_seed

Payload = dict[str, torch.Tensor]
Spec = dict[str, TensorSpec]


@dataclass
class CoordinatorContext:
    config: RunConfig
    dataset: ArrayDataset
    options: FederatedOptions
    clients: list[int]
    truth: dict[int, int]  # true cluster (or task) of every client, to score the assignment


@dataclass
class ClientContext:
    config: RunConfig
    dataset: ArrayDataset
    options: FederatedOptions
    agent_id: int
    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    generator: torch.Generator = field(default_factory=torch.Generator)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def true_cluster_of(config: RunConfig, options: FederatedOptions, client: int) -> int:
    """Client (agent) ids start at 1; for the multi-task method the clusters are its tasks."""
    return true_cluster(client - 1, config.agents - 1, options.clusters)


LocalData = Callable[[RunConfig, ArrayDataset, Any, int], tuple[np.ndarray, ...]]


def cluster_data(config: RunConfig, dataset: ArrayDataset, options: FederatedOptions, client: int):
    """(x, y, x_test, y_test) of a client of the clustered partitions (rotation, label swap, label groups)."""
    return client_data(dataset, client - 1, config.agents - 1, options.clusters, options.cluster_kind,
                       config.seed)[:4]


def client_context(config: RunConfig, dataset: ArrayDataset, options: FederatedOptions, agent_id: int,
                   local_data: LocalData) -> ClientContext:
    device = torch.device(config.device)
    return ClientContext(config, dataset, options, agent_id,
                         *on_device(device, *local_data(config, dataset, options, agent_id)),
                         torch.Generator().manual_seed(stream_seed(config.seed, "batches", agent_id)), device)


def on_device(device: torch.device, *arrays: np.ndarray) -> list[torch.Tensor]:
    """A client's data lives where its model computes (config.device); the wire stays on the CPU."""
    return [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]


class CoordinatorMethod(Protocol):
    total_rounds: int  # rounds with training; one more round only evaluates

    @classmethod
    def rounds_before(cls, options: FederatedOptions) -> int:
        """Rounds before config.rounds (e.g. pre-training): total_rounds = config.rounds + this."""
        ...

    def phases(self, round_: int) -> tuple[str, ...]: ...
    def request(self, tag: str, round_: int, participants: list[int]) -> dict[int, Payload]: ...
    def reply_spec(self, tag: str, client: int) -> Spec: ...
    def absorb(self, tag: str, round_: int, replies: dict[int, Payload], record: dict) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...

    def final_models(self) -> dict[int, torch.Tensor]:
        """Cluster -> flat parameters (of the run's model) of each model the coordinator ends with, exported as
        state_dicts; empty where the usable models are the clients' own (their `final_model`)."""
        ...

    def final_clusters(self) -> dict[int, int] | None:
        """The cluster each client ended in (clusters.json); None where there are no clusters."""
        ...


class ClientMethod(Protocol):
    total_rounds: int

    def phases(self, round_: int) -> tuple[str, ...]: ...
    def request_spec(self, tag: str) -> Spec: ...
    def handle(self, tag: str, round_: int, payload: Payload) -> Payload: ...

    def final_model(self) -> torch.nn.Module | None:
        """The client's own model after the final evaluation, where the method personalises it (None: the
        coordinator's models are the result)."""
        ...


class TrainEachRound:
    """The schedule of most methods: one "train" phase a round, then one final "evaluate"."""

    def __init__(self, rounds: int):
        self.total_rounds = rounds

    @classmethod
    def rounds_before(cls, options: FederatedOptions) -> int:
        return 0

    def phases(self, round_: int) -> tuple[str, ...]:
        return ("evaluate",) if round_ == self.total_rounds else ("train",)


def spec(**shapes: tuple[int, ...]) -> Spec:
    return {name: TensorSpec("float32", tuple(shape)) for name, shape in shapes.items()}


def make_optimizer(params, optim: OptimConfig, kind: str) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(params, lr=optim.lr)
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)


def objective(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classifiers, reconstruction MSE for an autoencoder (it never sees y)."""
    out = model(x)
    return F.mse_loss(out, x) if getattr(model, "unsupervised", False) else F.cross_entropy(out, y)


def train_epochs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int,
                 optimizer: torch.optim.Optimizer, generator: torch.Generator,
                 loss: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = objective) -> float:
    """E local epochs of shuffled mini-batches; returns the mean loss of the last epoch."""
    model.train()
    last = []
    for _ in range(epochs):
        last = []
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            value = loss(model, x[batch], y[batch])
            value.backward()
            optimizer.step()
            last.append(float(value.detach()))
    return float(np.mean(last)) if last else 0.0


@torch.no_grad()
def reconstruction_error(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024) -> float:
    model.eval()
    return sum(float(F.mse_loss(model(x[s:s + batch_size]), x[s:s + batch_size], reduction="sum"))
               for s in range(0, len(x), batch_size)) / x.numel()


def mean_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Cross-entropy of a classifier; reconstruction MSE of an autoencoder."""
    return reconstruction_error(model, x) if getattr(model, "unsupervised", False) else evaluate(model, x, y)[1]


def test_metric(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of a classifier; reconstruction MSE of an autoencoder."""
    return reconstruction_error(model, x) if getattr(model, "unsupervised", False) else evaluate(model, x, y)[0]


def params_of(model: torch.nn.Module) -> torch.Tensor:
    return flat_params(model).clone()


def n_of(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor([float(len(x))])
