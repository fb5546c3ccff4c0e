"""Models and data by import path, configurable built-ins, and the worked example in examples/own_model."""

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from p2pfl.agents.setup import prepare
from p2pfl.cli.main import cli
from p2pfl.config import save_config
from p2pfl.errors import UserError
from p2pfl.models import build_model
from p2pfl.models.custom import SplitAtLastLinear
from tests.conftest import free_ports, run_cli, small_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model"


def test_mlp_widths_are_configurable():
    model = build_model("mlp", (1, 8, 8), 10, {"hidden": [32, 16, 8]})
    assert model.feature_dim == 8 and [m.out_features for m in model.body if hasattr(m, "out_features")] == [32, 16, 8]
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    default = build_model("mlp", (1, 8, 8), 10)
    assert [p.shape for p in default.parameters()] == [p.shape for p in build_model("mlp", (1, 8, 8), 10,
                                                                                  {"hidden": 128, "feature_dim": 64}).parameters()]
    with pytest.raises(UserError, match="'depth' is not an argument of mlp; it takes hidden, feature_dim"):
        build_model("mlp", (1, 8, 8), 10, {"depth": 3})
    assert build_model("cnn", (1, 8, 8), 10, {"feature_dim": 20}).feature_dim == 20


def test_a_plain_model_is_split_at_its_last_linear_layer():
    model = build_model("tests.plugin_fixtures:plain_net", (1, 8, 8), 10, {"width": 12})
    assert isinstance(model, SplitAtLastLinear) and model.feature_dim == 12
    x = torch.randn(3, 1, 8, 8)
    assert model.features(x).shape == (3, 12)
    assert torch.allclose(model.head(model.features(x)), model(x))
    assert list(model.net.state_dict()) == ["1.weight", "1.bias", "3.weight", "3.bias"]


@pytest.mark.parametrize("name, args, fragment", [
    ("tests.plugin_fixtures:Softmaxed", {}, "must be its last nn.Linear layer"),
    ("tests.plugin_fixtures:plain_net", {"depth": 2}, "'depth' is not an argument of"),
    ("tests.plugin_fixtures:Missing", {}, "has no 'Missing'"),
    ("tests.no_such_module:Net", {}, "cannot import 'tests.no_such_module'"),
])
def test_bad_models_fail_with_one_clear_error(name, args, fragment):
    with pytest.raises(UserError, match=fragment):
        build_model(name, (1, 8, 8), 10, args)


def test_ccl_runs_on_a_plain_own_model(tmp_path):
    """CCL needs phi(x) and the head: the split model gives them, on torch Datasets from a function."""
    path = tmp_path / "c.yaml"
    config = small_config(agents=4, rounds=6, algorithm="ccl", model="tests.plugin_fixtures:plain_net",
                          model_args={"width": 8}, data__name="tests.plugin_fixtures:torch_datasets",
                          data__partition="iid", eval_every=3)
    save_config(config, path)
    result = CliRunner().invoke(cli, ["run", str(path), "--in-process", "--no-progress", "--out", str(tmp_path / "o")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "mean test accuracy of the local models" in result.output


def test_bad_data_is_caught_before_agents_start(tmp_path):
    config = small_config(data__name="tests.plugin_fixtures:bad_labels")
    with pytest.raises(UserError, match="y_train must be a 1-D array of integer labels"):
        prepare(config)
    config = small_config(data__name="tests.plugin_fixtures:nothing_here")
    path = tmp_path / "c.yaml"
    save_config(config, path)
    result = run_cli("run", str(path), "--in-process")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: tests.plugin_fixtures has no 'nothing_here' (for data.name "
                                     "tests.plugin_fixtures:nothing_here); check the name after the colon")


def test_worked_example_runs_as_processes(tmp_path, no_leaked_agents):
    """examples/own_model as its README shows it: run from its folder, agents as OS processes."""
    addresses = "[" + ",".join(f"tcp://127.0.0.1:{p}" for p in free_ports(4)) + "]"
    result = run_cli("run", "wine.yaml", "--rounds", "20", "--no-progress", "--out", str(tmp_path / "o"),
                     "--set", f"network.addresses={addresses}", cwd=EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "mean test accuracy of the local models" in result.stdout
    assert (tmp_path / "o" / "summary.json").exists()
