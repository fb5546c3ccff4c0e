"""Checks of a run config against what exists (algorithms and their options, models, data sets,
topologies), before any process starts: above the config and the registries, so neither imports the other."""

from __future__ import annotations

from p2pfl.registry import ALGORITHMS, parse_algorithm_options
from p2pfl.algorithms.options import Options
from p2pfl.config import SCHEDULERS, SECURITY_MODES, RunConfig
from p2pfl.errors import UserError


def check_device_name(device: str) -> None:
    """The spelling only: whether this host has that device is the agent's check (devices are per host)."""
    import torch

    try:
        torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None


def check_device_present(device: str) -> None:
    import torch

    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r}: this machine has no CUDA GPU that torch can use; set device: cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {device!r}: MPS is not available on this machine; set device: cpu")


def validate_config(config: RunConfig) -> Options:
    """Check everything that can be checked before a process starts; raise one clear UserError.
    Returns the algorithm's options, typed: the one parse of `config.options` (a plain mapping)."""
    from p2pfl.data import DATASETS
    from p2pfl.data.normalize import NORMALIZATIONS
    from p2pfl.data.partition import PARTITIONS
    from p2pfl.models import MODELS, model_class
    from p2pfl.plugins import is_import_path
    from p2pfl.topologies import DYNAMIC_TOPOLOGIES, TOPOLOGIES

    checks = [
        (config.agents >= 2, f"agents must be >= 2, got {config.agents}; raise --agents"),
        (config.rounds >= 1, f"rounds must be >= 1, got {config.rounds}"),
        (config.eval_every >= 0, "eval_every must be >= 0 (0 evaluates only at the end)"),
        (config.max_loss >= 0, f"max_loss must be >= 0 (0 checks only for non-finite values), got {config.max_loss}"),
        (config.eval_samples >= 0, "eval_samples must be >= 0 (0 uses the whole test set)"),
        (config.topology.kind in TOPOLOGIES + DYNAMIC_TOPOLOGIES,
         f"unknown topology {config.topology.kind!r}; choose one of {', '.join(TOPOLOGIES + DYNAMIC_TOPOLOGIES)}"),
        (config.data.name in DATASETS or is_import_path(config.data.name),
         f"unknown dataset {config.data.name!r}; choose one of {', '.join(DATASETS)} or give package.module:function"),
        (config.data.partition in PARTITIONS, f"unknown partition {config.data.partition!r}; "
                                              f"choose one of {', '.join(PARTITIONS)}"),
        (config.data.normalize in NORMALIZATIONS, f"unknown data.normalize {config.data.normalize!r}; "
                                                  f"choose one of {', '.join(NORMALIZATIONS)}"),
        (config.data.std > 0, f"data.std must be > 0, got {config.data.std}"),
        (config.data.order in ("agent", "reference"), f"unknown data.order {config.data.order!r}; "
                                                      "choose agent or reference"),
        (config.data.alpha > 0, f"Dirichlet alpha must be > 0, got {config.data.alpha}; use e.g. 0.1 or 10"),
        (config.model in MODELS or is_import_path(config.model),
         f"unknown model {config.model!r}; choose one of {', '.join(MODELS)} or give package.module:Class"),
        (config.algorithm in ALGORITHMS, f"unknown algorithm {config.algorithm!r}; choose one of "
                                         f"{', '.join(ALGORITHMS)}"),
        (config.optim.lr > 0, f"optim.lr must be > 0, got {config.optim.lr}"),
        (config.optim.grad_clip >= 0, f"optim.grad_clip must be >= 0 (0: off), got {config.optim.grad_clip}"),
        (config.optim.batch_size >= 1, f"optim.batch_size must be >= 1, got {config.optim.batch_size}"),
        (0 <= config.optim.momentum < 1, f"optim.momentum must be in [0, 1), got {config.optim.momentum}"),
        (config.optim.schedule in ("constant", "step", "warmup"),
         f"unknown optim.schedule {config.optim.schedule!r}; choose constant, step or warmup"),
        (config.network.round_timeout > 0, "network.round_timeout must be > 0 seconds"),
        (config.network.startup_timeout > 0, "network.startup_timeout must be > 0 seconds"),
        (config.network.agents_per_process >= 0,
         f"network.agents_per_process must be >= 0 (0: auto), got {config.network.agents_per_process}"),
        (config.network.scheduler in SCHEDULERS,
         f"unknown network.scheduler {config.network.scheduler!r}; choose {', '.join(SCHEDULERS)}"),
        (1 <= config.network.base_port <= 65535 - config.agents,
         f"network.base_port {config.network.base_port} leaves no room for {config.agents} ports"),
        (config.security.mode in SECURITY_MODES, f"unknown security.mode {config.security.mode!r}; "
                                                 f"choose {', '.join(SECURITY_MODES)}"),
        (not config.security.public_keys or len(config.security.public_keys) == config.agents,
         f"security.public_keys lists {len(config.security.public_keys or [])} keys for {config.agents} agents"),
        (not config.network.addresses or len(config.network.addresses) == config.agents,
         f"network.addresses lists {len(config.network.addresses or [])} addresses for {config.agents} agents; "
         "give one tcp://host:port per agent"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    check_device_name(config.device)
    if is_import_path(config.data.name):
        from p2pfl.plugins import load_object

        load_object(config.data.name, "data.name")  # an import error fails here, before any agent starts
    if getattr(model_class(config.model), "unsupervised", False) and not ALGORITHMS[config.algorithm].unsupervised:
        fitting = ", ".join(name for name, entry in ALGORITHMS.items() if entry.unsupervised)
        raise UserError(f"model {config.model} is unsupervised; it runs with {fitting}, not {config.algorithm}; "
                        "choose a classifier model")
    if ALGORITHMS[config.algorithm].static_graph and config.topology.kind in DYNAMIC_TOPOLOGIES:
        raise UserError(f"{config.algorithm} keeps state per neighbour and needs a fixed graph, not "
                        f"{config.topology.kind}; choose ring, torus, exponential, ...")
    return parse_algorithm_options(config.algorithm, config.options)

