"""Coordinator peer and client role for the centralized methods, over the same exchange and wire.

Agent 0 coordinates on a star; the others are clients that keep their data. Each round has two
request/reply phases: "evaluate" (the K models go out, each client returns its training loss and
test accuracy under each) and "train" (each client gets its assigned model, trains E local epochs,
returns it with n_i). A client left out of a round gets an empty request. A silent client is
absent for the round; a silent coordinator stops the clients with a clear error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from p2pfl.agents import rundir
from p2pfl.agents.agent import Stopped, initial_model
from p2pfl.agents.evaluation import evaluate
from p2pfl.algorithms.base import flat_params, set_flat_params
from p2pfl.algorithms.federated import (StabilityTracker, aggregate_per_model, check_federated_options,
                                        clove_assign, ifca_assign, random_assignment)
from p2pfl.config import RunConfig
from p2pfl.data.clusters import client_data
from p2pfl.data.dataset import ArrayDataset
from p2pfl.errors import UserError
from p2pfl.exchange import Exchange
from p2pfl.wire import TensorSpec, spec_of

log = logging.getLogger("p2pfl.federated")
COORDINATOR = 0
def initial_models(config: RunConfig, dataset: ArrayDataset, count: int, identical: bool) -> list[torch.Tensor]:
    models = []
    for k in range(count):
        shifted = dataclasses.replace(config, seed=config.seed + (0 if identical else 7919 * k))
        models.append(flat_params(initial_model(shifted, dataset)).clone())
    return models


class CoordinatorLoop:
    def __init__(self, config: RunConfig, dataset: ArrayDataset, exchange: Exchange, run_dir: Path,
                 stop: threading.Event | None = None):
        self.config, self.exchange, self.run_dir = config, exchange, Path(run_dir)
        self.options = check_federated_options(config.options, config.algorithm)
        self.clients = list(range(1, config.agents))
        self.truth = {c: client_data(dataset, c - 1, len(self.clients), self.options["clusters"],
                                     self.options["cluster_kind"], config.seed)[4] for c in self.clients}
        self.models = initial_models(config, dataset, self.options["models"], self.options["init"] == "identical")
        self.rng = np.random.default_rng(config.seed)
        self.stability = StabilityTracker(self.options["patience"])
        self.assignment: dict[int, int] = {}
        self.stop = stop or threading.Event()

    def assign(self, round_: int, losses: dict[int, np.ndarray]) -> dict[int, int]:
        clients = sorted(losses)
        method, K = self.config.algorithm, len(self.models)
        if method == "fedavg" or K == 1:
            return {c: 0 for c in clients}
        matrix = np.stack([losses[c] for c in clients])
        if method == "ifca":
            return dict(zip(clients, ifca_assign(matrix).tolist()))
        if self.stability.frozen and all(c in self.assignment for c in clients):
            return {c: self.assignment[c] for c in clients}
        if round_ == 0:
            chosen = random_assignment(len(clients), K, self.rng)
        else:
            chosen = clove_assign(matrix, self.config.seed, self.options["sqrt_losses"], self.options["unknown_k"])
        return dict(zip(clients, chosen.tolist()))

    def phase(self, round_: int, tag: str, outbox: dict, expect: Mapping[str, TensorSpec]) -> dict[int, dict]:
        """Send every client its request (empty for those sitting out) and collect the participants' replies."""
        participants = [c for c, payload in outbox.items() if payload]
        self.exchange.exchange(round_, tag, outbox, expect_from=[])
        return self.exchange.exchange(round_, f"{tag}-reply", {}, expect_from=participants, expect=expect,
                                      timeout=self.options["client_timeout"])

    def evaluate_models(self, round_: int, participants: list[int]) -> dict[int, dict]:
        stacked = {"models": torch.stack(self.models)}
        K = len(self.models)
        spec = {"losses": TensorSpec("float32", (K,)), "accuracy": TensorSpec("float32", (K,))}
        return self.phase(round_, "evaluate", {c: stacked if c in participants else {} for c in self.clients}, spec)

    def run(self) -> list[dict]:
        directory = rundir.agent_dir(self.run_dir, COORDINATOR)
        directory.mkdir(parents=True, exist_ok=True)
        records = []
        size = len(self.models[0])
        with open(rundir.metrics_path(self.run_dir, COORDINATOR), "w") as sink:
            for round_ in range(self.config.rounds + 1):  # the last pass only evaluates the final models
                if self.stop.is_set():
                    raise Stopped("coordinator stopped")
                started = time.perf_counter()
                final = round_ == self.config.rounds
                count = max(1, round(self.options["participation"] * len(self.clients)))
                participants = self.clients if final else sorted(self.rng.choice(self.clients, count, replace=False).tolist())
                evaluated = self.evaluate_models(round_, participants)
                losses = {c: r["losses"].numpy() for c, r in evaluated.items()}
                assignment = self.assign(round_, losses) if losses else {}
                record: dict[str, Any] = {"round": round_, "participants": participants,
                                          "absent": sorted(set(participants) - set(evaluated))}
                if assignment:
                    clients = sorted(assignment)
                    record["ari"] = float(adjusted_rand_score([self.truth[c] for c in clients],
                                                              [assignment[c] for c in clients]))
                    record["accuracy"] = float(np.mean([evaluated[c]["accuracy"][assignment[c]].item() for c in clients]))
                    record["assignment"] = {str(c): assignment[c] for c in clients}
                    record["collapse_share"] = float(np.bincount(list(assignment.values())).max() / len(assignment))
                if not final and assignment:
                    self.assignment.update(assignment)
                    record["frozen"] = self.stability.update(assignment) if self.config.algorithm == "clove" else False
                    outbox = {c: ({"model": self.models[assignment[c]]} if c in assignment else {}) for c in self.clients}
                    replies = self.phase(round_, "train", outbox, {"model": TensorSpec("float32", (size,)),
                                                                   "n": TensorSpec("float32", (1,))})
                    updates = {c: (assignment[c], r["model"], float(r["n"][0])) for c, r in replies.items()}
                    self.models = aggregate_per_model(self.models, updates)
                    record["absent"] = sorted(set(record["absent"]) | (set(assignment) - set(replies)))
                record["seconds"] = time.perf_counter() - started
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                records.append(record)
                if record["absent"]:
                    log.warning("round %s: clients %s did not answer in time; going on without them", round_,
                                record["absent"])
        return records


class ClientLoop:
    def __init__(self, config: RunConfig, agent_id: int, dataset: ArrayDataset, exchange: Exchange, run_dir: Path,
                 stop: threading.Event | None = None):
        self.config, self.agent_id, self.exchange, self.run_dir = config, agent_id, exchange, Path(run_dir)
        self.options = check_federated_options(config.options, config.algorithm)
        x, y, x_test, y_test, self.cluster = client_data(dataset, agent_id - 1, config.agents - 1,
                                                         self.options["clusters"], self.options["cluster_kind"],
                                                         config.seed)
        self.x, self.y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
        self.x_test, self.y_test = torch.from_numpy(np.ascontiguousarray(x_test)), torch.from_numpy(y_test)
        self.model = initial_model(config, dataset)
        self.size = len(flat_params(self.model))
        self.generator = torch.Generator().manual_seed(config.seed * 100_003 + agent_id)
        self.stop = stop or threading.Event()

    def request(self, round_: int, tag: str, expect: Mapping[str, TensorSpec]) -> dict | None:
        got = self.exchange.exchange(round_, tag, {}, expect_from=[COORDINATOR], timeout=self.options["client_timeout"])
        if COORDINATOR not in got:
            raise UserError(f"client {self.agent_id}: the coordinator was silent for {self.options['client_timeout']:.0f}s "
                            f"in round {round_}; it is gone or unreachable, this client stops")
        payload = got[COORDINATOR]
        if payload and spec_of(payload) != dict(expect):  # empty = sit this phase out
            raise UserError(f"client {self.agent_id}: malformed {tag} request from the coordinator")
        return payload or None

    def losses_and_accuracy(self, models: torch.Tensor) -> dict[str, torch.Tensor]:
        losses, accuracy = [], []
        for params in models:
            set_flat_params(self.model, params)
            accuracy.append(evaluate(self.model, self.x_test, self.y_test)[0])
            losses.append(evaluate(self.model, self.x, self.y)[1])
        return {"losses": torch.tensor(losses, dtype=torch.float32), "accuracy": torch.tensor(accuracy, dtype=torch.float32)}

    def train(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        set_flat_params(self.model, params.clone())
        optim = self.config.optim
        optimizer = (torch.optim.Adam(self.model.parameters(), lr=optim.lr) if self.options["client_optimizer"] == "adam"
                     else torch.optim.SGD(self.model.parameters(), lr=optim.lr, momentum=optim.momentum,
                                          weight_decay=optim.weight_decay))
        for _ in range(self.options["local_epochs"]):
            order = torch.randperm(len(self.y), generator=self.generator)
            for start in range(0, len(order), optim.batch_size):
                batch = order[start:start + optim.batch_size]
                optimizer.zero_grad()
                F.cross_entropy(self.model(self.x[batch]), self.y[batch]).backward()
                optimizer.step()
        return {"model": flat_params(self.model).clone(), "n": torch.tensor([float(len(self.y))])}

    def run(self) -> None:
        K = self.options["models"]
        for round_ in range(self.config.rounds + 1):
            if self.stop.is_set():
                raise Stopped(f"client {self.agent_id} stopped")
            request = self.request(round_, "evaluate", {"models": TensorSpec("float32", (K, self.size))})
            if request:
                self.exchange.exchange(round_, "evaluate-reply", {COORDINATOR: self.losses_and_accuracy(request["models"])},
                                       expect_from=[])
            if round_ == self.config.rounds:
                break
            request = self.request(round_, "train", {"model": TensorSpec("float32", (self.size,))})
            if request:
                self.exchange.exchange(round_, "train-reply", {COORDINATOR: self.train(request["model"])}, expect_from=[])
        rundir.agent_dir(self.run_dir, self.agent_id).mkdir(parents=True, exist_ok=True)


def summarize_federated(config: RunConfig, run_dir: Path) -> dict:
    rows = [json.loads(l) for l in rundir.metrics_path(run_dir, COORDINATOR).read_text().splitlines()]
    scored = [r for r in rows if "ari" in r]
    first_perfect = next((r["round"] for r in scored if r["ari"] >= 1.0 - 1e-9), None)
    summary = {"name": config.name, "algorithm": config.algorithm, "clients": config.agents - 1,
               "rounds": config.rounds, "options": check_federated_options(config.options, config.algorithm),
               "ari_per_round": [r["ari"] for r in scored], "accuracy_per_round": [r["accuracy"] for r in scored],
               "final_accuracy": scored[-1]["accuracy"] if scored else None,
               "final_ari": scored[-1]["ari"] if scored else None, "first_round_with_ari_1": first_perfect,
               "round0_collapse_share": scored[0]["collapse_share"] if scored else None,
               "run_dir": str(run_dir)}
    (Path(run_dir) / rundir.SUMMARY).write_text(json.dumps(summary, indent=2))
    return summary


def print_federated(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['name']}: {summary['algorithm']}, {summary['clients']} clients, "
                        f"{summary['options']['models']} models, {summary['options']['cluster_kind']} clusters")
    table.add_column("round")
    table.add_column("ARI", justify="right")
    table.add_column("accuracy (each client, its model, its cluster's test data)", justify="right")
    for i, (ari, acc) in enumerate(zip(summary["ari_per_round"], summary["accuracy_per_round"])):
        table.add_row(str(i) if i < summary["rounds"] else "final", f"{ari:.3f}", f"{100 * acc:.2f}%")
    Console(width=120).print(table)
    print(f"run folder: {summary['run_dir']}")
