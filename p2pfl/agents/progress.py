"""Progress of a running run, read from the agents' metrics files (works for processes and threads)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from p2pfl.agents import rundir
from p2pfl.config import RunConfig


class RunProgress:
    """A bar at the slowest agent's round; plain lines every 10% when stdout is not a terminal."""

    def __init__(self, config: RunConfig, run_dir: Path, enabled: bool = True):
        self.config, self.run_dir, self.enabled = config, Path(run_dir), enabled
        self.offsets = [0] * config.agents
        self.rounds = [0] * config.agents
        self.last_loss: dict[int, float] = {}
        self.tty = sys.stdout.isatty()
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(), transient=False)
        self.task = None
        self.printed_decile = -1

    def __enter__(self) -> "RunProgress":
        if self.enabled and self.tty:
            self.progress.start()
            self.task = self.progress.add_task(f"{self.config.name}: rounds", total=self.config.rounds, status="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.progress.stop()

    def note(self, message: str) -> None:
        """A line above the bar (or a plain line without a terminal)."""
        if self.task is not None:
            self.progress.console.print(message)
        else:
            print(message, file=sys.stderr, flush=True)

    def poll(self) -> None:
        for agent in range(self.config.agents):
            path = rundir.metrics_path(self.run_dir, agent)
            if not path.exists():
                continue
            with open(path, "rb") as handle:
                handle.seek(self.offsets[agent])
                chunk = handle.read()
            complete = chunk[:chunk.rfind(b"\n") + 1]
            self.offsets[agent] += len(complete)
            lines = complete.splitlines()
            self.rounds[agent] += len(lines)
            if lines:
                self.last_loss[agent] = json.loads(lines[-1]).get("loss", float("nan"))

    def update(self) -> None:
        if not self.enabled:
            return
        self.poll()
        done = min(self.rounds)
        loss = sum(self.last_loss.values()) / len(self.last_loss) if self.last_loss else float("nan")
        status = f"loss {loss:.3f}"
        if self.task is not None:
            self.progress.update(self.task, completed=done, status=status)
            return
        decile = done * 10 // self.config.rounds
        if decile > self.printed_decile:
            self.printed_decile = decile
            print(f"{self.config.name}: round {done}/{self.config.rounds}, mean loss {loss:.3f}", flush=True)
