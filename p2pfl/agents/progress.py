"""Progress of a running run, read from the agents' metrics files (works for processes and threads)."""

from __future__ import annotations

import json
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from p2pfl.agents import rundir
from p2pfl.agents.live_tensorboard import LiveScalars, coordinator_series
from p2pfl.config import RunConfig


class RunProgress:
    """A bar at the slowest agent's round; plain lines every 10% when stdout is not a terminal.

    Rounds are counted as completed rounds, 1..N (a metrics row's `round` r is shown as r + 1);
    the status names the mean training loss and the latest test accuracy of the evaluated rounds.
    With `tensorboard: true` and every agent watched, each round goes to TensorBoard once all agents
    reported it (shown or not: `--no-progress` runs are followed too).
    """

    def __init__(self, config: RunConfig, run_dir: Path, enabled: bool = True, agents: list[int] | None = None):
        from p2pfl.registry import ALGORITHMS

        self.config, self.run_dir, self.enabled = config, Path(run_dir), enabled
        self.centralized = ALGORITHMS[config.algorithm].centralized
        # A coordinator method's rounds are the coordinator's rows (clients keep no metrics of their own).
        self.watched = agents if agents is not None else [0] if self.centralized else list(range(config.agents))
        self.accuracy: dict[int, dict[int, float]] = {}  # round -> {agent: test accuracy} on the evaluation rounds
        self.first_round_at: tuple[float, int] | None = None  # (time, rounds done) when the first round was done
        self.consensus: dict[int, float | None] = {}  # round -> consensus model's test accuracy
        self.model = None  # built on the first consensus evaluation
        self.test = None
        # Training rounds, counted from 1; a coordinator's last row is the final evaluation, not a round.
        self.total = coordinator_rows(config) - 1 if self.centralized else config.rounds
        self.offsets = [0] * config.agents
        self.rounds = [0] * config.agents
        self.last_loss: dict[int, float] = {}
        self.last_row: dict = {}
        self.tty = sys.stdout.isatty()
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), transient=False)
        self.task = None
        self.printed: tuple[int, bool] = (-1, False)
        whole_run = self.watched == [0] if self.centralized else len(self.watched) == config.agents
        self.live = LiveScalars(run_dir) if config.tensorboard and whole_run else None
        self.losses: dict[int, dict[int, float]] = {}  # round -> {agent: training loss}, until all reported
        self.test_losses: dict[int, dict[int, float]] = {}

    def __enter__(self) -> "RunProgress":
        if self.enabled and self.tty:
            self.progress.start()
            self.task = self.progress.add_task(f"{self.config.name}: rounds", total=self.total, status="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.progress.stop()
        if self.live is not None:
            self.live.close()

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
            for line in lines:
                row = json.loads(line)
                if "test_accuracy" in row:
                    self.accuracy.setdefault(row["round"], {})[agent] = row["test_accuracy"]
                if self.live is not None:
                    self.record(agent, row)
            if lines:
                self.last_row = json.loads(lines[-1])
                if "loss" in self.last_row:
                    self.last_loss[agent] = self.last_row["loss"]

    def record(self, agent: int, row: dict) -> None:
        """One metrics row to TensorBoard: a coordinator's at once, a gossip round once all agents have it."""
        assert self.live is not None
        if self.centralized:
            from p2pfl.agents.federated import metric_name

            for tag, points in coordinator_series([row], metric_name(self.config)).items():
                self.live.add(tag, *points[0])
            return
        step = row["round"] + 1
        for key, tag, pending in (("loss", "train/loss_mean", self.losses),
                                  ("test_loss", "test/local_loss_mean", self.test_losses)):
            if key in row:
                reported = pending.setdefault(row["round"], {})
                reported[agent] = row[key]
                if len(reported) == len(self.watched):
                    self.live.add(tag, step, sum(reported.values()) / len(reported))
                    del pending[row["round"]]
        scores = self.accuracy.get(row["round"], {})
        if "test_accuracy" in row and len(scores) == len(self.watched):
            self.live.add("test/local_accuracy_mean", step, sum(scores.values()) / len(scores))
            self.live.add("test/consensus_accuracy", step, self.consensus_accuracy(row["round"]))

    def status(self) -> str:
        if self.centralized:
            row = self.last_row
            if not row:
                return "starting the coordinator and clients"
            from p2pfl.agents.federated import metric_name

            metric = metric_name(self.config)
            parts = [f"ARI {row['ari']:.2f}" if "ari" in row else "",
                     f"{row['clusters_found']} clusters found" if "clusters_found" in row else "",
                     f"{metric} {row['accuracy']:.3f}"
                     if "accuracy" in row else "", f"pre-training loss {row['pretrain_loss']:.3f}"
                     if "pretrain_loss" in row else ""]
            return ", ".join(p for p in parts if p)
        if not self.last_loss:
            return "starting agents, waiting for every neighbour" if not any(self.rounds) else ""
        parts = [f"loss {sum(self.last_loss.values()) / len(self.last_loss):.3f}"]
        complete = [r for r, scores in self.accuracy.items() if len(scores) == len(self.watched)]
        if complete:  # the latest evaluation round every agent has reported
            latest = max(complete)
            scores = list(self.accuracy[latest].values())
            consensus = self.consensus_accuracy(latest)
            parts.append(f"test acc {sum(scores) / len(scores):.3f} local mean"
                         + (f", {consensus:.3f} consensus" if consensus is not None else "")
                         + f" (after round {latest + 1})")
        return ", ".join(parts)

    def consensus_accuracy(self, round_: int) -> float | None:
        """Test accuracy of the average of the agents' parameters saved at `round_` (all agents watched only).

        An agent writes its parameters before its metrics row, so a reported round's files are complete.
        Intermediate rounds use config.eval_samples test samples, as the agents do. Never fails the run.
        """
        if self.centralized or not self.config.consensus_curve or len(self.watched) != self.config.agents:
            return None
        if round_ not in self.consensus:
            try:
                self.consensus[round_] = self.evaluate_consensus(round_)
            except Exception:  # a progress line must never stop a run
                self.consensus[round_] = None
        return self.consensus[round_]

    def evaluate_consensus(self, round_: int) -> float:
        import numpy as np
        import torch

        from p2pfl.models.initial import initial_model
        from p2pfl.models.evaluation import evaluate
        from p2pfl.agents.setup import dataset_of
        from p2pfl.algorithms.base import set_flat_params

        if self.model is None:
            dataset = dataset_of(self.config)
            self.model = initial_model(self.config, dataset)
            self.test = (torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test))
        x, y = self.test
        samples = self.config.eval_samples
        if samples and round_ != self.config.rounds - 1 and samples < len(y):  # the agents' fixed subset
            subset = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:samples]
            x, y = x[subset], y[subset]
        average = np.mean([np.load(rundir.params_path(self.run_dir, a, round_)) for a in self.watched], axis=0)
        set_flat_params(self.model, torch.from_numpy(average))
        return evaluate(self.model, x, y)[0]

    def eta(self, done: int) -> str:
        """From the pace since the first round (start-up and the handshake excluded)."""
        if done >= 1 and self.first_round_at is None:
            self.first_round_at = (time.monotonic(), done)
        if self.first_round_at is None or done <= self.first_round_at[1] or done >= self.total:
            return ""
        since, at = self.first_round_at
        seconds = (time.monotonic() - since) / (done - at) * (self.total - done)
        return f", ETA {int(seconds // 60)}:{int(seconds % 60):02d}"

    def update(self) -> None:
        if not self.enabled:
            if self.live is not None:
                self.poll()
            return
        self.poll()
        rows = min(self.rounds[a] for a in self.watched)
        done = min(rows, self.total)
        final = self.centralized and rows > self.total
        status = ("final evaluation: " if final else "") + self.status()
        eta = self.eta(done)
        if self.task is not None:
            self.progress.update(self.task, completed=done, status=status)
            return
        key = (done * 10 // self.total, final)
        if key > self.printed:
            self.printed = key
            print(f"{self.config.name}: round {done}/{self.total}, {status}{eta}", flush=True)


@contextmanager
def watching(progress: RunProgress, interval: float = 0.3) -> Iterator[RunProgress]:
    """Update `progress` from a background thread while the body runs (agents in this process)."""
    done = threading.Event()

    def loop() -> None:
        with progress:
            while not done.wait(interval):
                progress.update()
            progress.update()

    watcher = threading.Thread(target=loop, daemon=True, name="progress")
    watcher.start()
    try:
        yield progress
    finally:
        done.set()
        watcher.join()


def coordinator_rows(config: RunConfig) -> int:
    """Rows the coordinator of a centralized method writes: its training rounds and the final evaluation."""
    from p2pfl.registry import METHODS, parse_algorithm_options

    options = parse_algorithm_options(config.algorithm, config.options)
    return config.rounds + METHODS[config.algorithm].coordinator.rounds_before(options) + 1
