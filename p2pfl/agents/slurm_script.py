"""The sbatch script of `p2pfl slurm`: one Slurm task per agent, addresses known only inside the job.

The nodes of an allocation are known only once the job starts, so the script first expands
`$SLURM_JOB_NODELIST` and writes the run's config with every agent's address (`p2pfl slurm-addresses`),
then `srun` starts the agents. Tasks are placed in blocks (`--distribution=block`): task p runs on node
p // K as local task p % K, and binds tcp://<that node>:<base port + p % K>.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from p2pfl.agents import rundir
from p2pfl.config import RunConfig, load_config, save_config
from p2pfl.errors import UserError

TEMPLATE = "config.template.yaml"  # the run config without addresses, as submitted
SCRIPT = "job.sbatch"
JOB_OUTPUT = "slurm-%j.out"  # %j: Slurm's job id


@dataclass
class Allocation:
    """What the job asks Slurm for."""

    nodes: int
    tasks_per_node: int
    partition: str | None = None
    time: str | None = None  # Slurm's time format, e.g. 30, 1:00:00 or 1-00:00:00


def check_allocation(config: RunConfig, allocation: Allocation) -> None:
    if allocation.nodes < 1 or allocation.tasks_per_node < 1:
        raise UserError(f"--nodes and --tasks-per-node must be >= 1, got {allocation.nodes} and "
                        f"{allocation.tasks_per_node}")
    tasks = allocation.nodes * allocation.tasks_per_node
    if tasks != config.agents:
        raise UserError(f"--nodes {allocation.nodes} x --tasks-per-node {allocation.tasks_per_node} = {tasks} tasks "
                        f"but the config has {config.agents} agents (one task per agent); change them or --set "
                        f"agents={tasks}")


def allocation_addresses(hostnames: list[str], tasks_per_node: int, base_port: int) -> list[str]:
    """Agent p's address on a block-distributed allocation: its node, base port + its local id."""
    if not hostnames:
        raise UserError("no node names on standard input; the job script pipes `scontrol show hostnames` here")
    return [f"tcp://{host}:{base_port + local}" for host in hostnames for local in range(tasks_per_node)]


def write_addresses(template: Path, hostnames: list[str], tasks_per_node: int, target: Path) -> RunConfig:
    """The run's config with the allocation's addresses, written whole before any agent reads it."""
    config = load_config(template)
    addresses = allocation_addresses(hostnames, tasks_per_node, config.network.base_port)
    if len(addresses) != config.agents:
        raise UserError(f"the allocation has {len(hostnames)} node(s) x {tasks_per_node} tasks = {len(addresses)} "
                        f"but the config has {config.agents} agents")
    config.network.addresses = addresses
    partial = target.with_name(target.name + ".partial")
    save_config(config, partial)
    partial.replace(target)  # atomic: an agent never reads half a file
    return config


def batch_script(config: RunConfig, allocation: Allocation, run_dir: Path, python: str) -> str:
    """The sbatch script: directives, the addresses step, one srun task per agent."""
    run = Path(run_dir).resolve()
    q = shlex.quote
    directives = [f"--job-name=p2pfl-{config.name}", f"--nodes={allocation.nodes}",
                  f"--ntasks-per-node={allocation.tasks_per_node}", f"--ntasks={config.agents}",
                  f"--chdir={run}", f"--output={run / JOB_OUTPUT}"]
    if allocation.partition:
        directives.append(f"--partition={allocation.partition}")
    if allocation.time:
        directives.append(f"--time={allocation.time}")
    agent = (f"exec {q(python)} -m p2pfl.cli agent --config {q(str(run / rundir.CONFIG))} "
             '--id "$SLURM_PROCID" ' f"--out {q(str(run))}")
    lines = ["#!/bin/bash", f"# {config.agents} p2pfl agents of run {config.name!r}, one Slurm task each "
             "(written by `p2pfl slurm`)", *(f"#SBATCH {d}" for d in directives), "set -euo pipefail",
             "export OMP_NUM_THREADS=1",
             "# Agent p binds tcp://<its node>:<base port + its local id>; the nodes are known only now.",
             f'scontrol show hostnames "$SLURM_JOB_NODELIST" | {q(python)} -m p2pfl.cli slurm-addresses '
             f"{q(str(run / TEMPLATE))} {q(str(run / rundir.CONFIG))} --tasks-per-node {allocation.tasks_per_node}",
             f"srun --distribution=block --label bash -c {q(agent)}"]
    return "\n".join(lines) + "\n"
