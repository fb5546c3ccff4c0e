"""Agents on an accelerator: neighbours' tensors arrive on the host and must be mixed where the model is."""

import json

import pytest
import torch

from p2pfl.agents import rundir
from p2pfl.agents.device_exchange import DeviceExchange
from p2pfl.agents.setup import prepare
from p2pfl.agents.simulate import run_simulation
from p2pfl.exchange import InMemoryHub
from tests.conftest import small_config
from tests.test_exchange import in_threads


def test_device_exchange_passes_the_exchange_through_and_keeps_its_statistics():
    hub = InMemoryHub()
    a = DeviceExchange(hub.endpoint(0, [1], "r", 5.0), torch.device("cpu"))
    b = hub.endpoint(1, [0], "r", 5.0)
    got_a, got_b = in_threads(lambda: a.exchange(0, "params", {1: {"x": torch.zeros(2)}}),
                              lambda: b.exchange(0, "params", {0: {"x": torch.ones(2)}}))
    assert got_a[1]["x"].tolist() == [1.0, 1.0] and got_b[0]["x"].tolist() == [0.0, 0.0]
    assert a.stats.bytes_received > 0 and a.latest_round(1) == 0 and a.peers == frozenset({1})


def losses(run_dir, agents):
    return [json.loads(line)["loss"] for a in range(agents)
            for line in rundir.metrics_path(run_dir, a).read_text().splitlines()]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("algorithm", ["dsgdm-n", "qgm", "ccl", "choco"])
def test_every_gossip_algorithm_runs_on_cuda_as_on_the_cpu(tmp_path, algorithm):
    config = small_config(agents=3, rounds=6, eval_every=3, algorithm=algorithm)
    run_simulation(prepare(config), tmp_path / "cpu")
    config.device = "cuda"
    run_simulation(prepare(config), tmp_path / "cuda")
    assert losses(tmp_path / "cuda", 3) == pytest.approx(losses(tmp_path / "cpu", 3), rel=1e-3, abs=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("example", ["fedavg_rotated.yaml", "ifca_rotated.yaml", "clove_rotated.yaml",
                                     "cpcfl_rotated.yaml", "fedtsdp_label_swap.yaml", "mtl_digits.yaml"])
def test_every_coordinator_method_runs_on_cuda_as_on_the_cpu(tmp_path, example):
    """Clients train on the GPU; requests arrive on the host and replies leave it, so the coordinator's
    cluster choices and accuracies match a CPU run of the same seed."""
    from p2pfl.agents.federated import summarize_federated
    from p2pfl.config import load_config
    from tests.conftest import ROOT

    config = load_config(ROOT / "examples" / example)
    config.rounds = 3
    config.options["local_epochs"] = 1
    if config.algorithm == "cpcfl":
        config.options["pretrain_rounds"] = 1
    summaries = {}
    for device in ("cpu", "cuda"):
        config.device = device
        run_simulation(prepare(config), tmp_path / device)
        summaries[device] = summarize_federated(config, tmp_path / device)
    cpu, cuda = summaries["cpu"], summaries["cuda"]
    # GPU kernels round differently; a client near a tie may pick the other model, hence the margins
    assert (cuda["final_ari"] is None) == (cpu["final_ari"] is None)
    assert cuda["final_ari"] is None or cuda["final_ari"] == pytest.approx(cpu["final_ari"], abs=0.15)
    assert cuda["accuracy_per_round"] == pytest.approx(cpu["accuracy_per_round"], abs=0.03)


def test_a_misspelt_device_is_a_user_error_before_any_agent_starts():
    from p2pfl.errors import UserError
    from p2pfl.validation import validate_config

    with pytest.raises(UserError, match="unknown device 'gpu'"):
        validate_config(small_config(device="gpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_an_agent_asked_for_a_gpu_it_does_not_have_says_so_in_one_line(tmp_path):
    from p2pfl.errors import UserError

    with pytest.raises(UserError, match="no CUDA GPU"):
        run_simulation(prepare(small_config(agents=2, rounds=2, device="cuda")), tmp_path)
