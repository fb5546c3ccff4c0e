"""Options of the coordinator methods: what every method shares (FederatedOptions) and what each adds, with
the checks run once when the config is parsed, so the loops get complete, checked options."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Self

from p2pfl.algorithms.multitask import SHARING
from p2pfl.algorithms.options import Options
from p2pfl.data.clusters import CLUSTER_KINDS
from p2pfl.data.tasks import DECODERS, TASKS
from p2pfl.errors import UserError

# A client hears from the coordinator once per phase (an empty request when it sits the phase out), at most
# client_timeout (the wait for the slowest participant) plus the coordinator's own work apart: the default
# patience of a client is this many times client_timeout, so a slow client costs a round, never the run.
COORDINATOR_PATIENCE = 4


@dataclass(frozen=True)
class FederatedOptions(Options):
    """What every coordinator method takes; FedAvg, IFCA and local-only take nothing more."""

    models: int = 4  # K cluster models (1 for FedAvg)
    clusters: int = 4  # true clusters the partition creates
    cluster_kind: str = "rotation"
    participation: float = 1.0
    local_epochs: int = 1
    client_optimizer: str = "adam"  # CLoVE authors: Adam, lr 1e-2
    client_timeout: float = 60.0  # seconds the coordinator waits for a client's reply in each phase
    # seconds a client waits for the coordinator's next request; 0: COORDINATOR_PATIENCE x client_timeout
    coordinator_timeout: float = 0.0
    init: str = "random"  # random | identical (IFCA's collapse case)

    def checked(self) -> Self:
        if self.cluster_kind not in CLUSTER_KINDS:
            raise UserError(f"options.cluster_kind must be one of {', '.join(CLUSTER_KINDS)}")
        if not 0 < self.participation <= 1:
            raise UserError(f"options.participation must be in (0, 1], got {self.participation}")
        if self.init not in ("random", "identical") or self.client_optimizer not in ("adam", "sgd"):
            raise UserError("options.init must be random or identical; options.client_optimizer adam or sgd")
        if self.client_timeout <= 0:
            raise UserError(f"options.client_timeout must be > 0 seconds, got {self.client_timeout}")
        options = self
        if not options.coordinator_timeout:
            options = replace(options, coordinator_timeout=COORDINATOR_PATIENCE * float(options.client_timeout))
        if options.coordinator_timeout <= options.client_timeout:
            raise UserError(f"options.coordinator_timeout ({options.coordinator_timeout}) must be greater than "
                            f"options.client_timeout ({options.client_timeout}): a client sitting a phase out waits "
                            "while the coordinator waits up to client_timeout for the slowest participant "
                            f"(0 for the default, {COORDINATOR_PATIENCE} x client_timeout)")
        if options.local_epochs < 1 or options.models < 1 or options.clusters < 1:
            raise UserError("options.local_epochs, options.models and options.clusters must be >= 1")
        return options


@dataclass(frozen=True)
class FedAvgOptions(FederatedOptions):
    def checked(self) -> Self:
        return replace(super().checked(), models=1)  # FedAvg: one global model, whatever `models` says


@dataclass(frozen=True)
class CLoVEOptions(FederatedOptions):
    sqrt_losses: bool = False
    unknown_k: bool = False  # `models` is an upper bound
    patience: int = 3


@dataclass(frozen=True)
class CPCFLOptions(FederatedOptions):
    pretrain_mode: str = "federated"  # federated (FedAvg of encoder + head) | coordinator (its unlabeled set)
    pretrain_rounds: int = 5
    pretrain_epochs: int = 1
    temperature: float = 0.5
    projection_dim: int = 32
    augment_shift: int = 1
    augment_noise: float = 0.1
    augment_erase: float = 0.5
    coordinator_samples: int = 400

    def checked(self) -> Self:
        options = super().checked()
        if options.pretrain_mode not in ("federated", "coordinator"):
            raise UserError(f"options.pretrain_mode must be federated or coordinator, got {options.pretrain_mode!r}")
        return options


@dataclass(frozen=True)
class FedTSDPOptions(FederatedOptions):
    warmup_rounds: int = 2
    public_samples: int = 100
    hopkins_threshold: float = 0.75
    hopkins_repeats: int = 20
    hopkins_dims: int = 2
    hopkins_patience: int = 2  # rounds in a row with H >= threshold before clustering
    js_threshold: float = 0.35
    cos_ratio: float = 0.5
    min_split_size: int = 4
    p_max: int = 2

    def checked(self) -> Self:
        options = super().checked()
        if options.p_max < 1 or not 0 < options.hopkins_threshold <= 1:
            raise UserError("options.p_max must be >= 1 and options.hopkins_threshold in (0, 1]")
        return options


@dataclass(frozen=True)
class MultiTaskOptions(FederatedOptions):
    tasks: list[str] = field(default_factory=lambda: ["digit", "parity-size"])
    decoders: list[str] = field(default_factory=lambda: ["linear", "mlp"])
    samples_per_client: list[int] = field(default_factory=lambda: [0, 0])
    mu: float = 1.0  # best of the spec's {0.01, 0.1, 1} in benchmarks/clustered.py
    sharing: str = "mfed"

    def checked(self) -> Self:
        options = super().checked()
        tasks = options.tasks
        if not tasks or any(t not in TASKS for t in tasks):
            raise UserError(f"options.tasks must list tasks among {', '.join(TASKS)}, got {tasks!r}")
        if len(options.decoders) != len(tasks) or any(d not in DECODERS for d in options.decoders):
            raise UserError(f"options.decoders must give one of {', '.join(DECODERS)} per task ({len(tasks)})")
        if len(options.samples_per_client) != len(tasks):
            raise UserError("options.samples_per_client must give one number per task (0: the whole shard)")
        if options.sharing not in SHARING:
            raise UserError(f"options.sharing must be one of {', '.join(SHARING)}, got {options.sharing!r}")
        return replace(options, clusters=len(tasks))  # the tasks are the true groups the assignment is scored against
