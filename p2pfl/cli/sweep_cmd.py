"""`p2pfl sweep`: named cells and a grid of config values, times seeds, then mean ± std per cell and one
plot. `run_sweep` is the engine the benchmark scripts call too, so every README table comes from it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click

from p2pfl.cli.engine_options import simulate_options
from p2pfl.cli.config_cmd import set_option

if TYPE_CHECKING:  # the CLI imports its commands' machinery only when one runs
    from p2pfl.config import RunConfig
    from p2pfl.sweep import Metric
    from p2pfl.sweep_cells import Cell


def run_sweep(base: RunConfig, cells: list[Cell], seeds: list[int], out: Path, *, simulate: bool,
              in_process: bool = False, show_progress: bool = False, metrics: tuple[str, ...] = (),
              run_plots: bool = True,
              echo: Callable[[str], None] = click.echo) -> tuple[list[dict], list[dict], tuple[Metric, ...]]:
    """Run (or resume) every cell x seed into OUT, write results.md/.csv/.json and sweep.png; returns the
    runs (cell, seed, summary), the per-cell table (mean, std, diverged count) and its metric columns.
    run_plots=False: no topology.png, partition.png and curves.png per run (smoke tests)."""
    from p2pfl.cli.execute import execute_run
    from p2pfl.registry import ALGORITHMS
    from p2pfl.sweep import aggregate, metrics_of, run_grid, write_results

    def run_one(config: RunConfig, run_dir: Path) -> dict:
        return execute_run(config, run_dir, simulate=simulate, in_process=in_process, show_progress=show_progress,
                           print_table=False, run_plots=run_plots)

    rows = run_grid(base, cells, seeds, out, run_one, echo=echo)
    metric = "accuracy"
    if all(ALGORITHMS[r["summary"]["algorithm"]].centralized for r in rows):
        metric = rows[0]["summary"].get("metric", "accuracy")
    columns = metrics_of(rows, metric, metrics)
    table = aggregate(rows, columns)
    write_results(out, base, rows, table, columns)
    return rows, table, columns


@click.command("sweep")
@click.argument("config_path", type=click.Path(dir_okay=False))
@click.option("--grid", "grid_items", multiple=True, metavar="KEY=V1,V2",
              help="A config key and its values, e.g. --grid algorithm=dsgdm-n,qgm --grid topology=ring,torus "
                   "(repeatable: the grid is every combination).")
@click.option("--cell", "cell_items", multiple=True, metavar="'NAME: KEY=V, KEY=V'",
              help="A named variant setting several keys at once, e.g. --cell 'top-k 1%: algorithm=choco, "
                   "options={compressor: topk, ratio: 0.01}' (repeatable; times the --grid).")
@click.option("--cells", "cells_file", type=click.Path(dir_okay=False, exists=True),
              help="A YAML file of named cells: NAME: {key: value, ...}, one per row of the table.")
@click.option("--seeds", help="Seeds to repeat every cell with, e.g. 0,1,2 (default: the config's seed).")
@click.option("--metric", "metric_keys", multiple=True, metavar="KEY",
              help="Another summary.json number to report per cell, e.g. bytes_sent_per_agent_per_round "
                   "(repeatable).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Sweep folder (default: runs/sweep-NAME); run again with the same one to resume.")
@simulate_options
@click.option("--no-progress", is_flag=True)
@set_option
def sweep(config_path, grid_items, cell_items, cells_file, seeds, metric_keys, out, simulate, in_process, no_progress,
          sets):
    """Run CONFIG_PATH over named cells and a grid of config values, times seeds (skipping finished runs),
    then print and write mean ± std per cell (results.md/.csv/.json) and a comparison plot (sweep.png). A run
    stopped by the divergence guard counts in the diverged column, not in the means."""
    from p2pfl.config import load_config
    from p2pfl.overrides import apply_sets
    from p2pfl.sweep import parse_seeds, print_table, title
    from p2pfl.sweep_cells import cells_of, parse_cell, parse_grid, read_cells_file

    base = apply_sets(load_config(config_path), sets)
    named = (read_cells_file(cells_file) if cells_file else []) + [parse_cell(item) for item in cell_items]
    cells = cells_of(parse_grid(list(grid_items)), named)
    folder = Path(out) if out else Path("runs") / f"sweep-{base.name}"
    rows, table, columns = run_sweep(base, cells, parse_seeds(seeds, base.seed), folder, simulate=simulate,
                                     in_process=in_process, show_progress=not no_progress, metrics=tuple(metric_keys))
    print_table(table, columns, title(base, rows))
    click.echo(f"results: {folder / 'results.md'}, {folder / 'results.csv'}; plot: {folder / 'sweep.png'}")
