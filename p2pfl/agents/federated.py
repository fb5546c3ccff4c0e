"""Coordinator peer and client role of the centralized methods, over the same exchange and wire.

Agent 0 coordinates on a star; the others are clients that keep their data. A round is the fixed
sequence of phases the method names, after a start-up hello from every client (a client that never
says hello is absent); in each, the coordinator sends every client a request (empty for one sitting
the round out) and collects the participants' replies until client_timeout. A silent client is absent
for the phase; a coordinator silent past coordinator_timeout stops the clients with a clear error. With
`checkpoint_every` the coordinator saves its state; restarted with `--resume` it asks the running
clients where they are and carries on after that round (clients follow a coordinator that is ahead).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from p2pfl.agents import rundir
from p2pfl.agents.agent import Stopped
from p2pfl.agents.coordinator_export import export_client_model, export_coordinator_models, exported_files
from p2pfl.agents.handshake import hello_until_answered
from p2pfl.agents.methods.base import ClientContext, CoordinatorContext, client_context, true_cluster_of
from p2pfl.algorithms.method_options import FederatedOptions
from p2pfl.config import RunConfig
from p2pfl.data.dataset import ArrayDataset
from p2pfl.constants import HELLO_ROUND, TAG_HELLO
from p2pfl.errors import PeerUnreachable, UserError
from p2pfl.exchange import Exchange
from p2pfl.registry import METHODS, parse_algorithm_options
from p2pfl.wire import all_finite, spec_of
from p2pfl.seeds import stream_seed

log = logging.getLogger("p2pfl.federated")
COORDINATOR = 0


class CoordinatorLoop:
    def __init__(self, config: RunConfig, dataset: ArrayDataset, exchange: Exchange, run_dir: Path,
                 stop: threading.Event | None = None, resume: bool = False, options: FederatedOptions | None = None):
        """`options`: the method's, as validation parsed them (parsed here from config.options if not given)."""
        self.config, self.dataset, self.exchange, self.run_dir = config, dataset, exchange, Path(run_dir)
        self.options = options if options is not None else federated_options(config)
        self.clients = list(range(1, config.agents))
        truth = {c: true_cluster_of(config, self.options, c) for c in self.clients}
        self.method = METHODS[config.algorithm].coordinator(CoordinatorContext(config, dataset, self.options,
                                                                               self.clients, truth))
        self.rng = np.random.default_rng(stream_seed(config.seed, "participation"))  # who participates in each round
        self.stop = stop or threading.Event()
        self.start_round = 0
        self.invalid: set[int] = set()  # clients whose reply this round could not be used
        self.invalid_logged: set[int] = set()
        self.resumed = resume and self.load_checkpoint()

    # -- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self, round_: int) -> None:
        path = rundir.checkpoint_path(self.run_dir, COORDINATOR)
        torch.save({"round": round_, "method": self.method.state_dict(), "rng": self.rng.bit_generator.state},
                   path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)  # atomic: a crash mid-save leaves the previous checkpoint

    def load_checkpoint(self) -> bool:
        path = rundir.checkpoint_path(self.run_dir, COORDINATOR)
        if not path.exists():
            log.warning("coordinator: no checkpoint at %s, starting from round 0", path)
            return False
        state = torch.load(path, weights_only=True)  # tensors and plain containers only: no code in a checkpoint
        self.method.load_state_dict(state["method"])
        self.rng.bit_generator.state = state["rng"]
        self.start_round = state["round"] + 1
        log.info("coordinator: loaded checkpoint of round %s", state["round"])
        return True

    def rejoin(self) -> None:
        """Ask the running clients which round they are in and go on after it: they skip to us."""
        heard = hello_until_answered(self.exchange, {"round": torch.tensor([self.start_round])}, self.clients,
                                     self.config.network.startup_timeout)
        if heard:
            self.start_round = max(self.start_round, 1 + max(int(h["round"][0]) for h in heard.values()))
        log.info("coordinator: resumed, %s clients answered, continuing at round %s", len(heard), self.start_round)

    def handshake(self) -> None:
        """Before round 0, wait (up to network.startup_timeout) until every client said hello, as gossip
        agents do, so a slow starter is not counted absent in round 0. A client that never appears is logged
        and marked down: absent in the rounds it is asked, not waited for until it is heard from (a late
        starter's hello is answered with the current round, and it joins there)."""
        started = time.perf_counter()
        timeout = self.config.network.startup_timeout
        hello = {"round": torch.tensor([self.start_round])}
        heard = self.exchange.exchange(HELLO_ROUND, TAG_HELLO, {c: hello for c in self.clients}, timeout=timeout)
        missing = sorted(set(self.clients) - set(heard))
        if len(missing) == len(self.clients):
            raise PeerUnreachable(f"coordinator: no client said hello within {timeout:.0f}s; start them "
                                  "(p2pfl agent --id N) or check the addresses and firewall")
        if missing:
            log.warning("coordinator: clients %s did not say hello within %.0fs; going on with the %s others, "
                        "the missing ones are absent until they appear", missing, timeout, len(heard))
            for client in missing:
                self.exchange.mark_down(client, "did not say hello at start-up")
        else:
            log.info("coordinator: all %s clients up after %.1fs", len(heard), time.perf_counter() - started)

    # -- rounds ----------------------------------------------------------------------------
    def phase(self, round_: int, tag: str, requests: dict[int, dict]) -> dict[int, dict]:
        """Send every client its request (empty for those sitting out) and collect the participants' replies."""
        self.exchange.send(round_, tag, {c: requests.get(c, {}) for c in self.clients})
        asked = sorted(c for c, payload in requests.items() if payload)
        replies = self.exchange.collect(round_, f"{tag}-reply", asked,
                                        expect={c: self.method.reply_spec(tag, c) for c in asked},
                                        timeout=self.options.client_timeout)
        usable = {}
        for client, reply in replies.items():
            problem = unusable(reply)
            if problem is None:
                usable[client] = reply
                continue
            self.invalid.add(client)
            if client not in self.invalid_logged:  # a diverged client would repeat it every round
                self.invalid_logged.add(client)
                log.warning("round %s: client %s sent an unusable %s reply (%s); it is left out of the rounds "
                            "where this happens", round_, client, tag, problem)
        return usable

    def participants(self, round_: int) -> list[int]:
        if round_ == self.method.total_rounds:
            return self.clients  # the final evaluation asks everyone
        count = max(1, round(self.options.participation * len(self.clients)))
        return sorted(self.rng.choice(self.clients, count, replace=False).tolist())

    def run(self) -> list[dict]:
        rundir.agent_dir(self.run_dir, COORDINATOR).mkdir(parents=True, exist_ok=True)
        if self.resumed:
            self.rejoin()
        else:
            self.handshake()
        records = []
        with open(rundir.metrics_path(self.run_dir, COORDINATOR), "a" if self.resumed else "w") as sink:
            for round_ in range(self.start_round, self.method.total_rounds + 1):
                if self.stop.is_set():
                    raise Stopped("coordinator stopped")
                started = time.perf_counter()
                participants = self.participants(round_)
                record: dict[str, Any] = {"round": round_, "participants": participants, "absent": []}
                self.invalid = set()
                for tag in self.method.phases(round_):
                    requests = self.method.request(tag, round_, participants)
                    replies = self.phase(round_, tag, requests)
                    record["absent"] = sorted(set(record["absent"]) | (set(requests) - set(replies)))
                    self.method.absorb(tag, round_, replies, record)
                if self.invalid:
                    record["invalid"] = sorted(self.invalid)
                record["seconds"] = time.perf_counter() - started
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                records.append(record)
                silent = sorted(set(record["absent"]) - self.invalid)  # the unusable ones were logged already
                if silent:
                    log.warning("round %s: clients %s did not answer in time; going on without them", round_, silent)
                every = self.config.checkpoint_every
                if every and (round_ + 1) % every == 0 and round_ < self.method.total_rounds:
                    self.save_checkpoint(round_)
        export_coordinator_models(self.config, self.dataset, self.run_dir, self.method.final_models(),
                                  self.method.final_clusters())
        return records


def unusable(reply: dict[str, torch.Tensor]) -> str | None:
    """Why a client's reply cannot enter the aggregation (None: it can). A diverged client (NaN or
    infinite losses or parameters) or one reporting no samples (n <= 0, a zero weight) is dropped for
    the round like a silent one; the exchange already drops non-finite messages, this guards the math."""
    for name, tensor in reply.items():
        if tensor.is_floating_point() and not all_finite(tensor):
            return f"non-finite {name}"
    if "n" in reply and not bool((reply["n"] > 0).all()):
        return f"n = {reply['n'].tolist()}, not a positive sample count"
    return None


class CoordinatorAhead(Exception):
    def __init__(self, round_: int):
        super().__init__(round_)
        self.round = round_


class ClientLoop:
    def __init__(self, config: RunConfig, agent_id: int, dataset: ArrayDataset, exchange: Exchange, run_dir: Path,
                 stop: threading.Event | None = None, options: FederatedOptions | None = None):
        self.config, self.agent_id, self.exchange, self.run_dir = config, agent_id, exchange, Path(run_dir)
        self.options = options if options is not None else federated_options(config)
        method = METHODS[config.algorithm]
        self.context: ClientContext = client_context(config, dataset, self.options, agent_id, method.local_data)
        self.method = method.client(self.context)
        self.stop = stop or threading.Event()

    def coordinator_round(self) -> int:
        return self.exchange.latest_round(COORDINATOR)

    def request(self, round_: int, tag: str, patience: float) -> dict | None:
        """The coordinator's request for (round, phase), or None to sit it out. `patience` is
        options.coordinator_timeout, longer than the coordinator's own wait for its slowest client
        (client_timeout): a client sitting out a phase where another is late must outlast that wait."""
        # A request, or an empty message (sit this phase out): anything else is dropped in the exchange.
        expected = {COORDINATOR: (self.method.request_spec(tag), {})}
        got = self.exchange.collect(round_, tag, [COORDINATOR], expect=expected, timeout=patience)
        if COORDINATOR not in got:
            if self.coordinator_round() > round_:  # a resumed coordinator went on at a later round
                raise CoordinatorAhead(self.coordinator_round())
            raise UserError(f"client {self.agent_id}: the coordinator was silent for {patience:.0f}s "
                            f"in round {round_}; it is gone or unreachable, this client stops")
        payload = got[COORDINATOR]
        if payload and spec_of(payload) != self.method.request_spec(tag):  # empty = sit this phase out
            raise UserError(f"client {self.agent_id}: malformed {tag} request from the coordinator")
        return payload or None

    def handshake(self) -> int:
        """Say hello to the coordinator and wait (up to network.startup_timeout) for its hello: the round
        to start at (0, or the current round when this client starts after the run began)."""
        timeout = self.config.network.startup_timeout
        heard = self.exchange.exchange(HELLO_ROUND, TAG_HELLO, {COORDINATOR: {"round": torch.tensor([0])}},
                                       timeout=timeout)
        if COORDINATOR not in heard:
            raise PeerUnreachable(f"client {self.agent_id}: the coordinator (agent 0 at "
                                  f"{self.config.address(COORDINATOR)}) did not answer within {timeout:.0f}s; start "
                                  "it or check the address and firewall")
        return max(0, int(heard[COORDINATOR]["round"][0]))

    def run(self) -> None:
        round_ = self.handshake()
        if round_:
            log.warning("client %s: the run is at round %s; joining there", self.agent_id, round_)
        # The first request may wait behind the coordinator's own handshake with clients slower to start.
        patience = self.options.coordinator_timeout + self.config.network.startup_timeout
        while round_ <= self.method.total_rounds:
            if self.stop.is_set():
                raise Stopped(f"client {self.agent_id} stopped")
            try:
                for tag in self.method.phases(round_):
                    payload = self.request(round_, tag, patience)
                    patience = self.options.coordinator_timeout
                    if payload:
                        request = {k: v.to(self.context.device) for k, v in payload.items()}
                        reply = {k: v.detach().cpu() for k, v in self.method.handle(tag, round_, request).items()}
                        self.exchange.send(round_, f"{tag}-reply", {COORDINATOR: reply})
                round_ += 1
            except CoordinatorAhead as ahead:
                log.warning("client %s: the coordinator is at round %s; skipping there from round %s", self.agent_id,
                            ahead.round, round_)
                round_ = ahead.round
        rundir.agent_dir(self.run_dir, self.agent_id).mkdir(parents=True, exist_ok=True)
        export_client_model(self.method.final_model(), self.run_dir, self.agent_id)  # only this client holds it


def federated_options(config: RunConfig) -> FederatedOptions:
    """The coordinator method's options, parsed from the config's plain mapping."""
    options = parse_algorithm_options(config.algorithm, config.options)
    assert isinstance(options, FederatedOptions), f"{config.algorithm} is not a coordinator method"
    return options


def describe_split(algorithm: str, options: FederatedOptions) -> str:
    """How a coordinator run's clients differ: tasks for the multi-task method, else the clusters."""
    return METHODS[algorithm].split(options)


def metric_name(config: RunConfig) -> str:
    """What the clients' "accuracy" reply measures: autoencoders report their reconstruction error."""
    return "reconstruction MSE" if config.model == "autoencoder" else "accuracy"


def summarize_federated(config: RunConfig, run_dir: Path) -> dict:
    rows = [json.loads(line) for line in rundir.metrics_path(run_dir, COORDINATOR).read_text().splitlines()]
    scored = [r for r in rows if "accuracy" in r]
    with_ari = [r for r in rows if "ari" in r]
    first_perfect = next((r["round"] for r in with_ari if r["ari"] >= 1.0 - 1e-9), None)
    options = federated_options(config)
    summary = {"name": config.name, "algorithm": config.algorithm, "clients": config.agents - 1,
               "rounds": config.rounds, "options": dataclasses.asdict(options),
               "metric": metric_name(config),
               "rounds_logged": [r["round"] for r in scored],
               "ari_per_round": [r.get("ari") for r in scored], "accuracy_per_round": [r["accuracy"] for r in scored],
               "final_accuracy": scored[-1]["accuracy"] if scored else None,
               "final_ari": with_ari[-1]["ari"] if with_ari else None, "first_round_with_ari_1": first_perfect,
               "round0_collapse_share": next((r["collapse_share"] for r in rows if "collapse_share" in r), None),
               "absent": sorted({c for r in rows for c in r.get("absent", [])}),
               "model_files": exported_files(run_dir, config.agents),
               "run_dir": str(run_dir)}
    for key in ("hopkins", "pretrain_loss", "personal_layers", "clusters"):
        values = [r[key] for r in rows if key in r]
        if values:
            summary[f"{key}_per_round"] = values
    for key in ("js_within", "js_across", "cos_within", "cos_across"):  # FedTSDP, at the round it clustered
        value = next((r[key] for r in rows if key in r), None)
        if value is not None:
            summary[key] = value
    if any("clusters_found" in r for r in scored):  # CLoVE with unknown_k, aligned with rounds_logged
        summary["clusters_found_per_round"] = [r.get("clusters_found") for r in scored]
        summary["final_clusters_found"] = scored[-1].get("clusters_found")
    if scored and "accuracy_by_task" in scored[-1]:
        summary["final_accuracy_by_task"] = scored[-1]["accuracy_by_task"]
    (Path(run_dir) / rundir.SUMMARY).write_text(json.dumps(summary, indent=2))
    return summary


def print_federated(summary: dict, options: FederatedOptions) -> None:
    from rich.console import Console
    from rich.table import Table

    models = f"{options.models} models, " if METHODS[summary["algorithm"]].model_count else ""
    what = models + describe_split(summary["algorithm"], options)
    table = Table(title=f"{summary['name']}: {summary['algorithm']}, {summary['clients']} clients, {what}")
    table.add_column("round")  # counted from 1, as the progress line and the plots
    table.add_column("ARI", justify="right")
    metric = summary["metric"]
    table.add_column(f"{metric} (each client, its model, its own test data)", justify="right")
    extra = {"hopkins_per_round": "Hopkins statistic", "pretrain_loss_per_round": "pre-training loss (NT-Xent)"}
    last = summary["rounds_logged"][-1] if summary["rounds_logged"] else None
    for round_, ari, value in zip(summary["rounds_logged"], summary["ari_per_round"], summary["accuracy_per_round"]):
        shown = f"{100 * value:.2f}%" if metric == "accuracy" else f"{value:.4f}"
        table.add_row("final" if round_ == last else str(round_ + 1), "-" if ari is None else f"{ari:.3f}", shown)
    Console(width=120).print(table)
    for key, label in extra.items():
        if key in summary:
            print(f"{label} per round: " + " ".join(f"{v:.3f}" for v in summary[key]))
    if "clusters_found_per_round" in summary:
        found = summary["clusters_found_per_round"]
        print(f"clusters found (models used of at most {options.models}): {summary['final_clusters_found']} at the end; "
              "per round: " + " ".join("-" if k is None else str(k) for k in found))
    if "final_accuracy_by_task" in summary:
        print("final accuracy by task: " + ", ".join(f"{t} {100 * a:.2f}%"
                                                     for t, a in summary["final_accuracy_by_task"].items()))
    if summary["absent"]:
        print(f"clients absent in some round: {summary['absent']}")
    files = summary.get("model_files", [])
    if files:  # state_dicts: README, "final models"
        shown = files if len(files) <= 4 else [*files[:2], f"... ({len(files)} files)", files[-1]]
        print(f"final models: {', '.join(shown)}")
    print(f"run folder: {summary['run_dir']}")
