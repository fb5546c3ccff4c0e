"""`--set key.path=value` overrides and the generated config reference."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from p2pfl.cli.main import cli
from p2pfl.config import RunConfig, load_config, save_config
from p2pfl.config_reference import markdown, reference
from p2pfl.errors import UserError
from tests.conftest import ROOT
from p2pfl.overrides import apply_sets
from tests.conftest import small_config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_values_are_typed_like_the_file():
    config = apply_sets(RunConfig(), ["optim.batch_size=64", "optim.nesterov=false", "topology=torus",
                                      "options.mu=0.5", "model_args.hidden=[32, 16]", "data.path=wine.npz",
                                      "network.addresses=null", "optim.lr=1e-2"])
    assert config.optim.batch_size == 64 and config.optim.nesterov is False and config.optim.lr == 0.01
    assert config.topology.kind == "torus" and config.topology.offsets == [1, 4]
    assert config.options == {"mu": 0.5} and config.model_args == {"hidden": [32, 16]}
    assert config.data.path == "wine.npz" and config.network.addresses is None


@pytest.mark.parametrize("item, fragments", [
    ("optim.lrr=1", ["--set optim.lrr=1", "unknown key 'lrr' in optim", "known keys"]),
    ("rounds=many", ["--set rounds=many", "rounds must be an integer"]),
    ("optim.nesterov=3", ["optim.nesterov must be true or false"]),
    ("optim", ["is not KEY=VALUE"]),
    ("name.first=1", ["cannot set name.first: name is a str"]),
])
def test_bad_overrides_name_the_key(item, fragments):
    with pytest.raises(UserError) as caught:
        apply_sets(RunConfig(), [item])
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_run_applies_set_after_the_flags(tmp_path):
    path = tmp_path / "c.yaml"
    save_config(small_config(agents=3, rounds=2), path)
    result = CliRunner().invoke(cli, ["run", str(path), "--in-process", "--no-progress", "--out", str(tmp_path / "o"),
                                      "--rounds", "3", "--set", "optim.batch_size=8", "--set", "rounds=2",
                                      "--set", "optim.momentum=0.5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load((tmp_path / "o" / "config.yaml").read_text())
    assert resolved["optim"]["batch_size"] == 8 and resolved["optim"]["momentum"] == 0.5 and resolved["rounds"] == 2


def test_config_show_validates(tmp_path):
    result = CliRunner().invoke(cli, ["config", "show", "--set", "optim.lr=-1"])
    assert result.exit_code == 2 and "optim.lr must be > 0" in result.stderr


def leaf_keys(cls=RunConfig, prefix=""):
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type) or (isinstance(f.type, str) and f.type.endswith("Config")):
            yield from leaf_keys(type(getattr(cls(), f.name)), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def test_reference_lists_every_key_with_a_meaning():
    docs = {d.key: d for d in reference()}
    assert set(docs) == set(leaf_keys())
    assert docs["optim.batch_size"].type == "int" and docs["optim.batch_size"].default == 32
    assert docs["network.addresses"].type == "list[str] or null"
    assert "x_train" in docs["data.path"].meaning
    result = CliRunner().invoke(cli, ["config", "reference"])
    assert result.exit_code == 0 and "| `topology.path` |" in result.output


def test_readme_holds_the_generated_reference():
    """The README's reference is `p2pfl config reference` verbatim: regenerate it when a key changes."""
    text = README.read_text()
    table = re.search(r"<!-- config-reference -->\n(.*?)<!-- /config-reference -->", text, re.S)
    assert table, "README lacks the config reference block"
    assert table.group(1) == markdown()


def test_the_run_id_ignores_what_each_host_keeps_for_itself():
    """LAN hosts share one config but may hold the data elsewhere or run on a GPU: they must still agree."""
    from p2pfl.config import HOST_LOCAL_KEYS

    base = load_config(ROOT / "examples" / "ring16.yaml")
    host = load_config(ROOT / "examples" / "ring16.yaml")
    host.device, host.data.path, host.security.keys_dir, host.topology.path = "cuda:1", "/data", "/keys", "/g.txt"
    assert base.resolved_run_id() == host.resolved_run_id() and len(HOST_LOCAL_KEYS) == 4
    other = load_config(ROOT / "examples" / "ring16.yaml")
    other.optim.lr *= 2
    assert other.resolved_run_id() != base.resolved_run_id()
