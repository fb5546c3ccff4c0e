"""TensorBoard scalars of a run in progress (`tensorboard: true`), written by the launcher's progress watcher.

Here, beside the watcher, rather than in `p2pfl.tensorboard_events` (the end-of-run events, which read run
folders through the report): the agents layer must not import upward.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = "tensorboard"


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
