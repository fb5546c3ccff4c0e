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
        from p2pfl.algorithms import ALGORITHMS

        self.config, self.run_dir, self.enabled = config, Path(run_dir), enabled
        self.centralized = ALGORITHMS[config.algorithm].centralized
        # A coordinator method's rounds are the coordinator's rows (clients keep no metrics of their own).
        self.watched = [0] if self.centralized else list(range(config.agents))
        self.total = coordinator_rows(config) if self.centralized else config.rounds
        self.offsets = [0] * config.agents
        self.rounds = [0] * config.agents
        self.last_loss: dict[int, float] = {}
        self.last_row: dict = {}
        self.tty = sys.stdout.isatty()
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(), transient=False)
        self.task = None
        self.printed_decile = -1

    def __enter__(self) -> "RunProgress":
        if self.enabled and self.tty:
            self.progress.start()
            self.task = self.progress.add_task(f"{self.config.name}: rounds", total=self.total, status="")
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
        for agent in self.watched:
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
                self.last_row = json.loads(lines[-1])
                self.last_loss[agent] = self.last_row.get("loss", float("nan"))

    def status(self) -> str:
        if self.centralized:
            row = self.last_row
            from p2pfl.agents.federated import metric_name

            metric = metric_name(self.config)
            parts = [f"ARI {row['ari']:.2f}" if "ari" in row else "", f"{metric} {row['accuracy']:.3f}"
                     if "accuracy" in row else "", f"pre-training loss {row['pretrain_loss']:.3f}"
                     if "pretrain_loss" in row else ""]
            return ", ".join(p for p in parts if p)
        loss = sum(self.last_loss.values()) / len(self.last_loss) if self.last_loss else float("nan")
        return f"mean loss {loss:.3f}"

    def update(self) -> None:
        if not self.enabled:
            return
        self.poll()
        done = min(self.rounds[a] for a in self.watched)
        status = self.status()
        if self.task is not None:
            self.progress.update(self.task, completed=done, status=status)
            return
        decile = done * 10 // self.total
        if decile > self.printed_decile:
            self.printed_decile = decile
            print(f"{self.config.name}: round {done}/{self.total}, {status}", flush=True)


def coordinator_rows(config: RunConfig) -> int:
    """Rows the coordinator of a centralized method writes: its training rounds and the final evaluation."""
    from p2pfl.agents.methods.clustered import pretrain_rounds
    from p2pfl.algorithms.federated import check_federated_options

    return config.rounds + pretrain_rounds(config, check_federated_options(config.options, config.algorithm)) + 1
