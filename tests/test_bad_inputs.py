"""A careless user's data files and options: each is one UserError line, raised before any agent starts."""

import numpy as np
import pytest

from p2pfl.config import load_config, save_config
from p2pfl.validation import validate_config
from p2pfl.data.sources import load_npz
from p2pfl.errors import UserError
from tests.conftest import run_cli, small_config


def good(n=40, width=6):
    rng = np.random.default_rng(0)
    return {"x_train": rng.normal(size=(n, width)).astype(np.float32), "y_train": np.arange(n) % 3,
            "x_test": rng.normal(size=(10, width)).astype(np.float32), "y_test": np.arange(10) % 3}


def with_(**changes):
    return {**good(), **changes}


BAD_ARCHIVES = {
    "object array": (with_(x_train=np.array([[1.0], "a"] * 20, dtype=object)), "object array"),
    "empty train set": (with_(x_train=np.zeros((0, 6), np.float32), y_train=np.zeros(0, np.int64)),
                        "at least one sample"),
    "empty test set": (with_(x_test=np.zeros((0, 6), np.float32), y_test=np.zeros(0, np.int64)),
                       "at least one sample"),
    "100 rows, 90 labels": (with_(x_train=np.zeros((100, 6), np.float32), y_train=np.arange(90) % 3),
                            "100 samples in x_train but 90 labels"),
    "negative labels": (with_(y_train=np.arange(40) % 3 - 1), "negative labels"),
    "fractional labels": (with_(y_test=np.full(10, 0.5)), "non-integer"),
    "labels as a matrix": (with_(y_train=np.zeros((40, 3), np.int64)), "one integer per sample"),
    "test width differs": (with_(x_test=np.zeros((10, 5), np.float32)), "same features"),
    "text features": (with_(x_train=np.array([["a"] * 6] * 40)), "must be numbers"),
    "NaN features": (with_(x_train=np.full((40, 6), np.nan, np.float32)), "NaN"),
    "one feature vector": (with_(x_train=np.zeros(40, np.float32)), "at least one sample"),
}


@pytest.mark.parametrize("case", BAD_ARCHIVES)
def test_bad_npz_contents_are_one_line_user_errors(tmp_path, case):
    arrays, message = BAD_ARCHIVES[case]
    path = tmp_path / "data.npz"
    np.savez(path, **arrays, allow_pickle=True) if case == "object array" else np.savez(path, **arrays)
    with pytest.raises(UserError, match=message) as error:
        load_npz(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("content, message", [(b"just some text\n", "not a .npz archive"),
                                              (b"PK\x03\x04" + b"\x00" * 40, "not a .npz archive"),
                                              (None, "single array")])
def test_a_file_that_is_not_an_npz_archive_is_a_user_error(tmp_path, content, message):
    path = tmp_path / "data.npz"
    if content is None:
        np.save(path.with_suffix(".npy"), np.zeros(3))
        path.with_suffix(".npy").rename(path)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_npz(path)


def test_a_sound_archive_still_loads(tmp_path):
    np.savez(tmp_path / "data.npz", **good())
    data = load_npz(tmp_path / "data.npz")
    assert data.x_train.shape == (40, 6) and data.num_classes == 3


@pytest.mark.parametrize("algorithm, options, message", [
    ("fedavg", {"local_epochs": "2"}, "options.local_epochs must be an integer .* got '2' .*quotes"),
    ("fedavg", {"local_epochs": 1.5}, "options.local_epochs must be an integer"),
    ("ccl", {"lambda_m": "0.1"}, "options.lambda_m must be a finite number"),
    ("qgm", {"mu": float("nan")}, "options.mu must be a finite number"),
    ("clove", {"sqrt_losses": 1}, "options.sqrt_losses must be true or false"),
    ("ifca", {"participation": True}, "options.participation must be a finite number"),
    ("mtl", {"tasks": ["digit", 3]}, "options.tasks must be a list"),
    ("fedavg", {"init": 0}, "options.init must be a string"),
])
def test_option_values_of_the_wrong_type_are_user_errors(algorithm, options, message):
    config = small_config(algorithm=algorithm, options=options)
    with pytest.raises(UserError, match=message):
        validate_config(config)


def test_numbers_where_numbers_are_expected_still_pass():
    validate_config(small_config(algorithm="ccl", options={"lambda_m": 1, "gamma": 0.5, "mu": 0}))
    validate_config(small_config(algorithm="fedavg", options={"local_epochs": 2, "client_timeout": 5}))


@pytest.mark.parametrize("change", ["data", "options"])
def test_p2pfl_run_stops_on_one_line_before_any_agent_starts(tmp_path, change, no_leaked_agents):
    config = small_config()
    if change == "data":
        (tmp_path / "data.npz").write_bytes(b"not a zip")
        config.data.name, config.data.path = "npz", str(tmp_path / "data.npz")
    else:
        config.algorithm, config.options = "fedavg", {"local_epochs": "2"}
    save_config(config, tmp_path / "run.yaml")
    assert load_config(tmp_path / "run.yaml").options == config.options
    result = run_cli("run", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run"), "--no-progress", timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing started, not even the run folder


def test_a_message_cap_below_the_model_size_is_a_user_error():
    from p2pfl.agents.setup import prepare

    config = small_config()
    config.network.max_message_mb = 0.001
    with pytest.raises(UserError, match="max_message_mb 0.001 is below the size of one model"):
        prepare(config)


def test_an_unknown_scheduler_is_a_user_error_naming_the_choices():
    with pytest.raises(UserError, match="unknown network.scheduler 'fibers'; choose greenlets, threads"):
        validate_config(small_config(network__scheduler="fibers"))
    validate_config(small_config(network__scheduler="threads"))
