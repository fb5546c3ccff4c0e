"""`--simulate`: all agents as threads of one process over the in-memory exchange.

The agent loop, the algorithm, the wire encoding and the validation are the ones the processes
run; only the way frames move differs, so the per-round losses match a multi-process run.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from p2pfl.agents.agent import Stopped
from p2pfl.agents.roles import build_loop
from p2pfl.agents.setup import RunSetup
from p2pfl.exchange import InMemoryHub


def run_simulation(setup: RunSetup, run_dir: Path) -> None:
    torch.set_num_threads(1)
    config = setup.config
    hub = InMemoryHub()
    stop = threading.Event()
    errors: dict[int, BaseException] = {}
    loops = []
    for agent in range(config.agents):
        exchange = hub.endpoint(agent, setup.graph[agent], setup.run_id, config.network.round_timeout,
                                max_message_bytes=int(config.network.max_message_mb * 2**20),
                                round_window=setup.round_window, stopping=stop)
        loops.append((agent, build_loop(setup, agent, exchange, run_dir, stop=stop)))

    def body(agent: int, loop) -> None:
        try:
            loop.run()
        except BaseException as exc:  # recorded and re-raised in the caller's thread
            errors[agent] = exc
            stop.set()  # the others' waits see it within STOP_POLL_SECONDS

    threads = [threading.Thread(target=body, args=(agent, loop), name=f"agent-{agent}", daemon=True)
               for agent, loop in loops]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join(timeout=config.network.round_timeout + 5)
        raise
    real = {a: e for a, e in errors.items() if not isinstance(e, Stopped)}
    if real:
        raise next(iter(real.values()))
