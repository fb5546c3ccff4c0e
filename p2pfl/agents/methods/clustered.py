"""FedAvg, IFCA and CLoVE (ALGORITHMS.md B1, B2), one class each over a shared shape: K models; each
round the clients score every model on their training data ("evaluate"), the coordinator assigns
each client a model (the method's `choose`), the assigned models are trained E local epochs
("train") and averaged per model. CP-CFL builds on IFCA in cpcfl.py.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from p2pfl.agents.methods.base import (ClientContext, CoordinatorContext, Payload, Spec, make_optimizer, mean_loss,
                                       n_of, params_of, spec, test_metric, train_epochs)
from p2pfl.algorithms.base import set_flat_params
from p2pfl.algorithms.federated import (StabilityTracker, aggregate_per_model, clove_assign, ifca_assign,
                                        random_assignment)
from p2pfl.algorithms.method_options import FederatedOptions
from p2pfl.config import RunConfig
from p2pfl.data.dataset import ArrayDataset
from p2pfl.models.initial import initial_model
from p2pfl.seeds import stream_seed


def seeded_model(config: RunConfig, dataset: ArrayDataset, k: int, identical: bool) -> nn.Module:
    """Cluster model k: the run's initial model (init: identical), else its own random start."""
    return initial_model(config, dataset, None if identical else stream_seed(config.seed, "cluster-model", k))


def nearest_centroid(loss_vector: np.ndarray, centroids: dict[int, np.ndarray]) -> int:
    return min(centroids, key=lambda m: float(np.linalg.norm(loss_vector - centroids[m])))


class ClusteredSchedule:
    """Rounds of every clustered method: "evaluate" then "train", after the method's `rounds_before`
    (CP-CFL's pre-training), and one final "evaluate"."""

    def __init__(self, config: RunConfig, options: FederatedOptions):
        self.pretrain_rounds = self.rounds_before(options)
        self.total_rounds = config.rounds + self.pretrain_rounds

    @classmethod
    def rounds_before(cls, options: FederatedOptions) -> int:
        return 0

    def phases(self, round_: int) -> tuple[str, ...]:
        if round_ == self.total_rounds:
            return ("evaluate",)  # the final models, scored once more
        return ("pretrain",) if round_ < self.pretrain_rounds else ("evaluate", "train")


class ClusteredCoordinator(ClusteredSchedule):
    """K models, each client assigned one a round by the method's `choose`, averaged per model."""

    def __init__(self, ctx: CoordinatorContext):
        super().__init__(ctx.config, ctx.options)
        self.ctx, config, options = ctx, ctx.config, ctx.options
        identical = options.init == "identical"
        self.models = [params_of(seeded_model(config, ctx.dataset, k, identical)) for k in range(options.models)]
        self.assignment: dict[int, int] = {}  # last known model of every client
        self.training: dict[int, int] = {}  # this round's assignment

    def assign(self, round_: int, losses: dict[int, np.ndarray]) -> dict[int, int]:
        clients = sorted(losses)
        if len(self.models) == 1:
            return {c: 0 for c in clients}
        return self.choose(round_, clients, np.stack([losses[c] for c in clients]))

    def choose(self, round_: int, clients: list[int], matrix: np.ndarray) -> dict[int, int]:
        """The model of each client, from its row of losses (one per model)."""
        raise NotImplementedError

    def settled(self, assignment: dict[int, int]) -> bool:
        """Whether the clustering has stopped changing (recorded as "frozen"); only CLoVE tracks it."""
        return False

    # -- the strategy --------------------------------------------------------------------
    def request(self, tag: str, round_: int, participants: list[int]) -> dict[int, Payload]:
        if tag == "evaluate":
            payload = {"models": torch.stack(self.models)}  # one encoding shared by every client
            return {c: payload for c in participants}
        return {c: {"model": self.models[m]} for c, m in self.training.items()}

    def reply_spec(self, tag: str, client: int) -> Spec:
        if tag == "evaluate":
            return spec(losses=(len(self.models),), accuracy=(len(self.models),))
        return spec(model=(len(self.models[0]),), n=(1,))

    def absorb(self, tag: str, round_: int, replies: dict[int, Payload], record: dict) -> None:
        from sklearn.metrics import adjusted_rand_score

        if tag == "evaluate":
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
            self.assignment.update(assignment)  # after the final evaluation: the cluster each client ended in
            if round_ < self.total_rounds:
                self.training = assignment
                record["frozen"] = self.settled(assignment)
        elif tag == "train":
            updates = {c: (self.training[c], r["model"], float(r["n"][0])) for c, r in replies.items()}
            self.models = aggregate_per_model(self.models, updates)

    def final_models(self) -> dict[int, torch.Tensor]:
        return dict(enumerate(self.models))

    def final_clusters(self) -> dict[int, int] | None:
        return dict(sorted(self.assignment.items()))

    def state_dict(self) -> dict:
        return {"models": self.models, "assignment": self.assignment}

    def load_state_dict(self, state: dict) -> None:
        self.models = list(state["models"])
        self.assignment = dict(state["assignment"])


class FedAvgCoordinator(ClusteredCoordinator):
    """One model (options.models is forced to 1), every client on it."""

    def choose(self, round_: int, clients: list[int], matrix: np.ndarray) -> dict[int, int]:
        return {c: 0 for c in clients}

    def final_clusters(self) -> dict[int, int] | None:
        return None  # no clusters: every client on the one global model


class IFCACoordinator(ClusteredCoordinator):
    """Each client takes the model with its lowest training loss."""

    def choose(self, round_: int, clients: list[int], matrix: np.ndarray) -> dict[int, int]:
        return dict(zip(clients, ifca_assign(matrix).tolist()))


class CLoVECoordinator(ClusteredCoordinator):
    """A random first round, then k-means on the loss vectors matched to the models; once every client
    kept its model for `patience` rounds the clustering stops and a newcomer joins the nearest centroid."""

    def __init__(self, ctx: CoordinatorContext):
        super().__init__(ctx)
        self.rng = np.random.default_rng(stream_seed(ctx.config.seed, "assignment"))
        self.stability = StabilityTracker(ctx.options.patience)
        self.centroids: dict[int, np.ndarray] = {}  # mean loss vector of each model's clients

    def choose(self, round_: int, clients: list[int], matrix: np.ndarray) -> dict[int, int]:
        if self.stability.frozen:  # known clients keep their model; a new one joins the nearest centroid
            return {c: self.assignment[c] if c in self.assignment else nearest_centroid(row, self.centroids)
                    for c, row in zip(clients, matrix)}
        if round_ == 0:
            chosen = random_assignment(len(clients), len(self.models), self.rng)
        else:
            o, seed = self.ctx.options, stream_seed(self.ctx.config.seed, "clustering")
            chosen = clove_assign(matrix, seed, o.sqrt_losses, o.unknown_k)
        self.centroids = {int(m): matrix[chosen == m].mean(axis=0) for m in np.unique(chosen)}
        return dict(zip(clients, chosen.tolist()))

    def settled(self, assignment: dict[int, int]) -> bool:
        return self.stability.update(assignment)

    def absorb(self, tag: str, round_: int, replies: dict[int, Payload], record: dict) -> None:
        super().absorb(tag, round_, replies, record)
        if tag == "evaluate" and round_ > 0 and "assignment" in record and self.ctx.options.unknown_k:
            # options.models is only an upper bound: how many the clustering actually used (round 0 is random)
            record["clusters_found"] = len(set(record["assignment"].values()))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rng": self.rng.bit_generator.state, "stability": vars(self.stability).copy(),
                "centroids": {m: torch.from_numpy(c) for m, c in self.centroids.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]
        vars(self.stability).update(state["stability"])
        self.centroids = {m: c.numpy() for m, c in state["centroids"].items()}


class ClusteredClient(ClusteredSchedule):
    """Scores every model on its training data ("evaluate"), trains the one it is given ("train")."""

    def __init__(self, ctx: ClientContext):
        super().__init__(ctx.config, ctx.options)
        self.ctx = ctx
        self.model = initial_model(ctx.config, ctx.dataset).to(ctx.device)
        self.size = len(params_of(self.model))
        self.specs = {"evaluate": spec(models=(ctx.options.models, self.size)), "train": spec(model=(self.size,))}

    def request_spec(self, tag: str) -> Spec:
        return self.specs[tag]

    def final_model(self) -> nn.Module | None:
        return None  # the result is the coordinator's cluster models

    def handle(self, tag: str, round_: int, payload: Payload) -> Payload:
        c = self.ctx
        if tag == "evaluate":
            losses, metric = [], []
            for params in payload["models"]:
                set_flat_params(self.model, params.clone())
                losses.append(mean_loss(self.model, c.x, c.y))
                metric.append(test_metric(self.model, c.x_test, c.y_test))
            return {"losses": torch.tensor(losses), "accuracy": torch.tensor(metric)}
        set_flat_params(self.model, payload["model"].clone())
        optimizer = make_optimizer(self.model.parameters(), c.config.optim, c.options.client_optimizer)
        train_epochs(self.model, c.x, c.y, c.options.local_epochs, c.config.optim.batch_size, optimizer, c.generator)
        return {"model": params_of(self.model), "n": n_of(c.x)}
