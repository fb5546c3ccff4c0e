"""CP-CFL (ALGORITHMS.md B3): IFCA whose K models share an encoder pre-trained contrastively first,
either federated ("pretrain" rounds: FedAvg of encoder and projection head over the clients'
unlabeled data) or on the coordinator's own unlabeled sample before round 0."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from p2pfl.agents.methods.base import (ClientContext, CoordinatorContext, Payload, Spec, n_of, params_of, spec,
                                       train_epochs)
from p2pfl.agents.methods.clustered import ClusteredClient, IFCACoordinator, seeded_model
from p2pfl.algorithms.base import set_flat_params
from p2pfl.algorithms.contrastive import augment, nt_xent
from p2pfl.algorithms.federated import weighted_average
from p2pfl.algorithms.method_options import CPCFLOptions
from p2pfl.config import RunConfig
from p2pfl.data.clusters import transform
from p2pfl.models.contrastive import ContrastiveNet, contrastive_net
from p2pfl.seeds import stream_seed


def pretrain_epochs(net: ContrastiveNet, x: torch.Tensor, options: CPCFLOptions, config: RunConfig, epochs: int,
                    generator: torch.Generator) -> float:
    """NT-Xent over two augmented views of each unlabeled image."""
    def loss(model: nn.Module, xb: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        views = [augment(xb, generator, options.augment_shift, options.augment_noise, options.augment_erase)
                 for _ in range(2)]
        return nt_xent(model(views[0]), model(views[1]), options.temperature)

    optimizer = torch.optim.Adam(net.parameters(), lr=config.optim.lr)
    return train_epochs(net, x, torch.zeros(len(x)), epochs, max(2, config.optim.batch_size), optimizer, generator, loss)


def federated_pretrain_rounds(options: CPCFLOptions) -> int:
    """Rounds of federated contrastive pre-training before the clustered rounds (none when the
    coordinator pre-trains on its own sample)."""
    return options.pretrain_rounds if options.pretrain_mode == "federated" else 0


class CPCFLCoordinator(IFCACoordinator):
    def __init__(self, ctx: CoordinatorContext):
        super().__init__(ctx)
        self.encoder = params_of(contrastive_net(ctx.config, ctx.dataset, ctx.options.projection_dim))
        if ctx.options.pretrain_mode == "coordinator":
            self.pretrain_on_coordinator()

    @classmethod
    def rounds_before(cls, options: CPCFLOptions) -> int:
        return federated_pretrain_rounds(options)

    def unlabeled_pool(self) -> torch.Tensor:
        """The coordinator's own unlabeled set: a sample of images under every cluster's transformation."""
        config, options, dataset = self.ctx.config, self.ctx.options, self.ctx.dataset
        rng = np.random.default_rng(stream_seed(config.seed, "coordinator-pool"))
        clusters = options.clusters
        parts = []
        for cluster in range(clusters):
            picked = rng.choice(len(dataset.y_train), options.coordinator_samples // clusters, replace=False)
            parts.append(transform(options.cluster_kind, cluster, dataset.x_train[picked], dataset.y_train[picked],
                                   dataset.num_classes, config.seed)[0])
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(parts)))

    def pretrain_on_coordinator(self) -> None:
        config, options = self.ctx.config, self.ctx.options
        net = contrastive_net(config, self.ctx.dataset, options.projection_dim)
        generator = torch.Generator().manual_seed(stream_seed(config.seed, "coordinator-pretrain"))
        pretrain_epochs(net, self.unlabeled_pool(), options, config,
                        options.pretrain_rounds * options.pretrain_epochs, generator)
        self.encoder = params_of(net)
        self.install_encoder()

    def install_encoder(self) -> None:
        """The K cluster models share the pre-trained encoder; each gets its own random head, or with
        init: identical the run's one head, so that the K models start equal as IFCA's and CLoVE's do."""
        config, dataset = self.ctx.config, self.ctx.dataset
        identical = self.ctx.options.init == "identical"
        models = []
        for k in range(len(self.models)):
            model = seeded_model(config, dataset, k, identical)
            body = parameters_to_vector(model.body.parameters()).numel()
            vector_to_parameters(self.encoder[:body].clone(), model.body.parameters())
            models.append(params_of(model))
        self.models = models

    def request(self, tag: str, round_: int, participants: list[int]) -> dict[int, Payload]:
        if tag != "pretrain":
            return super().request(tag, round_, participants)
        payload = {"encoder": self.encoder}
        return {c: payload for c in participants}

    def reply_spec(self, tag: str, client: int) -> Spec:
        if tag != "pretrain":
            return super().reply_spec(tag, client)
        return spec(encoder=(len(self.encoder),), n=(1,), loss=(1,))

    def absorb(self, tag: str, round_: int, replies: dict[int, Payload], record: dict) -> None:
        if tag != "pretrain":
            return super().absorb(tag, round_, replies, record)
        if replies:
            self.encoder = weighted_average([r["encoder"] for r in replies.values()],
                                            [float(r["n"][0]) for r in replies.values()])
            record["pretrain_loss"] = float(np.mean([float(r["loss"][0]) for r in replies.values()]))
            if round_ == self.pretrain_rounds - 1:
                self.install_encoder()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "encoder": self.encoder}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.encoder = state["encoder"]


class CPCFLClient(ClusteredClient):
    def __init__(self, ctx: ClientContext):
        super().__init__(ctx)
        self.net = contrastive_net(ctx.config, ctx.dataset, ctx.options.projection_dim).to(ctx.device)
        self.specs["pretrain"] = spec(encoder=(len(params_of(self.net)),))

    @classmethod
    def rounds_before(cls, options: CPCFLOptions) -> int:
        return federated_pretrain_rounds(options)

    def handle(self, tag: str, round_: int, payload: Payload) -> Payload:
        if tag != "pretrain":
            return super().handle(tag, round_, payload)
        c = self.ctx
        set_flat_params(self.net, payload["encoder"].clone())
        loss = pretrain_epochs(self.net, c.x, c.options, c.config, c.options.pretrain_epochs, c.generator)
        return {"encoder": params_of(self.net), "n": n_of(c.x), "loss": torch.tensor([loss])}
