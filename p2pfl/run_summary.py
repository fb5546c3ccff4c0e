"""The one end-of-run summary of a run folder, whichever the algorithm: `run`, `report` and `spawn` all
come here, so a coordinator method is summarized the same way by each (summary.json, curves.png, table)."""

from __future__ import annotations

from pathlib import Path

from p2pfl.config import RunConfig
from p2pfl.data.dataset import ArrayDataset
from p2pfl.errors import UserError
from p2pfl.tensorboard_events import require_tensorboard, write_run_events


def summarize_run(config: RunConfig, run_dir: Path, mode: str, dataset: ArrayDataset | None = None,
                  print_table: bool = True, plot: bool = True) -> dict:
    """Write summary.json and curves.png of `run_dir` and print its table; `mode` says how the agents ran
    (simulate, processes, spawn, report); `dataset` saves loading it again when the caller has it. With
    `tensorboard: true` the per-round metrics go to RUN/tensorboard/ as well; plot=False: no curves.png."""
    run_dir = Path(run_dir)
    require_tensorboard(config)  # `report` on a folder of a run with tensorboard: true, without tensorboardX
    summary = summarize_folder(config, run_dir, mode, dataset, print_table, plot)
    if config.tensorboard:
        events = write_run_events(config, run_dir, summary)
        if print_table:
            print(f"TensorBoard events: {events} (tensorboard --logdir {events})")
    return summary


def summarize_folder(config: RunConfig, run_dir: Path, mode: str, dataset: ArrayDataset | None,
                     print_table: bool, plot: bool = True) -> dict:
    from p2pfl.agents import rundir
    from p2pfl.registry import ALGORITHMS

    if ALGORITHMS[config.algorithm].centralized:
        from p2pfl.agents.federated import COORDINATOR, federated_options, print_federated, summarize_federated
        from p2pfl.federated_plots import federated_title, plot_federated

        if not rundir.metrics_path(run_dir, COORDINATOR).exists():
            raise UserError(f"no coordinator metrics under {run_dir}; collect agent 0's folder (agents/000) into it")
        summary = summarize_federated(config, run_dir)
        if plot:
            plot_federated(summary, run_dir / rundir.PLOT, federated_title(config, summary))
        if print_table:
            print_federated(summary, federated_options(config))
        return summary
    from p2pfl.agents.setup import dataset_of
    from p2pfl.report import print_summary, summarize

    summary = summarize(config, dataset if dataset is not None else dataset_of(config), run_dir, mode, plot=plot)
    if print_table:
        print_summary(summary)
    return summary
