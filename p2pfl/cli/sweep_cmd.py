"""`p2pfl sweep`: a grid of runs over config keys and seeds, then mean ± std per cell and one plot."""

from __future__ import annotations

from pathlib import Path

import click

from p2pfl.cli.config_cmd import set_option


@click.command("sweep")
@click.argument("config_path", type=click.Path(dir_okay=False))
@click.option("--grid", "grid_items", multiple=True, metavar="KEY=V1,V2",
              help="A config key and its values, e.g. --grid algorithm=dsgdm-n,qgm --grid topology=ring,torus "
                   "(repeatable: the grid is every combination).")
@click.option("--seeds", help="Seeds to repeat every cell with, e.g. 0,1,2 (default: the config's seed).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Sweep folder (default: runs/sweep-NAME); run again with the same one to resume.")
@click.option("--simulate", is_flag=True, help="Each run in this process over the in-memory exchange.")
@click.option("--no-progress", is_flag=True)
@set_option
def sweep(config_path, grid_items, seeds, out, simulate, no_progress, sets):
    """Run CONFIG_PATH over a grid of config values and seeds (skipping finished runs), then print and write
    mean ± std per cell (results.md/.csv/.json) and a comparison plot (sweep.png)."""
    from p2pfl.registry import ALGORITHMS
    from p2pfl.cli.execute import execute_run
    from p2pfl.config import load_config
    from p2pfl.overrides import apply_sets
    from p2pfl.sweep import aggregate, parse_grid, parse_seeds, print_table, run_grid, title, write_results

    base = apply_sets(load_config(config_path), sets)
    grid = parse_grid(list(grid_items))
    folder = Path(out) if out else Path("runs") / f"sweep-{base.name}"

    def run_one(config, run_dir):
        return execute_run(config, run_dir, simulate=simulate, show_progress=not no_progress, print_table=False)

    rows = run_grid(base, grid, parse_seeds(seeds, base.seed), folder, run_one, echo=click.echo)
    table = aggregate(rows)
    metric = "accuracy"
    if all(ALGORITHMS[r["summary"]["algorithm"]].centralized for r in rows):
        metric = rows[0]["summary"].get("metric", "accuracy")
    write_results(folder, base, rows, table, metric)
    print_table(table, rows, metric, title(base, rows))
    click.echo(f"results: {folder / 'results.md'}, {folder / 'results.csv'}; plot: {folder / 'sweep.png'}")
