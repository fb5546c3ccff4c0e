"""A reference of every run-config key (name, type, default, meaning), generated from the dataclasses.

The meaning comes from the field's `metadata["help"]`, else the table below, else its trailing
`# comment` in p2pfl/config.py; a field with none of them is listed with an empty meaning,
so a new key shows up in `p2pfl config reference` the moment it is added.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

from p2pfl.config import RunConfig

NPZ_LAYOUT = ("x_train (N x C x H x W, N x H x W or N x D), y_train (N,) integer labels 0..K-1, "
              "x_test, y_test (same layout)")

MEANINGS: dict[str, str] = {
    "name": "run name: prefix of the run folder under runs/",
    "seed": "seed of the data split, the initial model, every agent's batch order and a random per-round topology",
    "agents": "number of agents (with a coordinator method: the coordinator plus agents-1 clients)",
    "security.mode": "auto: a local `p2pfl run` makes the run's own CurveZMQ keys in RUN/keys and encrypts every "
                     "link; agents by hand or by spawn talk plain on loopback and refuse other addresses / curve: "
                     "encrypted links, only the listed public keys may connect / none: plain links, also off "
                     "loopback (anyone on the network may pose as an agent)",
    "rounds": "training rounds; a gossip round is one local step and one exchange with the neighbours",
    "eval_every": "evaluate the test accuracy every N rounds (0: only after the last round)",
    "algorithm": "dpsgd, dsgdm, dsgdm-n, qgm, ccl, choco (compressed gossip), local; coordinator methods fedavg, "
                 "ifca, clove, cpcfl, fedtsdp, mtl, local-only",
    "model": "mlp, cnn, lenet5, resnet20, autoencoder, or an import path `package.module:Class`",
    "model_args": "keyword arguments of the model class, e.g. {hidden: [128, 64]} for mlp",
    "device": "torch device of every agent, e.g. cpu or cuda:0",
    "options": "algorithm options, e.g. {variant: ccl, lambda_m: 0.1} (checked per algorithm)",
    "tensorboard": "also write the per-round metrics as TensorBoard scalars into RUN/tensorboard/, live and again "
                   "when the run is summarized (needs tensorboardX: pip install 'p2pfl[tensorboard]'); "
                   "`tensorboard --logdir runs`",
    "run_id": "shared run id (default: a hash of the config, so hand-started agents agree)",
    "topology.kind": "ring, torus, circulant, exponential, complete, star, random-regular, erdos-renyi, file; "
                     "changing every round (seeded by seed): one-peer-exponential, random-matching, peer-sampling",
    "topology.path": "edge list ('u v' per line) or GraphML file, with kind: file",
    "topology.degree": "degree of random-regular; peers each agent draws per round with peer-sampling",
    "topology.p": "edge probability of erdos-renyi",
    "topology.offsets": "neighbour offsets i±k of circulant",
    "data.name": "digits, fashion-mnist, cifar10, torchvision, npz, or an import path `package.module:load` "
                 "of a function returning (x_train, y_train, x_test, y_test) or (train, test) torch Datasets",
    "data.path": "folder or file of the data set; for npz a .npz holding " + NPZ_LAYOUT,
    "data.partition": "how the training set is split over agents: iid, dirichlet (label skew, capped equal shards) "
                      "or lin (Lin et al.'s Dirichlet split, as the QGM and CCL authors' code)",
    "data.std": "with normalize: fixed",
    "data.alpha": "Dirichlet concentration: 0.1 strongly non-IID, 10 near IID",
    "optim.lr": "learning rate",
    "optim.momentum": "momentum coefficient (0 for plain SGD)",
    "optim.nesterov": "Nesterov momentum",
    "optim.weight_decay": "L2 weight decay",
    "optim.batch_size": "mini-batch size of every local step",
    "optim.grad_clip": "0 = off; > 0: the loss gradient's L2 norm is cut to this before weight decay and momentum "
                       "(a remedy for steps that explode at a high learning rate)",
    "optim.warmup_rounds": "rounds of linear learning-rate warm-up (schedule warmup: from lr to lr*n; step or "
                           "constant: from lr/warmup_rounds up to lr)",
    "optim.scale_lr_by_agents": "multiply the learning rate by the number of agents (as the QGM code)",
    "data.torchvision_name": "torchvision dataset class (with data.name: torchvision), e.g. CIFAR10",
    "network.base_port": "agent i binds base_port + i on network.host",
    "network.host": "host of every agent when network.addresses is not given",
    "network.addresses": "one tcp://host:port per agent (LAN runs); default base_port + id on host",
    "network.round_timeout": "seconds to wait for a neighbour in a round before going on without it",
    "network.startup_timeout": ("seconds to wait for every neighbour to come up (a coordinator: for every "
                                "client's hello; one missing is absent)"),
    "network.max_message_mb": "largest accepted message, in MiB",
    "network.agents_per_process": "local `p2pfl run` only: agents per OS process, each a greenlet or thread "
                                  "(network.scheduler) with its own sockets, log and metrics; neighbours in one process hand their "
                                  "messages over in memory (1: one "
                                  "process per agent, for isolation; N: N per process; 0: auto, the default, "
                                  "ceil(agents / cores), one worker process per core: faster and smaller than one "
                                  "process per agent at 8 to 256 agents on 2 cores, benchmarks/scale.py)",
    "network.scheduler": "how the agents packed in one process take turns: greenlets (the default: one thread "
                         "switches between them in user space where they wait, and wakes a waiting one once its "
                         "socket is readable; 3-13% less time per round than threads at 8 to 256 agents, and 2.3-3.4x "
                         "less memory at 256) or threads (a thread per agent, one computing at a time), "
                         "README 'Footprint and scale'",
    "network.shared_memory": "neighbours in other processes of this host (loopback or ipc:// addresses) get the "
                             "tensors of large messages through a slot in /dev/shm (a folder of this user's "
                             "alone) and only the header, still authenticated, over the socket: no encryption "
                             "or loopback copies of the tensors (false: every byte over the socket)",
    "network.host_channel": "with network.shared_memory: those neighbours' messages (a header with its slot "
                            "descriptor, or a small message whole) go over a Unix socket in that same folder, not "
                            "through ZeroMQ, whose I/O threads would wake for each on both sides; named by the "
                            "sender's socket file, which only this user can make (false: over ZeroMQ, "
                            "authenticated by CurveZMQ)",
    "network.rotate_cores": "local `p2pfl run` with as many agent processes as usable cores (the default packing "
                            "where agents outnumber cores): every 0.1 s each process moves to the next core, so a "
                            "core slower than the others (a VM's, an efficiency core, one another job shares) slows "
                            "every process alike instead of making the others wait for its agents each round "
                            "(false: the kernel places them; p2pfl/agents/core_rotation.py)",
}


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    key: str
    type: str
    default: Any
    meaning: str


def source_comments(cls: type) -> dict[str, str]:
    """`field: type = default  # comment` lines of a dataclass body."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, re.M)}


def type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if origin is dict:
        return "mapping"
    if args:  # a union
        return " or ".join(type_name(a) for a in args)
    return getattr(hint, "__name__", str(hint))


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def reference(cls: type = RunConfig, prefix: str = "") -> list[KeyDoc]:
    """Every leaf key of the config, in declaration order, groups after the top-level keys."""
    hints = typing.get_type_hints(cls)
    comments = source_comments(cls)
    leaves, groups = [], []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            groups.extend(reference(hints[f.name], f"{key}."))
            continue
        meaning = f.metadata.get("help") or MEANINGS.get(key) or comments.get(f.name, "")
        leaves.append(KeyDoc(key, type_name(hints[f.name]), default_of(f), meaning))
    return leaves + groups


def show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value or '""'
    return str(value).replace("'", "")


def markdown() -> str:
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for doc in reference():
        lines.append(f"| `{doc.key}` | {doc.type} | `{show(doc.default)}` | {doc.meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
