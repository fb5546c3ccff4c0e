"""How `run` and `sweep` run the agents on this machine: `--simulate` and `--in-process`."""

from __future__ import annotations

import click

SIMULATE_HELP = ("All agents on this machine, packed in one worker process per core, over in-process and private "
                 "Unix-socket links: no ports, no keys; the same agents, wire and losses as a real run.")
IN_PROCESS_HELP = ("Simulate with every agent a thread of this one process over an in-memory exchange (implies "
                   "--simulate): errors surface here and start-up is instant, but one core's GIL serves all agents, "
                   "so rounds are slower beyond a couple of agents.")


def simulate_options(function):
    """`--simulate` and `--in-process`; the command gets both flags (execute_run reads in_process as implying
    simulate)."""
    function = click.option("--in-process", is_flag=True, help=IN_PROCESS_HELP)(function)
    return click.option("--simulate", is_flag=True, help=SIMULATE_HELP)(function)
