"""`tensorboard: true`: the per-round metrics of a run folder as TensorBoard scalars (tensorboardX).

While a run goes, the launcher's progress watcher writes each round once every agent has reported it
(`p2pfl.agents.live_tensorboard`), so TensorBoard follows a run in progress. When the run is summarized (the end of `run`,
`spawn`, `slurm`, `sweep`, or `p2pfl report`) the events are written again from the metrics files alone,
replacing the live ones: every way of running ends with the same events, consensus curve included.
Steps are rounds counted from 1, as on the terminal and in the plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from p2pfl.agents.live_tensorboard import FOLDER, clear_events, coordinator_series
from p2pfl.config import RunConfig
from p2pfl.errors import UserError



def require_tensorboard(config: RunConfig) -> None:
    """Fail before any agent starts, not after the run, when the events cannot be written."""
    if not config.tensorboard:
        return
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise UserError("tensorboard: true needs tensorboardX: pip install 'p2pfl[tensorboard]' (or pip install "
                        "tensorboardX), or set tensorboard: false") from None


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
