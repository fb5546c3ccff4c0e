"""Offline datasets and partitioners; each agent keeps only its own shard."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from p2pfl.data.cache import cache_key, cached, source_stamp, take_rows
from p2pfl.data.cifar import load_cifar10, load_torchvision
from p2pfl.data.dataset import ArrayDataset
from p2pfl.data.normalize import normalized
from p2pfl.data.order import Shuffler, SeededShuffler
from p2pfl.data.partition import partition
from p2pfl.data.sources import load_digits, load_fashion_mnist, load_npz
from p2pfl.errors import UserError

LOADERS: dict[str, Callable[[str | None, str], ArrayDataset]] = {
    "digits": lambda path, _: load_digits(),
    "fashion-mnist": lambda path, _: load_fashion_mnist(path),
    "npz": lambda path, _: load_npz(path),
    "cifar10": lambda path, _: load_cifar10(path),
    "torchvision": lambda path, name: load_torchvision(name, path),
}
DATASETS = tuple(LOADERS)


def load_dataset(name: str, path: str | None = None, torchvision_name: str = "CIFAR10", normalize: str = "zscore",
                 mean: float = 0.5, std: float = 0.5) -> ArrayDataset:
    """Prepared once into the dataset cache (p2pfl.data.cache), then memory-mapped by every agent."""
    if name not in LOADERS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    key = cache_key(name=name, source=source_stamp(path), torchvision_name=torchvision_name if name == "torchvision"
                    else None, normalize=normalize, mean=mean if normalize == "fixed" else None,
                    std=std if normalize == "fixed" else None, sklearn=sklearn_version() if name == "digits" else None)
    return cached(key, lambda: normalized(LOADERS[name](path, torchvision_name), normalize, mean, std))


def sklearn_version() -> str:
    """From the installed distribution's metadata: importing sklearn for its version took 1.4-1.8 s of every
    agent process's start on a slow core, for a data set that is then read from the cache."""
    return importlib.metadata.version("scikit-learn")


@dataclass
class Shard:
    """One agent's training data (tensors) and the shared test set."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return len(self.y)


# The split last drawn in this process, kept with the labels it was drawn from: the agents of a packed worker
# share one dataset, and each would otherwise draw every agent's split again (5-6 ms for Fashion-MNIST's 60,000
# labels on a slow core, times the agents of the worker, in its start-up).
_last_split: tuple[np.ndarray, tuple, list[np.ndarray]] | None = None


def shared_split(labels: np.ndarray, agents: int, scheme: str, alpha: float, seed: int) -> list[np.ndarray]:
    """partition(...), drawn once per process for the same labels (the same read-only array) and settings."""
    global _last_split
    settings, last = (agents, scheme, alpha, seed), _last_split
    if last is None or last[0] is not labels or last[1] != settings:
        last = _last_split = (labels, settings, partition(labels, agents, scheme, alpha, seed))
    return last[2]


def agent_shard(dataset: ArrayDataset, agent: int, agents: int, scheme: str, alpha: float, seed: int) -> Shard:
    """Agent `agent`'s shard; every agent derives the same split from the seed, no coordination."""
    indices = shared_split(dataset.y_train, agents, scheme, alpha, seed)[agent]
    return Shard(torch.from_numpy(take_rows(dataset.x_train, indices)),
                 torch.from_numpy(dataset.y_train[indices]),
                 torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test), dataset.num_classes)


class BatchStream:
    """Endless shuffled mini-batches from one shard, a new permutation each epoch.

    drop_last=False keeps an epoch's last, smaller batch (a DataLoader's default: 3,750 samples
    at batch 32 give 118 batches, the last of 6); True skips it (117 full batches).
    """

    def __init__(self, shard: Shard, batch_size: int, seed: int = 0, drop_last: bool = True,
                 shuffler: Shuffler | None = None):
        self.shard, self.batch_size, self.drop_last = shard, min(batch_size, len(shard)), drop_last
        self.shuffler = shuffler or SeededShuffler(seed)
        self.order = torch.empty(0, dtype=torch.long)
        self.position = 0
        self.epoch = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        left = len(self.order) - self.position
        if left <= 0 or (self.drop_last and left < self.batch_size):
            self.order = self.shuffler.permutation(len(self.shard))
            self.position = 0
            self.epoch += 1
        idx = self.order[self.position:self.position + self.batch_size]
        self.position += len(idx)
        return self.shard.x[idx], self.shard.y[idx]

    def state(self) -> dict:
        return {"generator": self.shuffler.generator.get_state(), "order": self.order, "position": self.position,
                "epoch": self.epoch}

    def load_state(self, state: dict) -> None:
        self.shuffler.generator.set_state(state["generator"])
        self.order, self.position, self.epoch = state["order"], state["position"], state["epoch"]
