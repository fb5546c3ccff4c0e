"""`--simulate --in-process`: all agents as threads of one process over the in-memory exchange.

The agent loop, the algorithm, the wire encoding and the validation are the ones the processes
run; only the way frames move differs, so the per-round losses match a multi-process run.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from p2pfl.agents.agent import Stopped
from p2pfl.agents.allocator import keep_freed_memory
from p2pfl.agents.roles import build_loop
from p2pfl.agents.setup import RunSetup
from p2pfl.exchange import InMemoryHub
from p2pfl.turn import Turn


IN_PROCESS_SLOTS = 2


def run_simulation(setup: RunSetup, run_dir: Path) -> None:
    torch.set_num_threads(1)
    keep_freed_memory()
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

    # Two agents compute at once (torch runs outside the GIL for most of a step), the rest wait for a turn. At 8
    # agents of LeNet-5 on 2 cores: 0.028 s/round, against 0.039 with one slot (a switch tried once, since removed)
    # and 0.044 with every thread free (benchmarks/scale.py's `sim` row at commit 5b106d6, before turns).
    turn = Turn(min(IN_PROCESS_SLOTS, os.cpu_count() or 1))

    def body(agent: int, loop) -> None:
        try:
            with turn.held():
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
