"""`tensorboard: true`: the per-round metrics of a run folder as TensorBoard scalars (tensorboardX).

While a run goes, the launcher's progress watcher writes each round once every agent has reported it
(`LiveScalars`), so TensorBoard follows a run in progress. When the run is summarized (the end of `run`,
`spawn`, `slurm`, `sweep`, or `p2pfl report`) the events are written again from the metrics files alone,
replacing the live ones: every way of running ends with the same events, consensus curve included.
Steps are rounds counted from 1, as on the terminal and in the plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from p2pfl.config import RunConfig
from p2pfl.errors import UserError

FOLDER = "tensorboard"


def require_tensorboard(config: RunConfig) -> None:
    """Fail before any agent starts, not after the run, when the events cannot be written."""
    if not config.tensorboard:
        return
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise UserError("tensorboard: true needs tensorboardX: pip install 'p2pfl[tensorboard]' (or pip install "
                        "tensorboardX), or set tensorboard: false") from None


def clear_events(folder: Path) -> None:
    for old in folder.glob("events.out.tfevents.*"):  # ours: a re-summarized run must not show twice
        old.unlink()


class LiveScalars:
    """Scalars of a run in progress, flushed every few seconds; opened on the first point."""

    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / FOLDER
        self.writer = None

    def add(self, tag: str, step: int, value: float | None) -> None:
        if value is None:
            return
        if self.writer is None:
            from tensorboardX import SummaryWriter

            self.folder.mkdir(parents=True, exist_ok=True)
            clear_events(self.folder)  # a resumed run starts its live file afresh; the summary rewrites all
            self.writer = SummaryWriter(logdir=str(self.folder), flush_secs=2)
        self.writer.add_scalar(tag, float(value), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def write_scalars(run_dir: Path, series: dict[str, Iterable[tuple[int, float]]]) -> Path:
    """Each tag's (round from 1, value) points into RUN/tensorboard/, replacing events of an earlier summary."""
    from tensorboardX import SummaryWriter

    folder = Path(run_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    clear_events(folder)
    writer = SummaryWriter(logdir=str(folder))
    try:
        for tag, points in series.items():
            for step, value in points:
                if value is not None:
                    writer.add_scalar(tag, float(value), step)
    finally:
        writer.close()
    return folder


def write_run_events(config: RunConfig, run_dir: Path, summary: dict) -> Path:
    """The events of a summarized run folder (`summary`: what summarize_run just wrote)."""
    import json

    from p2pfl.agents import rundir
    from p2pfl.registry import ALGORITHMS

    if ALGORITHMS[config.algorithm].centralized:
        path = rundir.metrics_path(run_dir, 0)
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return write_scalars(run_dir, coordinator_series(rows, summary["metric"]))
    from p2pfl.report import read_metrics

    return write_scalars(run_dir, gossip_series(read_metrics(run_dir, config.agents), summary))


def gossip_series(metrics: list[list[dict]], summary: dict) -> dict[str, list]:
    """Mean training loss over the agents every round; the local models' mean test accuracy and loss, and the
    consensus model's accuracy and loss, on the evaluation rounds."""
    from p2pfl.report import mean_curve

    def curve(key: str) -> list[tuple[int, float]]:
        rounds, values = mean_curve(metrics, key)
        return [(r + 1, v) for r, v in zip(rounds, values)]

    return {"train/loss_mean": curve("loss"), "test/local_accuracy_mean": curve("test_accuracy"),
            "test/local_loss_mean": curve("test_loss"),
            "test/consensus_accuracy": [(r + 1, a) for r, a in summary["consensus_accuracy_curve"]],
            "test/consensus_loss": [(r + 1, loss) for r, loss in summary.get("consensus_loss_curve", [])]}


def coordinator_series(rows: list[dict], metric: str) -> dict[str, list]:
    """The coordinator's records: the clients' mean test metric, ARI and what else the method logs."""
    tags = {"accuracy": f"test/{metric.replace(' ', '_')}_mean", "ari": "clustering/ari",
            "clusters_found": "clustering/clusters_found", "clusters": "clustering/clusters",
            "collapse_share": "clustering/collapse_share", "pretrain_loss": "train/pretrain_loss",
            "hopkins": "fedtsdp/hopkins", "personal_layers": "fedtsdp/personal_layers"}
    series = {tag: [(r["round"] + 1, r[key]) for r in rows if key in r] for key, tag in tags.items()}
    for name in sorted({t for r in rows for t in r.get("accuracy_by_task", {})}):
        series[f"test/accuracy_{name}"] = [(r["round"] + 1, r["accuracy_by_task"][name]) for r in rows
                                           if name in r.get("accuracy_by_task", {})]
    return {tag: points for tag, points in series.items() if points}
