"""One typed run config, read from YAML, overridable from the CLI, validated before anything starts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from p2pfl.errors import UserError


SECURITY_MODES = ("auto", "curve", "none")
SCHEDULERS = ("greenlets", "threads")  # network.scheduler: how packed agents take turns
# Config keys that may differ between the machines of one run (paths on each host, its device).
HOST_LOCAL_KEYS = ("device", "data.path", "security.keys_dir", "topology.path")


@dataclass
class TopologyConfig:
    kind: str = "ring"
    path: str | None = None
    degree: int = 3
    p: float = 0.3
    offsets: list[int] = field(default_factory=lambda: [1, 4])


@dataclass
class DataConfig:
    name: str = "digits"
    path: str | None = None
    partition: str = "dirichlet"  # iid | dirichlet (capped, equal shards) | lin (Lin et al.'s split, the CCL/QGM code)
    alpha: float = 0.1
    torchvision_name: str = "CIFAR10"  # with name: torchvision
    normalize: str = "zscore"  # zscore (training mean/std) | feature (per feature) | fixed (mean, std below) | none
    mean: float = 0.5  # with normalize: fixed (0.5/0.5 maps [0, 1] pixels to [-1, 1], the CCL code)
    std: float = 0.5
    drop_last: bool = True  # false keeps each epoch's last partial batch (a torch DataLoader's default)
    order: str = "agent"  # agent: own seeded shuffle per agent | reference: the CCL authors' DataLoader stream


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    batch_size: int = 32
    schedule: str = "constant"  # constant | step (x0.1 at 50% and 75%) | warmup (QGM: lr*n, linear warm-up)
    warmup_rounds: int = 0  # linear lr warm-up over these rounds (with step or constant: from lr/warmup_rounds up to lr)
    grad_clip: float = 0.0  # > 0: the loss gradient's L2 norm is cut to this before weight decay and momentum
    scale_lr_by_agents: bool = False


@dataclass
class NetworkConfig:
    host: str = "127.0.0.1"
    base_port: int = 29100  # below the kernel's ephemeral range, so client sockets never hold it
    addresses: list[str] | None = None
    round_timeout: float = 30.0
    startup_timeout: float = 180.0
    max_message_mb: float = 256.0
    agents_per_process: int = 0  # local `p2pfl run`: agents hosted as threads of one OS process (0: auto)
    scheduler: str = "greenlets"  # greenlets | threads: how the agents packed in one process take turns
    shared_memory: bool = True  # tensor frames to neighbours in other processes of this host via /dev/shm
    host_channel: bool = True  # with shared_memory: their messages over Unix sockets, not through ZeroMQ
    rotate_cores: bool = True  # local `p2pfl run` with one process per core: they take turns on the cores


@dataclass
class SecurityConfig:
    mode: str = "auto"  # auto | curve | none: see config_reference.MEANINGS
    keys_dir: str | None = None  # holds this agent's agent-N.key_secret (and, optionally, the public keys)
    public_keys: list[str] | None = None  # z85 public key of every agent, index = agent id


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    agents: int = 16
    rounds: int = 200
    eval_every: int = 20
    eval_samples: int = 0  # intermediate evaluations on this many test samples (0: all); the last uses all
    checkpoint_every: int = 0  # save model, algorithm state, data order and RNG every N rounds (0: never)
    consensus_curve: bool = True  # save parameters at each evaluation to report the consensus model per round
    tensorboard: bool = False  # per-round metrics as TensorBoard scalars in RUN/tensorboard too (tensorboardX)
    max_loss: float = 1.0e4  # a loss term above this (or any non-finite loss or parameter) stops the run as diverged; 0: finiteness only
    algorithm: str = "dsgdm-n"
    model: str = "mlp"
    model_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the model class
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    run_id: str | None = None

    def address(self, agent: int) -> str:
        if self.network.addresses:
            return self.network.addresses[agent]
        return f"tcp://{self.network.host}:{self.network.base_port + agent}"

    def resolved_run_id(self) -> str:
        """Given, or a hash of the config: agents started by hand from one file agree on it. Keys that are
        each machine's own (HOST_LOCAL_KEYS: where its data and keys lie, its device) are left out, so LAN
        hosts with the data in another folder or a GPU still join one run."""
        if self.run_id:
            return self.run_id
        body = {k: v for k, v in asdict(self).items() if k != "run_id"}
        for dotted in HOST_LOCAL_KEYS:
            *parents, leaf = dotted.split(".")
            section = body
            for parent in parents:
                section = section[parent]
            section.pop(leaf, None)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return asdict(self)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return _coerce(value, hint, where)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[]") for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and value != int(value)):
            raise UserError(f"{where} must be {'an integer' if hint is int else 'a number'}, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, (str, int)):
            raise UserError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise UserError(f"{where or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise UserError(f"unknown key {sorted(unknown)[0]!r} in {where or 'config'}; known keys: {', '.join(sorted(known))}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}".lstrip(".")) for k, v in data.items()})


def from_dict(data: dict) -> RunConfig:
    if isinstance(data, dict) and isinstance(data.get("topology"), str):  # `topology: ring` shorthand
        data = {**data, "topology": {"kind": data["topology"]}}
    return _build(RunConfig, data, "")


def load_config(path: str | Path | None) -> RunConfig:
    if path is None:
        return RunConfig()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; see examples/ for ready configs")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path} is not valid YAML{at}: {getattr(exc, 'problem', exc)}; fix the file") from None
    return from_dict(data)


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
