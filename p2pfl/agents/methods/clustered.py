"""FedAvg, IFCA, CLoVE and CP-CFL (ALGORITHMS.md B1-B3) as one strategy: K models; each round the
clients score every model on their training data ("evaluate"), the coordinator assigns each client
a model, the assigned models are trained E local epochs ("train") and averaged per model. CP-CFL
first pre-trains the shared encoder contrastively ("pretrain" rounds, or on the coordinator).
"""

from __future__ import annotations


import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from p2pfl.models.initial import initial_model
from p2pfl.agents.methods.base import (ClientContext, CoordinatorContext, Payload, Spec, make_optimizer, mean_loss,
                                       n_of, params_of, spec, test_metric, train_epochs)
from p2pfl.algorithms.base import set_flat_params
from p2pfl.algorithms.contrastive import augment, nt_xent
from p2pfl.algorithms.federated import (StabilityTracker, aggregate_per_model, clove_assign, ifca_assign,
                                        random_assignment, weighted_average)
from p2pfl.config import RunConfig
from p2pfl.data.clusters import transform
from p2pfl.data.dataset import ArrayDataset
from p2pfl.seeds import stream_seed


def seeded_model(config: RunConfig, dataset: ArrayDataset, k: int, identical: bool) -> nn.Module:
    """Cluster model k: the run's initial model (init: identical), else its own random start."""
    return initial_model(config, dataset, None if identical else stream_seed(config.seed, "cluster-model", k))


class ContrastiveNet(nn.Module):
    """Encoder f (the model's body) + projection head g (2-layer MLP): z = g(f(x))."""

    def __init__(self, model: nn.Module, projection_dim: int):
        super().__init__()
        self.body = model.body
        d = model.feature_dim
        self.projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, projection_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.body(x))


def contrastive_net(config: RunConfig, dataset: ArrayDataset, projection_dim: int) -> ContrastiveNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(config.seed, "projection-head"))
        return ContrastiveNet(initial_model(config, dataset), projection_dim)


def pretrain_epochs(net: ContrastiveNet, x: torch.Tensor, options: dict, config: RunConfig, epochs: int,
                    generator: torch.Generator) -> float:
    """NT-Xent over two augmented views of each unlabeled image."""
    def loss(model: nn.Module, xb: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        views = [augment(xb, generator, options["augment_shift"], options["augment_noise"], options["augment_erase"])
                 for _ in range(2)]
        return nt_xent(model(views[0]), model(views[1]), options["temperature"])

    optimizer = torch.optim.Adam(net.parameters(), lr=config.optim.lr)
    return train_epochs(net, x, torch.zeros(len(x)), epochs, max(2, config.optim.batch_size), optimizer, generator, loss)


def nearest_centroid(loss_vector: np.ndarray, centroids: dict[int, np.ndarray]) -> int:
    return min(centroids, key=lambda m: float(np.linalg.norm(loss_vector - centroids[m])))


def pretrain_rounds(config: RunConfig, options: dict) -> int:
    """Rounds of federated contrastive pre-training before the clustered rounds (CP-CFL only)."""
    federated = config.algorithm == "cpcfl" and options["pretrain_mode"] == "federated"
    return options["pretrain_rounds"] if federated else 0


class ClusteredSchedule:
    def __init__(self, config: RunConfig, options: dict):
        self.method = config.algorithm
        self.pretrain_rounds = pretrain_rounds(config, options)
        self.total_rounds = config.rounds + self.pretrain_rounds

    def phases(self, round_: int) -> tuple[str, ...]:
        if round_ == self.total_rounds:
            return ("evaluate",)  # the final models, scored once more
        return ("pretrain",) if round_ < self.pretrain_rounds else ("evaluate", "train")


class ClusteredCoordinator(ClusteredSchedule):
    def __init__(self, ctx: CoordinatorContext):
        super().__init__(ctx.config, ctx.options)
        self.ctx, config, options = ctx, ctx.config, ctx.options
        identical = options["init"] == "identical"
        self.models = [params_of(seeded_model(config, ctx.dataset, k, identical)) for k in range(options["models"])]
        self.rng = np.random.default_rng(stream_seed(config.seed, "assignment"))
        self.stability = StabilityTracker(options.get("patience", 3))
        self.assignment: dict[int, int] = {}  # last known model of every client
        self.training: dict[int, int] = {}  # this round's assignment
        self.centroids: dict[int, np.ndarray] = {}  # CLoVE: mean loss vector of each model's clients
        if self.method == "cpcfl":
            self.encoder = params_of(contrastive_net(config, ctx.dataset, options["projection_dim"]))
            if options["pretrain_mode"] == "coordinator":
                self.pretrain_on_coordinator()

    # -- CP-CFL --------------------------------------------------------------------------
    def unlabeled_pool(self) -> torch.Tensor:
        """The coordinator's own unlabeled set: a sample of images under every cluster's transformation."""
        config, options, dataset = self.ctx.config, self.ctx.options, self.ctx.dataset
        rng = np.random.default_rng(stream_seed(config.seed, "coordinator-pool"))
        clusters = options["clusters"]
        parts = []
        for cluster in range(clusters):
            picked = rng.choice(len(dataset.y_train), options["coordinator_samples"] // clusters, replace=False)
            parts.append(transform(options["cluster_kind"], cluster, dataset.x_train[picked], dataset.y_train[picked],
                                   dataset.num_classes, config.seed)[0])
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(parts)))

    def pretrain_on_coordinator(self) -> None:
        config, options = self.ctx.config, self.ctx.options
        net = contrastive_net(config, self.ctx.dataset, options["projection_dim"])
        generator = torch.Generator().manual_seed(stream_seed(config.seed, "coordinator-pretrain"))
        pretrain_epochs(net, self.unlabeled_pool(), options, config,
                        options["pretrain_rounds"] * options["pretrain_epochs"], generator)
        self.encoder = params_of(net)
        self.install_encoder()

    def install_encoder(self) -> None:
        """The K cluster models share the pre-trained encoder; each keeps its own random head."""
        config, dataset = self.ctx.config, self.ctx.dataset
        models = []
        for k in range(len(self.models)):
            model = seeded_model(config, dataset, k, identical=False)
            body = parameters_to_vector(model.body.parameters()).numel()
            vector_to_parameters(self.encoder[:body].clone(), model.body.parameters())
            models.append(params_of(model))
        self.models = models

    # -- assignment ----------------------------------------------------------------------
    def assign(self, round_: int, losses: dict[int, np.ndarray]) -> dict[int, int]:
        clients = sorted(losses)
        K = len(self.models)
        if self.method == "fedavg" or K == 1:
            return {c: 0 for c in clients}
        matrix = np.stack([losses[c] for c in clients])
        if self.method in ("ifca", "cpcfl"):
            return dict(zip(clients, ifca_assign(matrix).tolist()))
        if self.stability.frozen:  # known clients keep their model; a new one joins the nearest centroid
            return {c: self.assignment[c] if c in self.assignment else nearest_centroid(losses[c], self.centroids)
                    for c in clients}
        if round_ == self.pretrain_rounds:
            chosen = random_assignment(len(clients), K, self.rng)
        else:
            o, seed = self.ctx.options, stream_seed(self.ctx.config.seed, "clustering")
            chosen = clove_assign(matrix, seed, o["sqrt_losses"], o["unknown_k"])
        self.centroids = {int(m): matrix[chosen == m].mean(axis=0) for m in np.unique(chosen)}
        return dict(zip(clients, chosen.tolist()))

    # -- the strategy --------------------------------------------------------------------
    def request(self, tag: str, round_: int, participants: list[int]) -> dict[int, Payload]:
        if tag == "pretrain":
            payload = {"encoder": self.encoder}
            return {c: payload for c in participants}
        if tag == "evaluate":
            payload = {"models": torch.stack(self.models)}  # one encoding shared by every client
            return {c: payload for c in participants}
        return {c: {"model": self.models[m]} for c, m in self.training.items()}

    def reply_spec(self, tag: str, client: int) -> Spec:
        if tag == "pretrain":
            return spec(encoder=(len(self.encoder),), n=(1,), loss=(1,))
        if tag == "evaluate":
            return spec(losses=(len(self.models),), accuracy=(len(self.models),))
        return spec(model=(len(self.models[0]),), n=(1,))

    def absorb(self, tag: str, round_: int, replies: dict[int, Payload], record: dict) -> None:
        if tag == "pretrain" and replies:
            self.encoder = weighted_average([r["encoder"] for r in replies.values()],
                                            [float(r["n"][0]) for r in replies.values()])
            record["pretrain_loss"] = float(np.mean([float(r["loss"][0]) for r in replies.values()]))
            if round_ == self.pretrain_rounds - 1:
                self.install_encoder()
        elif tag == "evaluate":
            losses = {c: r["losses"].numpy() for c, r in replies.items()}
            assignment = self.assign(round_, losses) if losses else {}
            self.training = {}
            if not assignment:
                return
            clients = sorted(assignment)
            record["ari"] = float(adjusted_rand_score([self.ctx.truth[c] for c in clients],
                                                      [assignment[c] for c in clients]))
            record["accuracy"] = float(np.mean([replies[c]["accuracy"][assignment[c]].item() for c in clients]))
            record["assignment"] = {str(c): assignment[c] for c in clients}
            record["collapse_share"] = float(np.bincount(list(assignment.values())).max() / len(assignment))
            if round_ < self.total_rounds:
                self.assignment.update(assignment)
                self.training = assignment
                record["frozen"] = self.stability.update(assignment) if self.method == "clove" else False
        elif tag == "train":
            updates = {c: (self.training[c], r["model"], float(r["n"][0])) for c, r in replies.items()}
            self.models = aggregate_per_model(self.models, updates)

    def state_dict(self) -> dict:
        state = {"models": self.models, "rng": self.rng.bit_generator.state, "assignment": self.assignment,
                 "stability": vars(self.stability).copy(),
                 "centroids": {m: torch.from_numpy(c) for m, c in self.centroids.items()}}
        if self.method == "cpcfl":
            state["encoder"] = self.encoder
        return state

    def load_state_dict(self, state: dict) -> None:
        self.models = list(state["models"])
        self.rng.bit_generator.state = state["rng"]
        self.assignment = dict(state["assignment"])
        vars(self.stability).update(state["stability"])
        self.centroids = {m: c.numpy() for m, c in state["centroids"].items()}
        if "encoder" in state:
            self.encoder = state["encoder"]


class ClusteredClient(ClusteredSchedule):
    def __init__(self, ctx: ClientContext):
        super().__init__(ctx.config, ctx.options)
        self.ctx = ctx
        self.model = initial_model(ctx.config, ctx.dataset).to(ctx.device)
        self.size = len(params_of(self.model))
        self.specs = {"evaluate": spec(models=(ctx.options["models"], self.size)), "train": spec(model=(self.size,))}
        if self.method == "cpcfl":
            self.net = contrastive_net(ctx.config, ctx.dataset, ctx.options["projection_dim"]).to(ctx.device)
            self.specs["pretrain"] = spec(encoder=(len(params_of(self.net)),))

    def request_spec(self, tag: str) -> Spec:
        return self.specs[tag]

    def handle(self, tag: str, round_: int, payload: Payload) -> Payload:
        c = self.ctx
        if tag == "pretrain":
            set_flat_params(self.net, payload["encoder"].clone())
            loss = pretrain_epochs(self.net, c.x, c.options, c.config, c.options["pretrain_epochs"], c.generator)
            return {"encoder": params_of(self.net), "n": n_of(c.x), "loss": torch.tensor([loss])}
        if tag == "evaluate":
            losses, metric = [], []
            for params in payload["models"]:
                set_flat_params(self.model, params.clone())
                losses.append(mean_loss(self.model, c.x, c.y))
                metric.append(test_metric(self.model, c.x_test, c.y_test))
            return {"losses": torch.tensor(losses), "accuracy": torch.tensor(metric)}
        set_flat_params(self.model, payload["model"].clone())
        optimizer = make_optimizer(self.model.parameters(), c.config.optim, c.options["client_optimizer"])
        train_epochs(self.model, c.x, c.y, c.options["local_epochs"], c.config.optim.batch_size, optimizer, c.generator)
        return {"model": params_of(self.model), "n": n_of(c.x)}
