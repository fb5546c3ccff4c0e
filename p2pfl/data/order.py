"""Where each epoch's sample order comes from.

`SeededShuffler` is p2pfl's own: one generator per agent, seeded from the run seed and the agent
id. `ReferenceShuffler` replays the stream of the CCL authors' trainer (a torch DataLoader with
shuffle=True over the agent's shard and a global RNG seeded with the run seed in every process):
per epoch the training loader's iterator draws its base seed, then its RandomSampler draws the
seed of the epoch's permutation, then the evaluation loader's iterator draws one more base seed.
Its starting state is the global RNG after the model's initialisation (see
agents.agent.reference_rng_state), so the same seed gives the reference's batches.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Shuffler(Protocol):
    generator: torch.Generator

    def permutation(self, n: int) -> torch.Tensor: ...


class SeededShuffler:
    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def permutation(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.generator)


def _draw_seed(generator: torch.Generator) -> int:
    """One int64 draw, as a DataLoader iterator or a RandomSampler makes from the global RNG."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


class ReferenceShuffler:
    def __init__(self, rng_state: torch.Tensor):
        self.generator = torch.Generator()
        self.generator.set_state(rng_state)

    def permutation(self, n: int) -> torch.Tensor:
        _draw_seed(self.generator)  # the training iterator's base seed
        epoch_seed = _draw_seed(self.generator)  # RandomSampler's
        _draw_seed(self.generator)  # the evaluation iterator's base seed, after the epoch
        return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed))
