"""Options of the coordinator methods: every key with its default, and the checks run once when the
config is read (validation.validate_config) so the loops get a complete, checked dict."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from p2pfl.algorithms.base import reject_unknown
from p2pfl.algorithms.multitask import SHARING
from p2pfl.data.clusters import CLUSTER_KINDS
from p2pfl.data.tasks import DECODERS, TASKS
from p2pfl.errors import UserError

# A client hears from the coordinator once per phase (an empty request when it sits the phase out), at most
# client_timeout (the wait for the slowest participant) plus the coordinator's own work apart: the default
# patience of a client is this many times client_timeout, so a slow client costs a round, never the run.
COORDINATOR_PATIENCE = 4

FEDERATED_OPTIONS: dict[str, Any] = {
    "models": 4,  # K cluster models (1 for FedAvg)
    "clusters": 4,  # true clusters the partition creates
    "cluster_kind": "rotation",
    "participation": 1.0,
    "local_epochs": 1,
    "client_optimizer": "adam",  # CLoVE authors: Adam, lr 1e-2
    "client_timeout": 60.0,  # seconds the coordinator waits for a client's reply in each phase
    # seconds a client waits for the coordinator's next request; 0: COORDINATOR_PATIENCE x client_timeout
    "coordinator_timeout": 0.0,
    "init": "random",  # random | identical (IFCA's collapse case)
}
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "ifca": {},
    "local-only": {},
    "clove": {"sqrt_losses": False, "unknown_k": False, "patience": 3},  # unknown_k: `models` is an upper bound
    "cpcfl": {"pretrain_mode": "federated",  # federated (FedAvg of encoder + head) | coordinator (its unlabeled set)
              "pretrain_rounds": 5, "pretrain_epochs": 1, "temperature": 0.5, "projection_dim": 32,
              "augment_shift": 1, "augment_noise": 0.1, "augment_erase": 0.5, "coordinator_samples": 400},
    "fedtsdp": {"warmup_rounds": 2, "public_samples": 100, "hopkins_threshold": 0.75, "hopkins_repeats": 20,
                "hopkins_dims": 2, "hopkins_patience": 2,  # rounds in a row with H >= threshold before clustering
                "js_threshold": 0.35, "cos_ratio": 0.5, "min_split_size": 4, "p_max": 2},
    "mtl": {"tasks": ["digit", "parity-size"], "decoders": ["linear", "mlp"], "samples_per_client": [0, 0],
            "mu": 1.0, "sharing": "mfed"},  # mu: best of the spec's {0.01, 0.1, 1} in benchmarks/clustered.py
}


def one_model(options: dict[str, Any]) -> None:
    options["models"] = 1  # FedAvg: one global model, whatever `models` says


def check_cpcfl(options: dict[str, Any]) -> None:
    if options["pretrain_mode"] not in ("federated", "coordinator"):
        raise UserError(f"options.pretrain_mode must be federated or coordinator, got {options['pretrain_mode']!r}")


def check_fedtsdp(options: dict[str, Any]) -> None:
    if options["p_max"] < 1 or not 0 < options["hopkins_threshold"] <= 1:
        raise UserError("options.p_max must be >= 1 and options.hopkins_threshold in (0, 1]")


def check_multitask(options: dict[str, Any]) -> None:
    tasks = options["tasks"]
    if not tasks or any(t not in TASKS for t in tasks):
        raise UserError(f"options.tasks must list tasks among {', '.join(TASKS)}, got {tasks!r}")
    if len(options["decoders"]) != len(tasks) or any(d not in DECODERS for d in options["decoders"]):
        raise UserError(f"options.decoders must give one of {', '.join(DECODERS)} per task ({len(tasks)})")
    if len(options["samples_per_client"]) != len(tasks):
        raise UserError("options.samples_per_client must give one number per task (0: the whole shard)")
    if options["sharing"] not in SHARING:
        raise UserError(f"options.sharing must be one of {', '.join(SHARING)}, got {options['sharing']!r}")
    options["clusters"] = len(tasks)  # the tasks are the true groups the assignment is scored against


# What each method checks (and completes) beyond the options every method shares.
METHOD_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "fedavg": one_model, "cpcfl": check_cpcfl, "fedtsdp": check_fedtsdp, "mtl": check_multitask,
}


def check_federated_options(options: Mapping[str, Any], method: str) -> dict[str, Any]:
    merged = reject_unknown(options, {**FEDERATED_OPTIONS, **METHOD_OPTIONS[method]}, method)
    if merged["cluster_kind"] not in CLUSTER_KINDS:
        raise UserError(f"options.cluster_kind must be one of {', '.join(CLUSTER_KINDS)}")
    if not 0 < merged["participation"] <= 1:
        raise UserError(f"options.participation must be in (0, 1], got {merged['participation']}")
    if merged["init"] not in ("random", "identical") or merged["client_optimizer"] not in ("adam", "sgd"):
        raise UserError("options.init must be random or identical; options.client_optimizer adam or sgd")
    if merged["client_timeout"] <= 0:
        raise UserError(f"options.client_timeout must be > 0 seconds, got {merged['client_timeout']}")
    if not merged["coordinator_timeout"]:
        merged["coordinator_timeout"] = COORDINATOR_PATIENCE * float(merged["client_timeout"])
    if merged["coordinator_timeout"] <= merged["client_timeout"]:
        raise UserError(f"options.coordinator_timeout ({merged['coordinator_timeout']}) must be greater than "
                        f"options.client_timeout ({merged['client_timeout']}): a client sitting a phase out waits "
                        "while the coordinator waits up to client_timeout for the slowest participant "
                        f"(0 for the default, {COORDINATOR_PATIENCE} x client_timeout)")
    if merged["local_epochs"] < 1 or merged["models"] < 1 or merged["clusters"] < 1:
        raise UserError("options.local_epochs, options.models and options.clusters must be >= 1")
    if method in METHOD_CHECKS:
        METHOD_CHECKS[method](merged)
    return merged
