"""`p2pfl config`: the reference of every config key, and a config resolved with overrides."""

from __future__ import annotations

import click

SET_HELP = ("Set any config key, e.g. --set optim.batch_size=64 --set options.mu=0.5 (YAML values, "
            "checked like the file; repeatable; applied after the other flags). Keys: p2pfl config reference.")


def set_option(function):
    """The `--set KEY=VALUE` option shared by run, agent, spawn, slurm, sweep and config show."""
    return click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)(function)


@click.group("config")
def config_group() -> None:
    """Config keys: reference and resolved configs."""


@config_group.command("reference")
def reference_command() -> None:
    """Print every config key (type, default, meaning) as a Markdown table."""
    from p2pfl.config_reference import markdown

    click.echo(markdown(), nl=False)


@config_group.command("show")
@click.argument("config_path", type=click.Path(dir_okay=False), required=False)
@set_option
def show_command(config_path, sets) -> None:
    """Print CONFIG_PATH (or the defaults) with the --set overrides applied and validated, as YAML."""
    import yaml

    from p2pfl.config import load_config
    from p2pfl.overrides import apply_sets
    from p2pfl.validation import validate_config

    config = apply_sets(load_config(config_path), sets)
    validate_config(config)
    click.echo(yaml.safe_dump(config.to_dict(), sort_keys=False), nl=False)
