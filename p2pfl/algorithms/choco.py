"""CHOCO-SGD (Koloskova, Stich, Jaggi, ICML 2019, Algorithm 2): gossip with compressed messages.

Each agent keeps its model x_i, its public copy x_hat_i and a copy x_hat_j of each neighbour's.
Per round (the paper's order):
  x^{t+1/2} = x - lr u                         (local step; u as DSGDm-N's, or g without momentum)
  q_i = Q(x^{t+1/2} - x_hat_i), sent to every neighbour
  x_hat_j += q_j for me and each neighbour
  x^{t+1} = x^{t+1/2} + gamma sum_j w_ij (x_hat_j - x_hat_i)
Public copies start at 0 (the paper). Only q travels, in the compressor's wire form.

A copy x_hat_j is exact only if every q_j reached us: one lost message leaves it off by that q_j
for good, and mixing with it would push the models by a constant every round. So a neighbour
missed once (absent, or a message that fails its checks) is left out of the mixing from then on
(reported as `stale_neighbours`); we still send it our q so its copy of us stays exact. An agent
resumed from a checkpoint has missed every q since, so it marks all its neighbours stale (and they it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Self

import torch

from p2pfl.algorithms.base import AgentContext, flat_params, set_flat_params
from p2pfl.algorithms.compressors import COMPRESSORS, build_compressor
from p2pfl.algorithms.dsgd import DSGD
from p2pfl.algorithms.options import Options
from p2pfl.errors import UserError

log = logging.getLogger("p2pfl.choco")


@dataclass(frozen=True)
class ChocoOptions(Options):
    gamma: float = 0.5  # consensus step size
    compressor: str = "sign"  # what Q is (COMPRESSORS)
    ratio: float = 0.01  # fraction kept by topk / randomk
    levels: int = 15  # s of qsgd

    def checked(self) -> Self:
        if self.compressor not in COMPRESSORS:
            raise UserError(f"options.compressor must be one of {', '.join(COMPRESSORS)}, got {self.compressor!r}")
        if not 0 < self.gamma <= 1:
            raise UserError(f"options.gamma (consensus step size) must be in (0, 1], got {self.gamma}")
        if not 0 < self.ratio <= 1:
            raise UserError(f"options.ratio (fraction kept by topk/randomk) must be in (0, 1], got {self.ratio}")
        if not 1 <= self.levels <= 255:
            raise UserError(f"options.levels (s of qsgd) must be in 1..255, got {self.levels}")
        return self


class Choco(DSGD):
    """CHOCO-SGD; the local step uses optim.momentum / optim.nesterov like DSGDm(-N)."""

    def __init__(self, ctx: AgentContext, options: ChocoOptions):
        self.options = options
        self.ctx = ctx
        self.beta, self.nesterov = ctx.optim.momentum, ctx.optim.nesterov
        self.momentum = torch.zeros_like(flat_params(ctx.model))
        self.compressor = build_compressor(self.options.compressor, [p.numel() for p in ctx.model.parameters()],
                                           self.options.ratio, self.options.levels, seed=ctx.agent_id)
        self.hat_self = torch.zeros_like(self.momentum)
        self.hats = {j: torch.zeros_like(self.momentum) for j in ctx.weights}
        self.stale: set[int] = set()
        self.next_round = 0

    def step(self, round_: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        ctx = self.ctx
        if round_ != self.next_round:  # resumed from a checkpoint: the q's of the rounds in between are lost
            self.mark_stale(set(ctx.weights), f"rounds {self.next_round}..{round_ - 1} skipped")
        self.next_round = round_ + 1
        half, loss, lr = self.local_step(round_, x, y)
        payload = self.compressor.encode((half - self.hat_self).cpu(), round_)
        received = ctx.exchange.exchange(round_, "choco", {j: payload for j in ctx.weights})
        self.hat_self += self.compressor.decode(payload).to(half.device)
        for j in ctx.weights:
            try:
                if j not in received:
                    raise ValueError(f"no message in round {round_}")
                # the compressors pack with numpy, on the host: a GPU agent's exchange hands over device tensors
                host = {name: tensor.cpu() for name, tensor in received[j].items()}
                self.hats[j] += self.compressor.decode(host).to(half.device)
            except ValueError as exc:
                self.mark_stale({j}, str(exc))
        pull = torch.zeros_like(half)
        for j in sorted(set(ctx.weights) - self.stale):
            pull += ctx.weights[j] * (self.hats[j] - self.hat_self)
        set_flat_params(ctx.model, half + self.options.gamma * pull)
        return {"loss": loss, "lr": lr, "neighbours_heard": len(received), "stale_neighbours": len(self.stale)}

    def mark_stale(self, peers: set[int], why: str) -> None:
        for j in sorted(peers - self.stale):
            log.warning("agent %s: copy of neighbour %s is stale (%s); no longer mixed with it",
                        self.ctx.agent_id, j, why)
        self.stale |= peers

    def state_dict(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "hat_self": self.hat_self, "hats": dict(self.hats),
                "stale": sorted(self.stale), "next_round": self.next_round}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.momentum, self.hat_self = state["momentum"], state["hat_self"]
        self.hats = dict(state["hats"])
        self.stale, self.next_round = set(state["stale"]), state["next_round"]
