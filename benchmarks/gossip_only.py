"""Gossip alone, no training: N agents on a ring (or `--topology`) as threads of this one process (as a
packed worker hosts them), each round exchanging a LeNet-5-sized vector with its neighbours and mixing it in.
Prints the CPU each agent spends per round, over inproc:// (ZmqExchange sharing one ProcessLinks, as packed mates) and
over the in-memory exchange of `--in-process`, side by side: the runtime's own cost per round, which a
packed run adds to the compute floor; each with every thread free to run and with turns (p2pfl/turn.py: one
thread computes at a time), and over inproc also as greenlets of one thread (p2pfl/hub.py, `network.scheduler: greenlets`). Run it under `perf record -g` to see where that CPU goes.

    python benchmarks/gossip_only.py [--agents 8] [--rounds 1000] [--size 61706] [--topology ring]

By default each neighbour gets an outbox of its own, copied for each mate (as the first algorithms sent).
`--hand-over` instead measures what DSGD(m), QGM and CCL send now, over inproc as greenlets: one payload for
both neighbours, handed over copied and frozen (read in place, `exchange(..., frozen=True)`), alternating,
`--repeats` times each, with the ratio frozen / copied.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import threading
import time

import torch

from p2pfl.algorithms.base import gossip_average
from p2pfl.exchange import InMemoryHub
from p2pfl.hub import Hub
from p2pfl.topologies import build_topology
from p2pfl.transport import ProcessLinks, ZmqExchange
from p2pfl.turn import Turn


def run(kind: str, agents: int, rounds: int, size: int, turns: bool, greenlets: bool = False,
        shared: bool = False, frozen: bool = False, topology: str = "ring") -> float:
    """CPU seconds of this process per agent and round; `turns`: one agent thread runs at a time (turn.py);
    `greenlets`: the agents are greenlets of this thread instead (hub.py); `shared`: one payload for every
    neighbour, as the algorithms send it; `frozen`: handed to mates in place, not copied."""
    turn = Turn(1)
    links, hub = ProcessLinks("gossip-only", mates=range(agents)), InMemoryHub()
    graph = build_topology(topology, agents)
    neighbours = {i: sorted(graph[i]) for i in range(agents)}
    if kind == "inproc":  # every neighbour is a mate: no TCP address is ever used, so none is real
        ends = [ZmqExchange(i, f"inproc://gossip-only-unused-{i}", {j: "tcp://127.0.0.1:9" for j in neighbours[i]},
                            "gossip-only", 30.0, links=links) for i in range(agents)]
    else:
        ends = [hub.endpoint(i, neighbours[i], "gossip-only", 30.0) for i in range(agents)]

    def body(i: int) -> None:
        x = torch.randn(size)
        weights = {j: 1 / (len(neighbours[i]) + 1) for j in neighbours[i]}
        with turn.held() if turns and not greenlets else contextlib.nullcontext():
            for round_ in range(rounds):
                if shared:
                    payload = {"params": x}  # x is a fresh vector each round: the mixing writes a new one
                    got = ends[i].exchange(round_, "params", {j: payload for j in neighbours[i]}, frozen=frozen)
                else:
                    got = ends[i].exchange(round_, "params", {j: {"params": x} for j in neighbours[i]})
                x = gossip_average(x, {j: r["params"] for j, r in got.items()}, weights, 1 / (len(neighbours[i]) + 1))

    cpu = time.process_time()
    if greenlets:
        Hub().run([lambda i=i: body(i) for i in range(agents)])
    else:
        threads = [threading.Thread(target=body, args=(i,)) for i in range(agents)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    cpu = time.process_time() - cpu
    for end in ends:
        end.close()
    links.close()
    return cpu / (agents * rounds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--size", type=int, default=61706, help="floats per message (LeNet-5's parameters)")
    parser.add_argument("--topology", default="ring", help="ring, torus, ... (p2pfl's builders)")
    parser.add_argument("--hand-over", action="store_true",
                        help="one payload per round, copied against frozen, as greenlets over inproc")
    parser.add_argument("--repeats", type=int, default=3, help="with --hand-over: runs of each, alternating")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.hand_over:
        times: dict[str, list[float]] = {"copied": [], "frozen": []}
        for repeat in range(args.repeats):
            for how in ("copied", "frozen")[::1 if repeat % 2 == 0 else -1]:
                seconds = run("inproc", args.agents, args.rounds, args.size, False, True, shared=True,
                              frozen=how == "frozen", topology=args.topology)
                times[how].append(seconds)
                print(f"inproc greenlets one payload, {how}: {seconds * 1e3:.3f} ms CPU per agent and round",
                      flush=True)
        copied, frozen = (statistics.median(times[how]) for how in ("copied", "frozen"))
        print(f"frozen / copied (medians of {args.repeats}): {frozen / copied:.2f}")
        return
    for kind, turns, greenlets in (("inproc", False, False), ("inproc", True, False), ("inproc", False, True),
                                   ("in-memory", False, False), ("in-memory", True, False)):
        seconds = run(kind, args.agents, args.rounds, args.size, turns, greenlets, topology=args.topology)
        how = "greenlets" if greenlets else "turns" if turns else "free-for-all"
        print(f"{kind:9s} {how:12s} {args.agents} agents, {args.rounds} rounds: "
              f"{seconds * 1e3:.3f} ms CPU per agent and round", flush=True)


if __name__ == "__main__":
    main()
