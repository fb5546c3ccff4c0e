"""Local-only (ALGORITHMS.md B1): every client trains its own model on its own data; the
coordinator only collects the accuracies. The floor of the clustered and multi-task comparisons."""

from __future__ import annotations

import numpy as np
import torch

from p2pfl.models.initial import initial_model
from p2pfl.agents.methods.base import (ClientContext, CoordinatorContext, Payload, Spec, TrainEachRound,
                                       make_optimizer, spec, test_metric, train_epochs)


class LocalOnlyCoordinator(TrainEachRound):
    def __init__(self, ctx: CoordinatorContext):
        super().__init__(ctx.config.rounds)

    def request(self, tag: str, round_: int, participants: list[int]) -> dict[int, Payload]:
        go = {"go": torch.ones(1)}
        return {c: go for c in participants}

    def reply_spec(self, tag: str, client: int) -> Spec:
        return spec(accuracy=(1,))

    def absorb(self, tag: str, round_: int, replies: dict[int, Payload], record: dict) -> None:
        if replies:
            record["accuracy"] = float(np.mean([float(r["accuracy"][0]) for r in replies.values()]))

    def final_models(self) -> dict[int, torch.Tensor]:
        return {}  # nothing is shared: the results are the clients' own models

    def final_clusters(self) -> dict[int, int] | None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class LocalOnlyClient(TrainEachRound):
    def __init__(self, ctx: ClientContext):
        super().__init__(ctx.config.rounds)
        self.ctx = ctx
        self.model = initial_model(ctx.config, ctx.dataset).to(ctx.device)
        self.optimizer = make_optimizer(self.model.parameters(), ctx.config.optim, ctx.options.client_optimizer)

    def request_spec(self, tag: str) -> Spec:
        return spec(go=(1,))

    def final_model(self) -> torch.nn.Module:
        return self.model

    def handle(self, tag: str, round_: int, payload: Payload) -> Payload:
        c = self.ctx
        accuracy = torch.tensor([test_metric(self.model, c.x_test, c.y_test)])
        if tag == "train":
            train_epochs(self.model, c.x, c.y, c.options.local_epochs, c.config.optim.batch_size, self.optimizer,
                         c.generator)
        return {"accuracy": accuracy}
