"""Runtime overhead, measured side by side in one run on this machine.

(a) seconds per round of a 16-agent ZeroMQ run (DSGDm-N on a ring) against the same 16 agent
    processes doing the same local steps with no communication (algorithm `local`);
(b) throughput of the exchange (encode, send, receive, validate, decode) against raw pyzmq
    multipart frames of the same sizes, both between two processes over loopback TCP.

    python benchmarks/runtime_overhead.py [--agents 16] [--rounds 300] [--model mlp]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import torch
import zmq

from p2pfl.agents.launcher import launch_local
from p2pfl.agents.setup import prepare
from p2pfl.config import load_config, save_config
from p2pfl.report import summarize
from p2pfl.transport import ZmqExchange

ROOT = Path(__file__).resolve().parents[1]


def run_seconds_per_round(algorithm: str, agents: int, rounds: int, model: str, base_port: int) -> dict:
    config = load_config(ROOT / "examples" / "ring16.yaml")
    config.agents, config.rounds, config.algorithm, config.model = agents, rounds, algorithm, model
    config.eval_every, config.network.base_port, config.name = 0, base_port, f"bench-{algorithm}"
    setup = prepare(config)
    config.run_id = setup.run_id
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        save_config(config, run_dir / "config.yaml")
        launch_local(config, run_dir / "config.yaml", run_dir, show_progress=False)
        summary = summarize(config, setup.dataset, run_dir, "processes")
    # Skip nothing: the mean over all rounds of every agent, as the run table reports it.
    return summary


def raw_side(me: int, size: int, rounds: int, port: int, barrier, results) -> None:
    """One endpoint of the raw baseline: a DEALER to the peer, a ROUTER inbox, bare frames."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(f"tcp://127.0.0.1:{port + me}")
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.IDENTITY, str(me).encode())
    dealer.connect(f"tcp://127.0.0.1:{port + 1 - me}")
    payload = torch.ones(size // 4).numpy()
    for timed in (False, True):  # the first pass warms up the connections
        barrier.wait()
        started = time.perf_counter()
        for _ in range(rounds):
            dealer.send_multipart([b"header", payload], copy=False)
            router.recv_multipart(copy=False)
        if timed:
            results.put((me, time.perf_counter() - started))
    barrier.wait()
    router.close(linger=0)
    dealer.close(linger=1000)
    context.term()


def exchange_side(me: int, size: int, rounds: int, port: int, barrier, results) -> None:
    """One endpoint of p2pfl's exchange: encode, send, receive, validate, decode."""
    torch.set_num_threads(1)
    addresses = {0: f"tcp://127.0.0.1:{port}", 1: f"tcp://127.0.0.1:{port + 1}"}
    end = ZmqExchange(me, addresses[me], {1 - me: addresses[1 - me]}, "bench", 30.0)
    payload = {"params": torch.ones(size // 4)}
    for offset in (0, rounds):
        barrier.wait()
        started = time.perf_counter()
        for r in range(rounds):
            assert 1 - me in end.exchange(offset + r, "params", {1 - me: payload})
        if offset:
            results.put((me, time.perf_counter() - started))
    barrier.wait()
    end.close()


def seconds_per_round(side, size: int, rounds: int, port: int) -> float:
    """Two endpoint processes exchanging symmetric rounds; the slower side's seconds per round."""
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=side, args=(me, size, rounds, port, barrier, results)) for me in range(2)]
    for process in processes:
        process.start()
    elapsed = [results.get(timeout=600)[1] for _ in processes]
    for process in processes:
        process.join(60)
    return max(elapsed) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--base-port", type=int, default=29300)
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"(a) {args.agents} agent processes, ring, {args.rounds} rounds, model {args.model}")
    gossip = run_seconds_per_round("dsgdm-n", args.agents, args.rounds, args.model, args.base_port)
    local = run_seconds_per_round("local", args.agents, args.rounds, args.model, args.base_port)
    print(f"    gossip (DSGDm-N over ZeroMQ): {gossip['seconds_per_round'] * 1e3:8.2f} ms/round, "
          f"{gossip['bytes_sent_per_agent_per_round']:,.0f} bytes sent per agent per round")
    print(f"    same local steps, no comms : {local['seconds_per_round'] * 1e3:8.2f} ms/round")
    print(f"    ratio gossip / local       : {gossip['seconds_per_round'] / local['seconds_per_round']:8.2f}x")

    print("(b) symmetric rounds between two processes over loopback TCP (each side sends and receives)")
    results = {}
    for size, rounds in ((64 * 1024, 2000), (1 << 20, 400), (16 << 20, 30)):
        raw = seconds_per_round(raw_side, size, rounds, args.base_port + 100)
        ours = seconds_per_round(exchange_side, size, rounds, args.base_port + 110)
        results[size] = (raw, ours)
        gbps = lambda seconds: 2 * size / seconds / 1e9  # noqa: E731  (both directions)
        print(f"    {size / 2**20:7.3f} MiB: raw pyzmq {gbps(raw):6.2f} GB/s, exchange {gbps(ours):6.2f} GB/s, "
              f"exchange/raw throughput {raw / ours:5.2f}")
    print(json.dumps({"gossip_ms": gossip["seconds_per_round"] * 1e3, "local_ms": local["seconds_per_round"] * 1e3,
                      "throughput_ratio": {str(k): v[0] / v[1] for k, v in results.items()}}))


if __name__ == "__main__":
    main()
