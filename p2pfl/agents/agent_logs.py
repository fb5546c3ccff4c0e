"""Each agent's log lines in its own file, also when several agents run as threads of one process.

Logging is process-wide (one `p2pfl` logger), so an agent that owns its process simply points that logger
at its file. A packed worker installs one `AgentRoutedLogs` handler instead: a record goes to the file of
the agent whose thread (or greenlet, hub.py) wrote it, and a line from any other (the worker itself) to the
fallback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import greenlet

LOGGER = "p2pfl"


def agent_handler(path: Path | None, agent_id: int) -> logging.Handler:
    handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s agent {agent_id} %(levelname)s %(name)s: %(message)s"))
    return handler


def configure_logging(path: Path | None, agent_id: int) -> None:
    """One agent per process: the whole `p2pfl` logger writes to this agent's file (or stderr)."""
    root = logging.getLogger(LOGGER)
    root.handlers[:] = [agent_handler(path, agent_id)]
    root.setLevel(logging.INFO)


class AgentRoutedLogs(logging.Handler):
    """The `p2pfl` logger's one handler in a packed worker: routes each record by the agent that made it, a
    thread of its own or a greenlet of the worker's hub (a thread outside greenlets is its own main greenlet,
    so one key serves both). Records are handled in the thread and greenlet that logged them."""

    def __init__(self, fallback: logging.Handler):
        super().__init__()
        self.fallback = fallback
        self.by_task: dict[int, logging.Handler] = {}

    def install(self) -> "AgentRoutedLogs":
        root = logging.getLogger(LOGGER)
        root.handlers[:] = [self]
        root.setLevel(logging.INFO)
        return self

    def attach(self, path: Path, agent_id: int) -> None:
        """From now on, what the calling agent logs goes to `path` (the agent's agent.log)."""
        self.by_task[id(greenlet.getcurrent())] = agent_handler(path, agent_id)

    def detach(self) -> None:
        handler = self.by_task.pop(id(greenlet.getcurrent()), None)
        if handler is not None:
            handler.close()

    def emit(self, record: logging.LogRecord) -> None:
        self.by_task.get(id(greenlet.getcurrent()), self.fallback).handle(record)
