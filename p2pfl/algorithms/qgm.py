"""Quasi-Global Momentum (Lin, Karimireddy, Stich, Jaggi, ICML 2021; ALGORITHMS.md A2).

The momentum buffer tracks the full-iteration displacement (local step plus gossip) instead of
the local gradient alone, so on non-IID data it follows the global direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Self

import torch

from p2pfl.algorithms.base import (AgentContext, exchange_params, flat_params, gossip_average, learning_rate,
                                   set_flat_params)
from p2pfl.algorithms.dsgd import local_gradient
from p2pfl.algorithms.mixing_kernel import step_toward
from p2pfl.algorithms.options import Options
from p2pfl.errors import UserError


@dataclass(frozen=True)
class QuasiGlobalOptions(Options):
    """What QGM and CCL share: the quasi-global buffer's update."""

    variant: str = "lin"  # lin: EMA of the displacement (QGM code) | ccl: undamped (CCL code)
    mu: float = 0.9  # EMA factor of variant lin
    gossip_momentum: bool = False  # also gossip and mix the buffer m_hat

    def checked(self) -> Self:
        if self.variant not in ("lin", "ccl"):
            raise UserError(f"options.variant must be 'lin' (EMA of the displacement, QGM code) or 'ccl' "
                            f"(undamped, CCL code), got {self.variant!r}")
        if not 0 <= self.mu < 1:
            raise UserError(f"options.mu must be in [0, 1), got {self.mu}")
        return self


@dataclass(frozen=True)
class QGMOptions(QuasiGlobalOptions):
    mix_first: bool = False  # gossip first, then the local step (the CCL authors' order)


class QuasiGlobalBuffer:
    """m_hat and its two updates; shared by QGM and CCL."""

    def __init__(self, size_like: torch.Tensor, beta: float, nesterov: bool, variant: str, mu: float):
        self.momentum_hat = torch.zeros_like(size_like)
        self.beta, self.nesterov, self.variant, self.mu = beta, nesterov, variant, mu

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """u = g + beta (beta m_hat + g) with Nesterov, else beta m_hat + g."""
        m_tmp = self.beta * self.momentum_hat + g
        return g + self.beta * m_tmp if self.nesterov else m_tmp

    def correct(self, x_prev: torch.Tensor, half: torch.Tensor, x_new: torch.Tensor, g: torch.Tensor, lr: float,
                mixed_hat: torch.Tensor | None = None) -> None:
        """lin: m_hat <- mu m_hat + (1-mu) (x_t - x_{t+1})/lr; ccl: m_hat <- beta m_hat + g + (x_{t+1/2} - x_{t+1})/lr."""
        base = self.momentum_hat if mixed_hat is None else mixed_hat
        if self.variant == "lin":
            displacement = (x_prev - x_new) / lr
            self.momentum_hat = self.mu * base + (1 - self.mu) * displacement
        else:
            self.momentum_hat = self.beta * base + g + (half - x_new) / lr


def mix_with_step(own: torch.Tensor, received: Mapping[int, torch.Tensor], weights: Mapping[int, float],
                  gamma: float) -> torch.Tensor:
    """x_i + gamma sum_j w_ij (x_j - x_i) over the neighbours that answered (an absent one counts as x_i).
    float32 vectors on the host go through compiled loops (mixing_kernel.step_toward: the same floats)."""
    peers = sorted(received)
    compiled = step_toward(own, [received[peer] for peer in peers], [weights[peer] for peer in peers], gamma)
    if compiled is not None:
        return compiled
    delta = torch.zeros_like(own)
    for peer in peers:
        delta += weights[peer] * (received[peer] - own)
    return own + gamma * delta


@dataclass
class PendingCorrection:
    """What the QGM buffer update needs once the next gossip has produced x_{t+1}."""

    x_prev: torch.Tensor
    g: torch.Tensor
    lr: float


def gossip_then_correct(ctx: AgentContext, buffer: QuasiGlobalBuffer, pending: PendingCorrection | None,
                        round_: int, gamma: float, gossip_momentum: bool) -> dict[int, torch.Tensor]:
    """The CCL authors' order: gossip the model left by the last local step, mix it, then apply that
    step's QGM correction (nothing before the first step); returns the neighbours' parameters."""
    half = flat_params(ctx.model)
    payload = {"params": half}
    if gossip_momentum:
        payload["momentum"] = buffer.momentum_hat
    # Frozen: `half` is a fresh vector and m_hat is replaced, never written into, by the buffer's updates.
    received = exchange_params(ctx, round_, payload, frozen=True)
    neighbour_params = {j: r["params"] for j, r in received.items()}
    x_new = mix_with_step(half, neighbour_params, ctx.weights, gamma)
    if pending is not None:
        mixed_hat = None
        if gossip_momentum:
            mixed_hat = gossip_average(buffer.momentum_hat, {j: r["momentum"] for j, r in received.items()},
                                       ctx.weights, ctx.self_weight)
        buffer.correct(pending.x_prev, half, x_new, pending.g, pending.lr, mixed_hat)
    set_flat_params(ctx.model, x_new)
    return neighbour_params


class QGM:
    """Step then gossip (ALGORITHMS.md A2), or with `mix_first` gossip then step, as in the CCL
    authors' code (where their QGM baseline is their CCL with both lambdas 0): the same iterates,
    but a local model is evaluated after its local step instead of after its mixing."""

    def __init__(self, ctx: AgentContext, options: QGMOptions):
        self.options = options
        self.ctx = ctx
        self.buffer = QuasiGlobalBuffer(flat_params(ctx.model), ctx.optim.momentum, ctx.optim.nesterov,
                                        options.variant, options.mu)
        self.pending: PendingCorrection | None = None

    def step(self, round_: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        if self.options.mix_first:
            return self.step_mix_first(round_, x, y)
        ctx, buffer = self.ctx, self.buffer
        lr = learning_rate(ctx.optim, round_, ctx.total_rounds, ctx.agents)
        params = flat_params(ctx.model)
        g, loss = local_gradient(ctx, x, y, params)
        half = params - lr * buffer.direction(g)
        payload = {"params": half}
        if self.options.gossip_momentum:
            payload["momentum"] = buffer.momentum_hat
        received = exchange_params(ctx, round_, payload, frozen=True)  # as in gossip_then_correct
        x_new = gossip_average(half, {j: r["params"] for j, r in received.items()}, ctx.weights, ctx.self_weight)
        mixed_hat = None
        if self.options.gossip_momentum:
            mixed_hat = gossip_average(buffer.momentum_hat, {j: r["momentum"] for j, r in received.items()},
                                       ctx.weights, ctx.self_weight)
        buffer.correct(params, half, x_new, g, lr, mixed_hat)
        set_flat_params(ctx.model, x_new)
        return {"loss": loss, "lr": lr, "neighbours_heard": len(received)}

    def step_mix_first(self, round_: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        ctx = self.ctx
        lr = learning_rate(ctx.optim, round_, ctx.total_rounds, ctx.agents)
        received = gossip_then_correct(ctx, self.buffer, self.pending, round_, 1.0, self.options.gossip_momentum)
        params = flat_params(ctx.model)
        g, loss = local_gradient(ctx, x, y, params)
        set_flat_params(ctx.model, params - lr * self.buffer.direction(g))
        self.pending = PendingCorrection(params, g, lr)
        return {"loss": loss, "lr": lr, "neighbours_heard": len(received)}

    def state_dict(self) -> dict[str, Any]:
        return {"momentum_hat": self.buffer.momentum_hat, "pending": pending_state(self.pending)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.buffer.momentum_hat = state["momentum_hat"]
        self.pending = load_pending(state.get("pending"))


def pending_state(pending: PendingCorrection | None) -> dict[str, Any] | None:
    return None if pending is None else {"x_prev": pending.x_prev, "g": pending.g, "lr": pending.lr}


def load_pending(state: Mapping[str, Any] | None) -> PendingCorrection | None:
    return None if state is None else PendingCorrection(**state)
