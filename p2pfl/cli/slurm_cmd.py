"""`p2pfl slurm`: a run as one Slurm batch job, one task per agent; `p2pfl slurm-addresses`, its first step.

The run folder must lie on a file system that the login node and the compute nodes share (home or
scratch on a cluster): the job writes its agents' folders there and this command summarizes them.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click

from p2pfl.cli.config_cmd import set_option


@click.command()
@click.argument("config_path", type=click.Path(dir_okay=False))
@click.option("--nodes", type=int, required=True, help="Nodes of the allocation.")
@click.option("--tasks-per-node", type=int, required=True, help="Agents per node (nodes x this = the config's agents).")
@click.option("--partition", help="Slurm partition (default: the cluster's default).")
@click.option("--time", "time_limit", help="Slurm time limit, e.g. 30 (minutes), 2:00:00 or 1-00:00:00.")
@click.option("--python", default=sys.executable, show_default="this interpreter",
              help="Interpreter with p2pfl installed, as the compute nodes see it.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Run folder on a file system the compute nodes share (default: a new folder under runs/).")
@click.option("--dry-run", is_flag=True, help="Print the sbatch script and the submission command; submit nothing.")
@set_option
def slurm(config_path, nodes, tasks_per_node, partition, time_limit, python, out, dry_run, sets):
    """Submit every agent of CONFIG_PATH as one Slurm job, show its progress, summarize the run folder."""
    from p2pfl.agents.setup import prepare
    from p2pfl.agents.slurm_script import SCRIPT, TEMPLATE, Allocation, batch_script, check_allocation
    from p2pfl.config import load_config, save_config
    from p2pfl.overrides import apply_sets
    from p2pfl.tensorboard_events import require_tensorboard

    config = apply_sets(load_config(config_path), sets)
    require_tensorboard(config)  # the events are written here at the end: fail before the job is queued
    allocation = Allocation(nodes, tasks_per_node, partition, time_limit)
    check_allocation(config, allocation)
    config.network.addresses = None  # the job writes them once it knows its nodes
    setup = prepare(config)  # every check that can run before the job is queued
    config.run_id = setup.run_id  # fixed now: the addresses written in the job must not change it
    run_dir = Path(out) if out else Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    script = batch_script(config, allocation, run_dir, python)
    submission = shlex.join(["sbatch", "--parsable", str(run_dir.resolve() / SCRIPT)])
    if dry_run:
        click.echo(script + f"# submitted with:\n{submission}")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    from p2pfl.security import secure_local_run

    secure_local_run(config, run_dir)  # security.mode auto: the run's keys on the file system the nodes share
    save_config(config, run_dir / TEMPLATE)
    (run_dir / SCRIPT).write_text(script)
    from p2pfl.cli.execute import write_preamble

    write_preamble(setup, run_dir, "slurm")()
    run_job(config, run_dir)


def run_job(config, run_dir: Path) -> None:
    """Submit the written script, follow the job, summarize; exit non-zero unless every agent finished."""
    from p2pfl.agents import rundir
    from p2pfl.agents.progress import RunProgress, watching
    from p2pfl.agents.slurm_job import submit, wait_for
    from p2pfl.agents.slurm_script import JOB_OUTPUT, SCRIPT
    from p2pfl.run_summary import summarize_run
    from p2pfl.cli.main import exit_unless_all_finished
    from p2pfl.config import load_config

    job = submit(run_dir.resolve() / SCRIPT)
    output = run_dir / JOB_OUTPUT.replace("%j", job)
    click.echo(f"submitted job {job}; agents' output: {output}")
    with watching(RunProgress(config, run_dir)) as progress:
        state, code = wait_for(job, progress.note)
    click.echo(f"job {job}: {state.lower()}, exit code {code}")
    if not (run_dir / rundir.CONFIG).exists():
        from p2pfl.errors import UserError

        raise UserError(f"job {job} ended ({state}) before it wrote {run_dir / rundir.CONFIG}; see {output}")
    resolved = load_config(run_dir / rundir.CONFIG)  # with the allocation's addresses
    summary = summarize_run(resolved, run_dir, "slurm")
    exit_unless_all_finished(run_dir, summary.get("agents_not_finished", []))


@click.command("slurm-addresses", hidden=True)
@click.argument("template", type=click.Path(dir_okay=False, exists=True))
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--tasks-per-node", type=int, required=True)
def slurm_addresses(template, target, tasks_per_node):
    """Inside the job: node names on stdin (`scontrol show hostnames`) -> TARGET, the config with addresses."""
    from p2pfl.agents.slurm_script import write_addresses

    hostnames = [line.strip() for line in sys.stdin if line.strip()]
    config = write_addresses(Path(template), hostnames, tasks_per_node, Path(target))
    click.echo(f"{config.agents} agents on {', '.join(hostnames)}: {config.network.addresses[0]} ...")
