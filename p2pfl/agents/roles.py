"""Which loop an agent runs: a gossip agent, or the coordinator / a client of a centralized method."""

from __future__ import annotations

import threading
from pathlib import Path

from p2pfl.agents.agent import AgentLoop
from p2pfl.agents.federated import COORDINATOR, ClientLoop, CoordinatorLoop
from p2pfl.agents.setup import RunSetup
from p2pfl.registry import ALGORITHMS
from p2pfl.exchange import Exchange


def build_loop(setup: RunSetup, agent_id: int, exchange: Exchange, run_dir: Path,
               stop: threading.Event | None = None, resume: bool = False):
    config = setup.config
    if not ALGORITHMS[config.algorithm].centralized:
        return AgentLoop(config, agent_id, setup.graph, setup.dataset, exchange, run_dir, stop=stop, resume=resume,
                         sequence=setup.sequence, options=setup.options)
    if agent_id == COORDINATOR:
        return CoordinatorLoop(config, setup.dataset, exchange, run_dir, stop=stop, resume=resume,
                               options=setup.options)
    return ClientLoop(config, agent_id, setup.dataset, exchange, run_dir, stop=stop, options=setup.options)
