"""Each agent's log lines in its own file, also when several agents run as threads of one process.

Logging is process-wide (one `p2pfl` logger), so an agent that owns its process simply points that logger
at its file. A packed worker installs one `ThreadRoutedLogs` handler instead: a record goes to the file of
the agent whose thread wrote it, and a line from any other thread (the worker itself) to the fallback.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

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


class ThreadRoutedLogs(logging.Handler):
    """The `p2pfl` logger's one handler in a packed worker: routes each record by the thread that made it."""

    def __init__(self, fallback: logging.Handler):
        super().__init__()
        self.fallback = fallback
        self.by_thread: dict[int, logging.Handler] = {}

    def install(self) -> "ThreadRoutedLogs":
        root = logging.getLogger(LOGGER)
        root.handlers[:] = [self]
        root.setLevel(logging.INFO)
        return self

    def attach(self, path: Path, agent_id: int) -> None:
        """From now on, what the calling thread logs goes to `path` (the agent's agent.log)."""
        self.by_thread[threading.get_ident()] = agent_handler(path, agent_id)

    def detach(self) -> None:
        handler = self.by_thread.pop(threading.get_ident(), None)
        if handler is not None:
            handler.close()

    def emit(self, record: logging.LogRecord) -> None:
        self.by_thread.get(record.thread, self.fallback).handle(record)
