"""Received tensors on the agent's device.

The wire decodes into CPU tensors (and `encode` copies device tensors to the host), so an agent
training on a GPU would mix CPU neighbours into CUDA parameters. This adapter sits at the seam
between the runtime and the algorithm: the algorithms see neighbours' tensors where their model is,
and the exchange stays device-agnostic.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from p2pfl.exchange import Exchange, Expected, PeerId, TensorMap


def on_device(received: Mapping[PeerId, Mapping[str, torch.Tensor]],
              device: torch.device) -> dict[PeerId, dict[str, torch.Tensor]]:
    return {peer: {name: t.to(device, non_blocking=True) for name, t in tensors.items()}
            for peer, tensors in received.items()}


class DeviceExchange:
    """An Exchange whose received tensors land on `device`; everything else is the wrapped exchange's."""

    def __init__(self, inner: Exchange, device: torch.device):
        self.inner, self.device = inner, device

    @property
    def stats(self):
        return self.inner.stats

    def exchange(self, round: int, tag: str, outbox: Mapping[PeerId, TensorMap], *,
                 expect_from: Iterable[PeerId] | None = None, expect: Mapping[PeerId, Expected] | None = None,
                 timeout: float | None = None, frozen: bool = False) -> dict[PeerId, dict[str, torch.Tensor]]:
        return on_device(self.inner.exchange(round, tag, outbox, expect_from=expect_from, expect=expect,
                                             timeout=timeout, frozen=frozen), self.device)

    def send(self, round: int, tag: str, outbox: Mapping[PeerId, TensorMap], *, frozen: bool = False) -> None:
        self.inner.send(round, tag, outbox, frozen=frozen)

    def collect(self, round: int, tag: str, peers: Iterable[PeerId], *,
                expect: Mapping[PeerId, Expected] | None = None,
                timeout: float | None = None) -> dict[PeerId, dict[str, torch.Tensor]]:
        return on_device(self.inner.collect(round, tag, peers, expect=expect, timeout=timeout), self.device)

    def latest_round(self, peer: PeerId) -> int:
        return self.inner.latest_round(peer)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str):  # transport-specific extras (peers, down, mark_down, ...) pass through
        return getattr(self.inner, name)
