"""The `p2pfl` command line: run, agent, topology, report."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from p2pfl.cli.engine_options import simulate_options
from p2pfl.cli.config_cmd import config_group, set_option
from p2pfl.cli.slurm_cmd import slurm, slurm_addresses
from p2pfl.cli.sweep_cmd import sweep
from p2pfl.errors import Diverged, UserError


class P2PGroup(click.Group):
    """User errors print as one line with the fix and exit non-zero; no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:  # Ctrl-C, or errors.Interrupted: SIGINT / SIGTERM to the launcher
            click.secho(f"{exc or 'interrupted'}: every agent was stopped", fg="yellow", err=True)
            sys.exit(getattr(exc, "exit_code", 130))


@click.group(cls=P2PGroup)
@click.version_option(package_name="p2pfl")
def cli() -> None:
    """Decentralized peer-to-peer learning: agents gossip over ZeroMQ, no central server."""


def apply_overrides(config, **overrides):
    simple = {"agents": "agents", "rounds": "rounds", "seed": "seed", "algorithm": "algorithm", "model": "model",
              "device": "device", "eval_every": "eval_every", "name": "name"}
    for key, attr in simple.items():
        if overrides.get(key) is not None:
            setattr(config, attr, overrides[key])
    if overrides.get("topology") is not None:
        config.topology.kind = overrides["topology"]
    if overrides.get("topology_file") is not None:
        config.topology.kind, config.topology.path = "file", overrides["topology_file"]
    if overrides.get("alpha") is not None:
        config.data.alpha = overrides["alpha"]
    if overrides.get("partition") is not None:
        config.data.partition = overrides["partition"]
    if overrides.get("dataset") is not None:
        config.data.name = overrides["dataset"]
    if overrides.get("data_path") is not None:
        config.data.path = overrides["data_path"]
    if overrides.get("lr") is not None:
        config.optim.lr = overrides["lr"]
    if overrides.get("base_port") is not None:
        config.network.base_port = overrides["base_port"]
    return config


# `p2pfl run` exits 0 only when every agent finished, 1 when some did not (crashed or killed: the results
# printed are over the others); otherwise a UserError's code (2 bad input, 3 a neighbour unreachable at
# start), or 130 / 143 when interrupted by SIGINT / SIGTERM (every agent stopped).
EXIT_AGENTS_FAILED = 1


def exit_unless_all_finished(run_dir: Path, died: list[int]) -> None:
    """After the summary: gossip runs count agents by their metrics (one restarted by hand that finished
    counts), coordinator runs by the exit codes the launcher saw."""
    import json

    from p2pfl.agents import rundir

    summary = json.loads((run_dir / rundir.SUMMARY).read_text())
    unfinished = summary.get("agents_not_finished", died)
    if unfinished:
        click.secho(f"error: agent(s) {', '.join(map(str, unfinished))} did not finish; the results above are over "
                    f"the others (logs: {rundir.agent_dir(run_dir, unfinished[0]).parent}/NNN/agent.log)",
                    fg="red", err=True)
        sys.exit(EXIT_AGENTS_FAILED)


@cli.command()
@click.argument("config_path", type=click.Path(dir_okay=False), required=False)
@click.option("--agents", type=int, help="Number of agents.")
@click.option("--topology", help="ring, torus, circulant, exponential, complete, star, random-regular, erdos-renyi; "
              "per round: one-peer-exponential, random-matching, peer-sampling.")
@click.option("--topology-file", type=click.Path(), help="Edge list or GraphML file.")
@click.option("--rounds", type=int, help="Gossip rounds (one local step each).")
@click.option("--seed", type=int)
@click.option("--algorithm", help="dpsgd, dsgdm, dsgdm-n, qgm, ccl, local.")
@click.option("--model", help="mlp, cnn, lenet5, resnet20, or package.module:Class (args: --set model_args.K=V).")
@click.option("--dataset", help="digits, fashion-mnist, cifar10, npz, torchvision, or package.module:function.")
@click.option("--data-path", help="Folder or file of the dataset; an npz holds x_train (N x C x H x W, N x H x W or "
                                  "N x D), y_train (N,) labels 0..K-1, x_test, y_test.")
@click.option("--alpha", type=float, help="Dirichlet concentration of the non-IID split.")
@click.option("--partition", type=click.Choice(["iid", "dirichlet", "lin"]))
@click.option("--lr", type=float)
@click.option("--eval-every", type=int)
@click.option("--base-port", type=int, help="Agent i binds base_port + i on network.host.")
@click.option("--device", help="torch device, e.g. cpu or cuda:0.")
@click.option("--name", help="Run name (folder prefix).")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (default: a new folder under runs/).")
@simulate_options
@click.option("--no-progress", is_flag=True)
@set_option
def run(config_path, out, simulate, in_process, no_progress, sets, **overrides):
    """Run every agent of CONFIG_PATH on this machine (one OS process each) and print the results."""
    if not in_process:
        from p2pfl.agents.forkserver import warm_forkserver

        warm_forkserver()  # first: the agents' imports overlap this process's own
    from p2pfl.cli.execute import execute_run
    from p2pfl.config import load_config
    from p2pfl.overrides import apply_sets

    config = apply_sets(apply_overrides(load_config(config_path), **overrides), sets)
    run_dir = Path(out) if out else Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = execute_run(config, run_dir, simulate=simulate, in_process=in_process, show_progress=not no_progress)
    if summary.get("status") == "diverged":  # after the table: the summary says so, the exit code too
        raise Diverged(summary["diverged"])
    exit_unless_all_finished(run_dir, summary.get("agents_died", []))


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The run config every agent of the run shares.")
@click.option("--id", "agent_id", required=True, type=int, help="This agent's id (0..agents-1).")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (default: runs/NAME-RUNID).")
@click.option("--resume", is_flag=True, help="Load this agent's checkpoint and rejoin the running graph.")
@set_option
def agent(config_path, agent_id, out, resume, sets):
    """Start one agent by hand (e.g. on another LAN machine); it binds its address from the config."""
    from p2pfl.agents import rundir
    from p2pfl.agents.process import run_agent
    from p2pfl.config import load_config, save_config

    from p2pfl.overrides import apply_sets

    config = apply_sets(load_config(config_path), sets)  # every agent of a run must get the same --set
    run_dir = Path(out) if out else Path("runs") / f"{config.name}-{config.resolved_run_id()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / rundir.CONFIG).exists():  # so `p2pfl report` works on a folder of hand-started agents
        config.run_id = config.resolved_run_id()
        save_config(config, run_dir / rundir.CONFIG)
    from p2pfl.agents.progress import RunProgress, watching
    from p2pfl.cli.agent_report import agent_result

    from p2pfl.registry import ALGORITHMS

    shows = not ALGORITHMS[config.algorithm].centralized or agent_id == 0  # a client keeps no per-round metrics
    with watching(RunProgress(config, run_dir, enabled=shows, agents=[agent_id])):
        code = run_agent(config, agent_id, run_dir, log_to_file=False, resume=resume)
    if code:
        error = rundir.error_path(run_dir, agent_id)
        failure = UserError(error.read_text() if error.exists() else f"agent {agent_id} failed")
        failure.exit_code = code
        raise failure
    click.echo(agent_result(config, run_dir, agent_id))


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
def report(run_dir):
    """Summarize a finished run folder (e.g. after collecting hand-started agents' folders)."""
    from p2pfl.agents import rundir
    from p2pfl.config import load_config
    from p2pfl.run_summary import summarize_run

    summarize_run(load_config(Path(run_dir) / rundir.CONFIG), Path(run_dir), "report")


@cli.group()
def topology() -> None:
    """Inspect gossip graphs."""


@topology.command("show")
@click.argument("kind")
@click.option("--agents", type=int, default=16, show_default=True)
@click.option("--file", "path", type=click.Path(), help="Edge list or GraphML (with KIND 'file').")
@click.option("--degree", type=int, default=3, show_default=True,
              help="For random-regular; for peer-sampling the peers each agent draws per round.")
@click.option("--p", type=float, default=0.3, show_default=True, help="For erdos-renyi.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--rounds", type=int, default=16, show_default=True,
              help="Dynamic topologies without a period: the window of rounds described.")
@click.option("--png", type=click.Path(dir_okay=False), help="Drawing path (default: topology-KIND-N.png).")
def topology_show(kind, agents, path, degree, p, seed, rounds, png):
    """Print degree, diameter and spectral gap of the mixing matrix (for a dynamic KIND: period, peers per
    round, mean per-round gap and the contraction of a period); write a PNG drawing."""
    from p2pfl.topologies import DYNAMIC_TOPOLOGIES, TopologySequence, build_topology, describe
    from p2pfl.topologies.draw import draw_topology

    note = ""
    if kind in DYNAMIC_TOPOLOGIES:
        from p2pfl.topologies.sequence_facts import describe_sequence

        sequence = TopologySequence(kind, agents, seed, degree)
        facts = describe_sequence(sequence, rounds)
        graph = sequence.union(facts["window"])
        note = f"union of rounds 0-{facts['window'] - 1}; {facts['peers_per_round']} peer(s) per round"
    else:
        graph = build_topology(kind, agents, seed=seed, degree=degree, p=p, path=path)
        facts = describe(graph)
    for key, value in facts.items():
        click.echo(f"{key:>15}: {value:.4g}" if isinstance(value, float) else f"{key:>15}: {value}")
    target = draw_topology(graph, png or f"topology-{kind}-{facts['agents']}.png", kind, note=note)
    click.echo(f"        drawing: {target}")


@cli.command()
@click.argument("config_path", type=click.Path(dir_okay=False))
@click.option("--hosts", "hosts_path", required=True, type=click.Path(dir_okay=False),
              help="YAML list of hosts: address, user, port, python, workdir, agents, ssh_options.")
@click.option("--out", type=click.Path(file_okay=False), help="Local run folder the agents' folders are collected into.")
@click.option("--dry-run", is_flag=True, help="Print the exact ssh commands and do nothing.")
@set_option
def spawn(config_path, hosts_path, out, dry_run, sets):
    """Start every agent of CONFIG_PATH on the listed LAN hosts over ssh, stream their output, collect results."""
    from p2pfl.agents.spawn import load_hosts, spawn as spawn_run
    from p2pfl.config import load_config
    from p2pfl.overrides import apply_sets
    from p2pfl.run_summary import summarize_run
    from p2pfl.tensorboard_events import require_tensorboard

    # Applied here, once: the resolved config (overrides included) is the file every host receives, so
    # the remote agents run with no --set of their own and cannot disagree.
    config = apply_sets(load_config(config_path), sets)
    require_tensorboard(config)  # the events are written here at the end: fail before the hosts start
    hosts = load_hosts(hosts_path)
    name = f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(out) if out else Path("runs") / name
    plan = spawn_run(config, hosts, run_dir, run_dir.name, dry_run=dry_run)
    if dry_run:
        click.echo("\n".join(plan))
        return
    summarize_run(config, run_dir, "spawn")


@cli.group()
def keys() -> None:
    """CurveZMQ key pairs for secured runs."""


@keys.command("generate")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--agents", type=int, required=True, help="One key pair per agent.")
def keys_generate(directory, agents):
    """Write agent-N.key / agent-N.key_secret into DIRECTORY and print the config block to paste."""
    import yaml

    from p2pfl.security import generate_keys

    if agents < 1:
        raise UserError(f"--agents must be >= 1, got {agents}")
    publics = generate_keys(directory, agents)
    block = {"security": {"mode": "curve", "keys_dir": str(directory), "public_keys": publics}}
    snippet = yaml.safe_dump(block, sort_keys=False)
    (Path(directory) / "security.yaml").write_text(snippet)
    click.echo(f"# {agents} key pairs in {directory}; give agent N only its agent-N.key_secret. Add to the run config:")
    click.echo(snippet, nl=False)


cli.add_command(config_group)
cli.add_command(sweep)
cli.add_command(slurm)
cli.add_command(slurm_addresses)


def main() -> None:
    cli(prog_name="p2pfl")


if __name__ == "__main__":
    main()
