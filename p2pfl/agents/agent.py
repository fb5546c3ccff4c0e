"""The decentralized agent loop: local step + gossip per round, metrics per round, same code
whether the exchange is in-memory (`--simulate`) or ZeroMQ (one OS process per agent)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import networkx as nx
import numpy as np
import torch

from p2pfl import turn
from p2pfl.agents import rundir
from p2pfl.agents.device_exchange import DeviceExchange
from p2pfl.validation import check_device_present
from p2pfl.agents.handshake import hello_all, hello_until_answered
from p2pfl.registry import build_algorithm, parse_algorithm_options
from p2pfl.algorithms.base import AgentContext, flat_params, set_flat_params
from p2pfl.algorithms.options import Options
from p2pfl.config import RunConfig
from p2pfl.constants import TAG_BYE
from p2pfl.data import BatchStream, agent_shard
from p2pfl.data.order import ReferenceShuffler
from p2pfl.data.dataset import ArrayDataset
from p2pfl.agents.divergence import check_divergence
from p2pfl.errors import Diverged, PeerUnreachable, UserError
from p2pfl.exchange import Exchange
from p2pfl.models import build_model
from p2pfl.models.evaluation import evaluate
from p2pfl.models.initial import initial_model
from p2pfl.topologies.dynamic import TopologySequence
from p2pfl.topologies.mixing import SELF_WEIGHT
from p2pfl.seeds import stream_seed

log = logging.getLogger("p2pfl.agent")


class Stopped(Exception):
    """The run was asked to stop (Ctrl-C, a failed sibling in --simulate)."""


def reference_rng_state(config: RunConfig, dataset: ArrayDataset, agent_id: int) -> torch.Tensor:
    """The global RNG of the CCL authors' trainer once its model is built: seeded, then consumed by the
    model's initialisation and, on rank 0 only, by torchsummary's random probe input (batch of 2)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        build_model(config.model, dataset.input_shape, dataset.num_classes, config.model_args)
        if agent_id == 0:
            torch.rand(2, *dataset.input_shape)
        return torch.get_rng_state()


def batch_stream(config: RunConfig, dataset: ArrayDataset, agent_id: int, shard) -> BatchStream:
    shuffler = None
    if config.data.order == "reference":
        shuffler = ReferenceShuffler(reference_rng_state(config, dataset, agent_id))
    return BatchStream(shard, config.optim.batch_size, seed=stream_seed(config.seed, "batches", agent_id),
                       drop_last=config.data.drop_last, shuffler=shuffler)


def counter_delta(before: dict, after: dict) -> dict:
    return {key: value - before.get(key, 0) for key, value in after.items() if value != before.get(key, 0)}


def evaluation_due(config: RunConfig, round_: int) -> bool:
    last = round_ == config.rounds - 1
    return last or (config.eval_every > 0 and (round_ + 1) % config.eval_every == 0)


class AgentLoop:
    def __init__(self, config: RunConfig, agent_id: int, graph: nx.Graph, dataset: ArrayDataset,
                 exchange: Exchange, run_dir: Path, stop: threading.Event | None = None, resume: bool = False,
                 sequence: TopologySequence | None = None, options: Options | None = None):
        """`graph`: the links (every peer ever met); `sequence`: the round's graph when it changes per round;
        `options`: the algorithm's, as validation parsed them (parsed here from config.options if not given)."""
        self.config, self.agent_id, self.exchange = config, agent_id, exchange
        self.sequence = sequence
        self.links = sorted(graph[agent_id])
        self.run_dir = Path(run_dir)
        self.stop = stop or threading.Event()
        check_device_present(config.device)
        self.device = torch.device(config.device)
        if self.device.type != "cpu":  # neighbours' tensors arrive on the host; mix them where the model is
            self.exchange = exchange = DeviceExchange(exchange, self.device)
        self.shard = agent_shard(dataset, agent_id, config.agents, config.data.partition, config.data.alpha,
                                 config.seed)
        if len(self.shard) == 0:
            raise UserError(f"agent {agent_id} got no training samples; use fewer agents or more data")
        self.shard.x, self.shard.y = self.shard.x.to(self.device), self.shard.y.to(self.device)
        self.stream = batch_stream(config, dataset, agent_id, self.shard)
        self.model = initial_model(config, dataset).to(self.device)
        weights = {j: float(graph[agent_id][j]["weight"]) for j in sorted(graph[agent_id])}
        self.ctx = AgentContext(agent_id, weights, float(graph.nodes[agent_id][SELF_WEIGHT]), self.model, exchange,
                                config.optim, config.rounds, config.agents, dataset.num_classes)
        self.use_round_graph(0)
        if options is None:
            options = parse_algorithm_options(config.algorithm, config.options)
        self.algorithm = build_algorithm(config.algorithm, self.ctx, options)
        self.start_round = 0
        self.resumed = resume and self.load_checkpoint()

    def use_round_graph(self, round_: int) -> None:
        """A dynamic topology: this round's peers and weights for the algorithm (a fixed one keeps its own)."""
        if self.sequence is not None:
            self.ctx.use_round(self.sequence.mixing(self.agent_id, round_))

    def handshake(self) -> None:
        """Wait until every neighbour is up, so round 0 does not time out on slow starters."""
        peers = self.links
        started = time.perf_counter()
        hello = {"round": torch.tensor([self.start_round])}
        timeout = self.config.network.startup_timeout
        if self.resumed:
            heard = hello_until_answered(self.exchange, hello, peers, timeout)
        else:
            heard = hello_all(self.exchange, hello, peers, timeout)
        missing = sorted(set(peers) - set(heard))
        if self.resumed and heard:
            # Rejoin where the running neighbours are; the rounds in between are lost for this agent.
            self.start_round = max(self.start_round, *(int(h["round"][0]) for h in heard.values()))
            log.info("agent %s: resumed, rejoining at round %s", self.agent_id, self.start_round)
        elif missing:
            where = ", ".join(f"{j} at {self.config.address(j)}" for j in missing)
            raise PeerUnreachable(f"agent {self.agent_id}: neighbour(s) {where} did not answer within "
                                  f"{self.config.network.startup_timeout:.0f}s; start them (p2pfl agent --id N) or "
                                  "check the addresses and firewall")
        log.info("agent %s: all %s neighbours up after %.1fs", self.agent_id, len(peers),
                 time.perf_counter() - started)

    def save_checkpoint(self, round_: int) -> None:
        """Model, algorithm state (momentum, QGM buffer, CCL pending correction), data order, RNG; atomic."""
        path = rundir.checkpoint_path(self.run_dir, self.agent_id)
        state = {"round": round_, "params": flat_params(self.model).cpu(), "algorithm": self.algorithm.state_dict(),
                 "stream": self.stream.state(), "torch_rng": torch.get_rng_state()}
        torch.save(state, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)

    def load_checkpoint(self) -> bool:
        path = rundir.checkpoint_path(self.run_dir, self.agent_id)
        if not path.exists():
            log.warning("agent %s: no checkpoint at %s, starting from round 0", self.agent_id, path)
            return False
        state = torch.load(path, weights_only=True)  # tensors and plain containers only: no code in a checkpoint
        set_flat_params(self.model, state["params"].to(self.device))
        self.algorithm.load_state_dict(state["algorithm"])
        self.stream.load_state(state["stream"])
        torch.set_rng_state(state["torch_rng"])
        self.start_round = state["round"] + 1
        log.info("agent %s: loaded checkpoint of round %s", self.agent_id, state["round"])
        return True

    def evaluate(self, round_: int) -> tuple[float, float]:
        """Intermediate rounds may use a fixed test subset (config.eval_samples); the last uses the whole set."""
        x, y = self.shard.x_test, self.shard.y_test
        if self.config.eval_samples and round_ != self.config.rounds - 1 and self.config.eval_samples < len(y):
            subset = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:self.config.eval_samples]
            x, y = x[subset], y[subset]
        return evaluate(self.model, x, y, pause=turn.breathe)

    def run(self) -> dict:
        directory = rundir.agent_dir(self.run_dir, self.agent_id)
        directory.mkdir(parents=True, exist_ok=True)
        self.handshake()
        stats = self.exchange.stats
        last = None
        with open(rundir.metrics_path(self.run_dir, self.agent_id), "a" if self.resumed else "w") as sink:
            for round_ in range(self.start_round, self.config.rounds):
                if self.stop.is_set():
                    raise Stopped(f"agent {self.agent_id} stopped at round {round_}")
                before = stats.snapshot()
                started = time.perf_counter()
                turn.pass_on()  # packed mates that wait go first; the time it takes is this round's too
                x, y = self.stream.next()
                self.use_round_graph(round_)
                out = self.algorithm.step(round_, x, y)
                seconds = time.perf_counter() - started
                params = flat_params(self.model)
                after = stats.snapshot()
                comm = after["comm_seconds"] - before["comm_seconds"]
                wait = after["wait_seconds"] - before["wait_seconds"]
                record = {"round": round_, "agent": self.agent_id, **out, "epoch": self.stream.epoch,
                          "bytes_sent": after["bytes_sent"] - before["bytes_sent"],
                          "bytes_received": after["bytes_received"] - before["bytes_received"],
                          "bytes_by_tag": counter_delta(before["sent_by_tag"], after["sent_by_tag"]),
                          "bytes_by_tensor": counter_delta(before["sent_by_tensor"], after["sent_by_tensor"]),
                          "seconds": seconds, "compute_seconds": seconds - comm, "comm_seconds": comm - wait,
                          "wait_seconds": wait, "dropped": after["dropped"] - before["dropped"]}
                try:
                    check_divergence(self.agent_id, round_, out, params, self.config.max_loss)
                except Diverged as exc:
                    sink.write(json.dumps({**record, "diverged": str(exc)}) + "\n")
                    raise
                if evaluation_due(self.config, round_):
                    # Beside the turn, not in it: a packed agent's mates go on with their rounds meanwhile rather than
                    # wait a whole test-set pass (LeNet-5 on Fashion-MNIST: about a second) for their next turn.
                    with turn.waiting():
                        record["test_accuracy"], record["test_loss"] = self.evaluate(round_)
                        if self.config.consensus_curve or round_ == self.config.rounds - 1:
                            np.save(rundir.params_path(self.run_dir, self.agent_id, round_), params.cpu().numpy())
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                last = record
                if self.config.checkpoint_every and (round_ + 1) % self.config.checkpoint_every == 0:
                    self.save_checkpoint(round_)
        # Let neighbours collect our last round before we close: a short, best-effort barrier.
        self.exchange.exchange(self.config.rounds, TAG_BYE, {j: {} for j in self.links},
                               timeout=min(5.0, self.config.network.round_timeout))
        return last or {}
