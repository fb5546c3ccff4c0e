"""D-PSGD and DSGDm(-N): local SGD step with (Nesterov) momentum, then gossip (ALGORITHMS.md A1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F

from p2pfl.algorithms.base import (AgentContext, exchange_params, flat_params, gossip_average, learning_rate,
                                   set_flat_params, task_gradient)
from p2pfl.algorithms.options import Options


@dataclass(frozen=True)
class DSGDOptions(Options):
    mix_first: bool = False  # gossip first, then the local step (the CCL authors' order)


@dataclass(frozen=True)
class LocalOptions(Options):
    """Local steps only: nothing to set."""


def local_gradient(ctx: AgentContext, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor,
                   loss_fn=None) -> tuple[torch.Tensor, float]:
    """g = grad CE(x_i; batch) (clipped if asked) + lambda x_i, weight decay on every parameter, as one flat vector."""
    ctx.model.zero_grad(set_to_none=False)
    loss = loss_fn(x, y) if loss_fn else F.cross_entropy(ctx.model(x), y)
    loss.backward()
    return task_gradient(ctx, params), float(loss.detach())


class DSGD:
    """x_{t+1/2} = x - lr u, u in {g, m, g + beta m}; x_{t+1} = sum_j w_ij x_j^{t+1/2}.

    `mix_first` gossips first and steps after, as the CCL authors' code does for every algorithm:
    the same iterates, but a local model is evaluated after its local step, not after its mixing.
    """

    def __init__(self, ctx: AgentContext, options: DSGDOptions | LocalOptions, momentum: bool = True, nesterov: bool = True):
        self.options = options
        self.ctx = ctx
        self.beta = ctx.optim.momentum if momentum else 0.0
        self.nesterov = nesterov
        self.momentum = torch.zeros_like(flat_params(ctx.model))

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        if self.beta == 0:
            return g
        self.momentum = self.beta * self.momentum + g
        return g + self.beta * self.momentum if self.nesterov else self.momentum

    def local_step(self, round_: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        """x_{t+1/2} = x - lr u, with the loss and the learning rate of this round."""
        lr = learning_rate(self.ctx.optim, round_, self.ctx.total_rounds, self.ctx.agents)
        params = flat_params(self.ctx.model)
        g, loss = local_gradient(self.ctx, x, y, params)
        return params - lr * self.direction(g), loss, lr

    def gossip(self, round_: int, own: torch.Tensor | None = None) -> int:
        """x <- sum_j w_ij x_j over the neighbours that answered; returns how many did. `own`: the vector the
        model would hold (the half step), so it need not be written into the model and read back first."""
        ctx = self.ctx
        own = flat_params(ctx.model) if own is None else own
        # Frozen: `own` is a vector of its own (the half step, or flat_params' fresh copy) that nothing here
        # changes afterwards; the mixing below reads it and writes a new one.
        received = exchange_params(ctx, round_, {"params": own}, frozen=True)
        set_flat_params(ctx.model, gossip_average(own, {j: r["params"] for j, r in received.items()}, ctx.weights,
                                                  ctx.self_weight))
        return len(received)

    def step(self, round_: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        if self.options.mix_first:
            heard = self.gossip(round_)
            half, loss, lr = self.local_step(round_, x, y)
            set_flat_params(self.ctx.model, half)
        else:
            half, loss, lr = self.local_step(round_, x, y)
            heard = self.gossip(round_, own=half)
        return {"loss": loss, "lr": lr, "neighbours_heard": heard}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"momentum": self.momentum}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.momentum = state["momentum"]


class LocalOnly(DSGD):
    """The same local steps with no communication: the floor of accuracy, the ceiling of speed."""

    def step(self, round_: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        half, loss, lr = self.local_step(round_, x, y)
        set_flat_params(self.ctx.model, half)
        return {"loss": loss, "lr": lr, "neighbours_heard": 0}
