"""Compression operators Q for compressed gossip (CHOCO-SGD), each with its real wire form.

Every operator works on one flat parameter vector cut into the model's tensors ("segments") and
compresses tensor by tensor, as the CHOCO authors' deep-learning code does. `encode` returns the
tensors that travel (indices + values, packed bits, small ints); `decode` rebuilds the dense q.
Shapes depend only on the segments and the options, never on the data, so a receiver knows
exactly what to expect and the exchange rejects anything else. `decode` also checks what the
shapes cannot (an index out of range, a level above s) and raises ValueError: peers are untrusted.
Both work on host tensors (the packing is numpy's); an agent on a GPU moves in and out around them.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np
import torch

from p2pfl.seeds import stream_seed

from p2pfl.errors import UserError

Payload = dict[str, torch.Tensor]


class Compressor(Protocol):
    def encode(self, x: torch.Tensor, round_: int) -> Payload: ...

    def decode(self, payload: Mapping[str, torch.Tensor]) -> torch.Tensor: ...


def round_generator(seed: int, round_: int) -> torch.Generator:
    """Randomness of one agent in one round: reproducible, and nothing to checkpoint."""
    return torch.Generator().manual_seed(stream_seed(seed, "compression", round_))


def pack_bits(bits: np.ndarray) -> torch.Tensor:
    """0/1 values -> uint8, 8 to a byte (numpy.packbits)."""
    return torch.from_numpy(np.packbits(bits.astype(np.uint8)))


def unpack_bits(packed: torch.Tensor, count: int) -> np.ndarray:
    return np.unpackbits(packed.numpy(), count=count)


def pack_uints(values: np.ndarray, width: int) -> torch.Tensor:
    """Small non-negative ints (< 2**width, width <= 8) -> `width` bits each, packed."""
    planes = np.unpackbits(values.astype(np.uint8)[:, None], axis=1)[:, 8 - width:]
    return pack_bits(planes.reshape(-1))


def unpack_uints(packed: torch.Tensor, count: int, width: int) -> np.ndarray:
    planes = unpack_bits(packed, count * width).reshape(count, width)
    return np.packbits(np.pad(planes, ((0, 0), (8 - width, 0))), axis=1).reshape(-1)


class Segmented:
    """The flat vector's cut into the model's tensors: sizes and where each starts."""

    def __init__(self, segments: Sequence[int]):
        self.sizes = [int(s) for s in segments]
        self.offsets = [0, *np.cumsum(self.sizes)[:-1].tolist()]
        self.total = sum(self.sizes)

    def per_element(self, per_segment: torch.Tensor) -> torch.Tensor:
        """One value per tensor spread over its elements."""
        return per_segment.repeat_interleave(torch.tensor(self.sizes))

    def parts(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(x, self.sizes))


class Identity(Segmented):
    """No compression: the float32 difference itself (CHOCO with it is D-PSGD's exact mixing)."""

    def encode(self, x: torch.Tensor, round_: int) -> Payload:
        return {"q": x.to(torch.float32)}

    def decode(self, payload: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return payload["q"].clone()


class Sparse(Segmented):
    """k_t = max(1, floor(ratio d_t)) entries of each tensor, sent as int32 flat indices + float32 values."""

    def __init__(self, segments: Sequence[int], ratio: float):
        super().__init__(segments)
        if self.total >= 2**31:
            raise UserError("sparse compressors index with int32: the model has 2**31 parameters or more")
        self.ks = [max(1, int(ratio * d)) for d in self.sizes]

    def choose(self, part: torch.Tensor, k: int, round_: int) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor, round_: int) -> Payload:
        chosen = [offset + self.choose(part, k, round_)
                  for part, k, offset in zip(self.parts(x), self.ks, self.offsets)]
        indices = torch.cat(chosen)
        return {"indices": indices.to(torch.int32), "values": x[indices].to(torch.float32)}

    def decode(self, payload: Mapping[str, torch.Tensor]) -> torch.Tensor:
        indices = payload["indices"].long()
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.total):
            raise ValueError("sparse message has an index out of range")
        dense = torch.zeros(self.total, dtype=torch.float32)
        dense[indices] = payload["values"]
        return dense


class TopK(Sparse):
    """The k entries of largest magnitude of each tensor."""

    def choose(self, part: torch.Tensor, k: int, round_: int) -> torch.Tensor:
        return torch.topk(part.abs(), k, sorted=False).indices


class RandomK(Sparse):
    """k entries of each tensor drawn uniformly without replacement, seeded by (agent, round); the
    indices travel, so the receiver never needs the sender's seed."""

    def __init__(self, segments: Sequence[int], ratio: float, seed: int):
        super().__init__(segments, ratio)
        self.seed = seed
        self._generator: tuple[int, torch.Generator] | None = None

    def choose(self, part: torch.Tensor, k: int, round_: int) -> torch.Tensor:
        if self._generator is None or self._generator[0] != round_:
            self._generator = (round_, round_generator(self.seed, round_))
        return torch.randperm(part.numel(), generator=self._generator[1])[:k]


class ScaledSign(Segmented):
    """sign(x) ||x||_1 / d per tensor: one packed bit per entry (1 = negative) and one float32 per tensor."""

    def encode(self, x: torch.Tensor, round_: int) -> Payload:
        scales = torch.stack([part.abs().mean() for part in self.parts(x)]).to(torch.float32)
        return {"negative": pack_bits((x < 0).numpy()), "scales": scales}

    def decode(self, payload: Mapping[str, torch.Tensor]) -> torch.Tensor:
        signs = 1.0 - 2.0 * torch.from_numpy(unpack_bits(payload["negative"], self.total)).to(torch.float32)
        return signs * self.per_element(payload["scales"])


class QSGD(Segmented):
    """QSGD with s levels per tensor: ||x||_2, packed sign bits and stochastically rounded levels
    l = floor(s|x|/||x|| + u) in [0, s], packed in bit_length(s) bits each.

    decode is sign ||x|| l / (s tau), tau = 1 + min(d/s^2, sqrt(d)/s): the rescaled (biased) QSGD of
    the CHOCO paper, which makes Q contractive; `rescale=False` gives the unbiased estimate of x.
    """

    def __init__(self, segments: Sequence[int], levels: int, seed: int, rescale: bool = True):
        super().__init__(segments)
        if not 1 <= levels <= 255:
            raise UserError(f"options.levels (s of qsgd) must be in 1..255, got {levels}")
        self.levels, self.seed, self.width = levels, seed, levels.bit_length()
        taus = [1 + min(d / levels**2, math.sqrt(d) / levels) if rescale else 1.0 for d in self.sizes]
        self.tau = self.per_element(torch.tensor(taus, dtype=torch.float32))

    def encode(self, x: torch.Tensor, round_: int) -> Payload:
        norms = torch.stack([part.norm() for part in self.parts(x)]).to(torch.float32)
        spread = self.per_element(norms)
        scaled = torch.where(spread > 0, self.levels * x.abs() / spread.clamp_min(1e-38), torch.zeros_like(x))
        lower = scaled.floor()
        up = torch.rand(x.shape, generator=round_generator(self.seed, round_)) < (scaled - lower)
        levels = (lower + up).clamp(0, self.levels).to(torch.uint8)
        return {"norms": norms, "negative": pack_bits((x < 0).numpy()),
                "levels": pack_uints(levels.numpy(), self.width)}

    def decode(self, payload: Mapping[str, torch.Tensor]) -> torch.Tensor:
        levels = torch.from_numpy(unpack_uints(payload["levels"], self.total, self.width)).to(torch.float32)
        if levels.numel() and float(levels.max()) > self.levels:
            raise ValueError(f"qsgd message has a level above s = {self.levels}")
        signs = 1.0 - 2.0 * torch.from_numpy(unpack_bits(payload["negative"], self.total)).to(torch.float32)
        return signs * self.per_element(payload["norms"]) * levels / (self.levels * self.tau)


# name -> factory(segments, ratio, levels, seed)
COMPRESSORS: dict[str, Callable[[Sequence[int], float, int, int], Compressor]] = {
    "topk": lambda segments, ratio, levels, seed: TopK(segments, ratio),
    "randomk": lambda segments, ratio, levels, seed: RandomK(segments, ratio, seed),
    "sign": lambda segments, ratio, levels, seed: ScaledSign(segments),
    "qsgd": lambda segments, ratio, levels, seed: QSGD(segments, levels, seed),
    "none": lambda segments, ratio, levels, seed: Identity(segments),
}


def build_compressor(name: str, segments: Sequence[int], ratio: float, levels: int, seed: int) -> Compressor:
    if name not in COMPRESSORS:
        raise UserError(f"options.compressor must be one of {', '.join(COMPRESSORS)}, got {name!r}")
    return COMPRESSORS[name](segments, ratio, levels, seed)
