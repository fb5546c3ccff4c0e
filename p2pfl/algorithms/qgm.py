"""Quasi-Global Momentum (Lin, Karimireddy, Stich, Jaggi, ICML 2021; ALGORITHMS.md A2).

The momentum buffer tracks the full-iteration displacement (local step plus gossip) instead of
the local gradient alone, so on non-IID data it follows the global direction.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from p2pfl.algorithms.base import (AgentContext, flat_params, gossip_average, learning_rate, reject_unknown,
                                   set_flat_params)
from p2pfl.algorithms.dsgd import local_gradient
from p2pfl.errors import UserError

QGM_OPTIONS: dict[str, Any] = {"variant": "lin", "mu": 0.9, "gossip_momentum": False}


def check_qgm_options(options: Mapping[str, Any], algorithm: str, extra: Mapping[str, Any] = {}) -> dict[str, Any]:
    merged = reject_unknown(options, {**QGM_OPTIONS, **extra}, algorithm)
    if merged["variant"] not in ("lin", "ccl"):
        raise UserError(f"options.variant must be 'lin' (EMA of the displacement, QGM code) or 'ccl' "
                        f"(undamped, CCL code), got {merged['variant']!r}")
    if not 0 <= merged["mu"] < 1:
        raise UserError(f"options.mu must be in [0, 1), got {merged['mu']}")
    return merged


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


class QGM:
    def __init__(self, ctx: AgentContext, options: Mapping[str, Any]):
        self.options = check_qgm_options(options, "qgm")
        self.ctx = ctx
        self.buffer = QuasiGlobalBuffer(flat_params(ctx.model), ctx.optim.momentum, ctx.optim.nesterov,
                                        self.options["variant"], self.options["mu"])

    @staticmethod
    def check_options(options: Mapping[str, Any]) -> None:
        check_qgm_options(options, "qgm")

    def step(self, round_: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        ctx, buffer = self.ctx, self.buffer
        lr = learning_rate(ctx.optim, round_, ctx.total_rounds, ctx.agents)
        params = flat_params(ctx.model)
        g, loss = local_gradient(ctx, x, y, params)
        half = params - lr * buffer.direction(g)
        payload = {"params": half}
        if self.options["gossip_momentum"]:
            payload["momentum"] = buffer.momentum_hat
        received = ctx.exchange.exchange(round_, "params", {j: payload for j in ctx.weights})
        x_new = gossip_average(half, {j: r["params"] for j, r in received.items()}, ctx.weights, ctx.self_weight)
        mixed_hat = None
        if self.options["gossip_momentum"]:
            mixed_hat = gossip_average(buffer.momentum_hat, {j: r["momentum"] for j, r in received.items()},
                                       ctx.weights, ctx.self_weight)
        buffer.correct(params, half, x_new, g, lr, mixed_hat)
        set_flat_params(ctx.model, x_new)
        return {"loss": loss, "lr": lr, "neighbours_heard": len(received)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"momentum_hat": self.buffer.momentum_hat}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.buffer.momentum_hat = state["momentum_hat"]
