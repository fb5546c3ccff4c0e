"""One run from a resolved config into a run folder: shared by `p2pfl run` and `p2pfl sweep`."""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click

from p2pfl.config import RunConfig
from p2pfl.errors import Diverged
from p2pfl.tensorboard_events import require_tensorboard

if TYPE_CHECKING:
    from p2pfl.agents.setup import RunSetup


def run_header(config: RunConfig, mode: str, run_dir: Path) -> str:
    from p2pfl.registry import ALGORITHMS, parse_algorithm_options

    if ALGORITHMS[config.algorithm].centralized:
        from p2pfl.agents.federated import describe_split

        split = describe_split(config.algorithm, parse_algorithm_options(config.algorithm, config.options))
    else:
        split = "iid" if config.data.partition == "iid" else f"{config.data.partition} alpha={config.data.alpha}"
    if mode in ("processes", "simulate"):
        from p2pfl.agents.packing import agents_per_process

        per = agents_per_process(config)
        mode = f"{mode}, {per} agents per process" if per > 1 else mode
    return (f"{config.name}: {config.agents} agents ({mode}), {config.algorithm} on {config.topology.kind}, "
            f"{config.data.name} {split}, {config.rounds} rounds -> {run_dir}")


def cluster_colors(config: RunConfig) -> dict[int, int] | None:
    """Coordinator methods: the coordinator in grey, each true cluster (or task) of clients in its colour."""
    from p2pfl.partition_report import true_groups

    groups = true_groups(config)
    return None if groups is None else {0: 7, **groups}  # 7: grey in tab10


def execute_run(config: RunConfig, run_dir: Path, *, simulate: bool, in_process: bool = False,
                show_progress: bool = True, print_table: bool = True, run_plots: bool = True) -> dict:
    """Validate, write config and topology, run every agent, summarize; returns the summary (a diverged
    run is summarized too, with status "diverged"; agents_died lists agents that died mid-run).
    `simulate`: packed worker processes over inproc:// and private Unix sockets, no ports and no keys
    (unix_links.py); `in_process` (implies simulate): every agent a thread of this process over the in-memory
    exchange.
    run_plots=False skips topology.png, partition.png and curves.png (a benchmark's smoke test: most of its time)."""
    from p2pfl.agents.setup import prepare

    require_tensorboard(config)  # before the run, not after it
    simulate = simulate or in_process
    if not in_process:
        from p2pfl.agents.forkserver import warm_forkserver

        warm_forkserver()  # imports torch for the agents while this process prepares the run
    setup = prepare(config)
    config.run_id = setup.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    if not simulate:  # security.mode auto: the run's own keys, so its links are encrypted and closed to others
        from p2pfl.security import secure_local_run

        secure_local_run(config, run_dir)
    from p2pfl.agents.unix_links import unix_socket_links

    with unix_socket_links(config) if simulate and not in_process else nullcontext():
        return run_and_summarize(config, setup, run_dir, simulate=simulate, in_process=in_process,
                                 show_progress=show_progress, print_table=print_table, run_plots=run_plots)


def run_and_summarize(config: RunConfig, setup: RunSetup, run_dir: Path, *, simulate: bool, in_process: bool,
                      show_progress: bool, print_table: bool, run_plots: bool) -> dict:
    """execute_run once the config is final (addresses, keys): saved for the agents, run, summarized."""
    from p2pfl.agents import rundir
    from p2pfl.config import save_config

    config_file = run_dir / rundir.CONFIG
    save_config(config, config_file)
    mode = ("simulate, in-process" if in_process else "simulate") if simulate else "processes"
    draw_plots = write_preamble(setup, run_dir, mode)
    if not run_plots:
        draw_plots = lambda: None  # noqa: E731 - the preamble is written either way, only the drawing is skipped
    died: list[int] = []
    try:
        if in_process:
            from p2pfl.agents.progress import RunProgress, watching
            from p2pfl.agents.simulate import run_simulation

            draw_plots()
            with watching(RunProgress(config, run_dir, enabled=show_progress)):
                run_simulation(setup, run_dir)
        else:
            from p2pfl.agents.launcher import launch_local
            from p2pfl.shared_slots import remove_folder

            # Drawn beside the start: matplotlib's import (~1 s of a slow core) falls in the launcher's wait for the
            # forkserver's imports instead of following it, beside the agents' start-up or the end of a short run.
            plots_drawn = draw_in_background(draw_plots, "the topology and partition plots")
            try:
                died = launch_local(config, config_file, run_dir, show_progress=show_progress)
            finally:
                remove_folder(config.run_id)  # slot files of agents that were killed before removing theirs
                plots_drawn()
            if died:
                click.secho(f"warning: agent(s) {', '.join(map(str, died))} died mid-run; results are over the "
                            "others", fg="yellow", err=True)
    except Diverged:
        pass  # every agent was stopped; the summary below records where and why

    from p2pfl.run_summary import summarize_run

    summary = summarize_run(config, run_dir, mode, setup.dataset, print_table=print_table, plot=run_plots)
    return {**summary, "agents_died": died}


def draw_in_background(work: Callable[[], None], what: str) -> Callable[[], None]:
    """Start `work` on a thread; returns its join, which warns of an error instead of raising it: a plot that
    cannot be drawn costs the plot, not the run's results."""
    errors: list[Exception] = []

    def body() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - reported at the join
            errors.append(exc)

    thread = threading.Thread(target=body, name="p2pfl-plots", daemon=True)
    thread.start()

    def join() -> None:
        thread.join()
        if errors:
            click.secho(f"warning: {what} were not drawn: {type(errors[0]).__name__}: {errors[0]}", fg="yellow",
                        err=True)

    return join


def write_preamble(setup, run_dir: Path, mode: str) -> Callable[[], None]:
    """Before the agents start: the header line and the partition per agent. Returns the drawing of the
    topology and partition plots (matplotlib: a second or more), which the launcher runs beside the start."""
    from p2pfl.agents import rundir
    from p2pfl.partition_report import describe, draw_partition, write_partition
    from p2pfl.topologies.draw import draw_topology

    config = setup.config
    click.echo(run_header(config, mode, run_dir))
    partition = write_partition(config, setup.dataset, run_dir)
    click.echo(describe(partition))

    def draw_plots() -> None:
        colors = cluster_colors(config)
        draw_topology(setup.graph, run_dir / rundir.TOPOLOGY_PLOT, config.topology.kind, colors=colors,
                      note="colour: true cluster of each client, coordinator 0 in grey" if colors else "")
        draw_partition(config, partition, setup.dataset.name, run_dir)

    return draw_plots
