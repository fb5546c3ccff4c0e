"""Cross-feature Contrastive Loss on top of QGM (Aketi & Roy, WACV 2024; ALGORITHMS.md A3).

Two communication rounds per iteration: the parameters, then, per neighbour j, the class-wise sums
of my batch's features under j's model with my class counts (C x d + C floats). Both terms are
mean-squared errors with detached targets, as in the authors' released code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Self

import torch
import torch.nn.functional as F

from p2pfl.algorithms.base import AgentContext, flat_params, learning_rate, set_flat_params, task_gradient
from p2pfl.algorithms.qgm import (PendingCorrection, QuasiGlobalBuffer, QuasiGlobalOptions, gossip_then_correct,
                                 load_pending, pending_state)
from p2pfl.errors import UserError
from p2pfl.wire import spec_of


@dataclass(frozen=True)
class CCLOptions(QuasiGlobalOptions):
    lambda_m: float = 0.1  # weight of the model-variant term
    lambda_d: float = 0.1  # weight of the data-variant term
    gamma: float = 1.0  # consensus step size of the mixing
    align_clip: float = 0.0  # > 0: alignment differences beyond this count linearly (0: plain MSE)

    def checked(self) -> Self:
        super().checked()
        if self.align_clip < 0:
            raise UserError(f"options.align_clip must be >= 0 (0: plain MSE), got {self.align_clip}")
        return self


def alignment(features: torch.Tensor, targets: torch.Tensor, clip: float) -> torch.Tensor:
    """MSE, the authors' alignment term; with clip > 0, elements further apart than clip count
    linearly (2 clip |d| - clip^2, twice the Huber loss), so one wild neighbour cannot blow up the step."""
    if clip <= 0:
        return F.mse_loss(features, targets)
    return 2 * F.huber_loss(features, targets, delta=clip)


def class_sums(features: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """S[c] = sum of the feature rows whose label is c (C x d)."""
    sums = torch.zeros(classes, features.shape[1], dtype=features.dtype, device=features.device)
    return sums.index_add_(0, labels, features)


def class_counts(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.bincount(labels, minlength=classes).to(torch.float32)


def class_means(sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z_bar[c] = sums[c] / counts[c] where counts[c] > 0; the mask says which classes have a target."""
    mask = counts > 0
    means = torch.zeros_like(sums)
    means[mask] = sums[mask] / counts[mask].unsqueeze(1)
    return means, mask


class CCL:
    def __init__(self, ctx: AgentContext, options: CCLOptions):
        self.options = options
        self.ctx = ctx
        self.buffer = QuasiGlobalBuffer(flat_params(ctx.model), ctx.optim.momentum, ctx.optim.nesterov,
                                        options.variant, options.mu)
        self.shadow = copy.deepcopy(ctx.model).requires_grad_(False)  # holds a neighbour's x_j for forwards
        self.pending: PendingCorrection | None = None

    def gossip_params(self, round_: int) -> dict[int, torch.Tensor]:
        """Round "params": mix, apply the pending QGM correction, return the neighbours' x_j."""
        return gossip_then_correct(self.ctx, self.buffer, self.pending, round_, self.options.gamma,
                                   self.options.gossip_momentum)

    def loss(self, round_: int, x: torch.Tensor, y: torch.Tensor,
             neighbour_params: Mapping[int, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """CE + lambda_m sum_j MSE(f_i, f_i|j) + lambda_d MSE(f_i, z_bar[y]), with round "features" inside."""
        ctx, classes = self.ctx, self.ctx.num_classes
        features = ctx.model.features(x)
        ce = F.cross_entropy(ctx.model.head(features), y)
        counts = class_counts(y, classes)
        cross: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for peer, params in sorted(neighbour_params.items()):
                set_flat_params(self.shadow, params)
                cross[peer] = self.shadow.features(x)
        outbox = {peer: {"sums": class_sums(f, y, classes), "counts": counts} for peer, f in cross.items()}
        if ctx.send_to is None:
            received = ctx.exchange.exchange(round_, "features", outbox)
        else:  # a directed round: sums go back to whom we heard from, ours come from whom we sent our model to
            spec = spec_of({"sums": class_sums(features.detach(), y, classes), "counts": counts})
            received = ctx.exchange.exchange(round_, "features", outbox, expect_from=ctx.send_to,
                                             expect={j: spec for j in ctx.send_to})
        device = features.device
        sums = class_sums(features.detach(), y, classes) + sum((r["sums"] for r in received.values()),
                                                               torch.zeros(classes, features.shape[1], device=device))
        totals = counts + sum((r["counts"] for r in received.values()), torch.zeros(classes, device=device))
        targets, has_target = class_means(sums, totals)
        clip = self.options.align_clip
        model_term = sum((alignment(features, f, clip) for f in cross.values()), torch.zeros((), device=device))
        rows = has_target[y]
        data_term = alignment(features[rows], targets[y][rows], clip) if rows.any() else torch.zeros((), device=device)
        total = ce + self.options.lambda_m * model_term + self.options.lambda_d * data_term
        return total, {"ce": float(ce.detach()), "model_term": float(model_term.detach()),
                       "data_term": float(data_term.detach())}

    def step(self, round_: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        ctx = self.ctx
        lr = learning_rate(ctx.optim, round_, ctx.total_rounds, ctx.agents)
        neighbour_params = self.gossip_params(round_)
        params = flat_params(ctx.model)
        ctx.model.zero_grad(set_to_none=False)
        loss, parts = self.loss(round_, x, y, neighbour_params)
        loss.backward()
        g = task_gradient(ctx, params)
        set_flat_params(ctx.model, params - lr * self.buffer.direction(g))
        self.pending = PendingCorrection(params, g, lr)
        return {"loss": float(loss.detach()), "lr": lr, "neighbours_heard": len(neighbour_params), **parts}

    def state_dict(self) -> dict[str, Any]:
        return {"momentum_hat": self.buffer.momentum_hat, "pending": pending_state(self.pending)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.buffer.momentum_hat = state["momentum_hat"]
        self.pending = load_pending(state["pending"])
