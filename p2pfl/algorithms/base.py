"""What every decentralized algorithm gets injected and the small helpers they share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from p2pfl.algorithms.mixing_kernel import weighted_sum
from p2pfl.config import OptimConfig
from p2pfl.errors import UserError
from p2pfl.exchange import Exchange, PeerId
from p2pfl.models.base import FeatureClassifier
from p2pfl.topologies.dynamic import RoundMixing
from p2pfl.wire import spec_of


@dataclass
class AgentContext:
    """One agent's view of the run: its model, its neighbours' mixing weights, its exchange."""

    agent_id: PeerId
    weights: dict[PeerId, float]  # w_ij for each neighbour j
    self_weight: float  # w_ii
    model: FeatureClassifier
    exchange: Exchange
    optim: OptimConfig
    total_rounds: int
    agents: int
    num_classes: int
    # Whom this round's parameters go to; None: the peers in `weights` (a symmetric graph). A directed round
    # (the one-peer exponential graph) sends to other peers than it mixes in; the agent loop sets all three
    # fields each round when the topology changes per round.
    send_to: tuple[PeerId, ...] | None = None

    def use_round(self, mixing: RoundMixing) -> None:
        """This round's peers and weights, for a topology that changes every round."""
        self.weights, self.self_weight, self.send_to = mixing.weights, mixing.self_weight, mixing.send_to


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return parameters_to_vector(model.parameters()).detach()


def set_flat_params(model: torch.nn.Module, vector: torch.Tensor) -> None:
    vector_to_parameters(vector, model.parameters())


def flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def task_gradient(ctx: "AgentContext", params: torch.Tensor) -> torch.Tensor:
    """The model's .grad, cut to optim.grad_clip in L2 norm when set, plus weight decay: one flat vector.
    Clipping before weight decay and momentum, as torch's clip_grad_norm_ before an optimizer step."""
    g = flat_grad(ctx.model)
    clip = ctx.optim.grad_clip
    if clip > 0:
        norm = torch.linalg.vector_norm(g)
        if norm > clip:
            g = g * (clip / norm)
    return g + ctx.optim.weight_decay * params


def exchange_params(ctx: AgentContext, round_: int, payload: Mapping[str, torch.Tensor],
                    frozen: bool = False) -> dict[PeerId, dict]:
    """Round "params": send `payload` to this round's recipients, return what the peers we mix in sent.
    `frozen`: the caller never changes the payload's tensors afterwards (Exchange.exchange)."""
    if ctx.send_to is None:
        return ctx.exchange.exchange(round_, "params", {j: payload for j in ctx.weights}, frozen=frozen)
    spec = spec_of(payload)  # a directed round: the senders we mix in send what we send
    return ctx.exchange.exchange(round_, "params", {j: payload for j in ctx.send_to}, expect_from=tuple(ctx.weights),
                                 expect={j: spec for j in ctx.weights}, frozen=frozen)


def gossip_average(own: torch.Tensor, received: Mapping[PeerId, torch.Tensor], weights: Mapping[PeerId, float],
                   self_weight: float) -> torch.Tensor:
    """sum_j w_ij x_j over me and the neighbours that answered, renormalised over them.

    Each term is rounded, then added, as `total + w * x` would: the same floats (torch's fused
    `add_(x, alpha=w)` rounds once and would not be). float32 vectors on the host are summed by compiled
    loops (mixing_kernel.py: the same floats, in half the time when warm); the others by torch, with one scratch
    vector instead of two fresh ones per neighbour."""
    peers = sorted(received)
    mass = self_weight
    for peer in peers:
        mass += weights[peer]
    total = weighted_sum(own, self_weight, [received[peer] for peer in peers], [weights[peer] for peer in peers])
    if total is None:
        total = own * self_weight
        scratch = torch.empty_like(total) if peers else None
        for peer in peers:
            total.add_(torch.mul(received[peer], weights[peer], out=scratch))
    return total.div_(mass) if not math.isclose(mass, 1.0, rel_tol=0, abs_tol=1e-12) else total


def learning_rate(optim: OptimConfig, round_: int, total_rounds: int, agents: int) -> float:
    """constant; step (x0.1 at 50% and 75%, the CCL code); warmup (lr*n after a linear warm-up, the QGM code).

    With constant or step, warmup_rounds > 0 ramps the lr linearly from lr/warmup_rounds up to lr over
    the first warmup_rounds rounds (a remedy for early divergence at a high lr, off by default).
    """
    lr = optim.lr * (agents if optim.scale_lr_by_agents else 1)
    if optim.schedule == "warmup" and optim.warmup_rounds > 0 and round_ < optim.warmup_rounds:
        return optim.lr + (lr - optim.lr) * round_ / optim.warmup_rounds
    if optim.schedule in ("step", "warmup"):
        if round_ >= 0.75 * total_rounds:
            return lr * 0.01
        if round_ >= 0.5 * total_rounds:
            return lr * 0.1
    if optim.warmup_rounds > 0 and round_ < optim.warmup_rounds:
        return lr * (round_ + 1) / optim.warmup_rounds
    return lr

