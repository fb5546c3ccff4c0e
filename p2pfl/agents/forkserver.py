"""The forkserver that local agents are forked from, started as early as possible.

Its imports (torch and the agent code, seconds on 2 cores) then overlap the launcher's own work
(reading the config, preparing the data, the partition report) instead of following it. This module
imports nothing heavy, so the launcher can call it before importing torch itself.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.forkserver

# Imported once in the forkserver, inherited by every agent: a guard that ends the forkserver with the
# launcher, then torch and the agent's code (one agent per process, or packed in a worker), and the compiled
# loops of the mixing and the models' max pooling (p2pfl/agents/warm_kernels.py).
PRELOAD = ["p2pfl.agents.forkserver_guard", "p2pfl.agents.process", "p2pfl.agents.packing",
           "p2pfl.agents.warm_kernels"]


def forkserver_context() -> mp.context.ForkServerContext:
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def warm_forkserver() -> None:
    """Start the forkserver now (it imports PRELOAD in the background); launching agents later reuses it."""
    forkserver_context()
    multiprocessing.forkserver.ensure_running()
