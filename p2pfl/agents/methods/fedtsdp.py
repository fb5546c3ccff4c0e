"""FedTSDP (ALGORITHMS.md B4): FedAvg warm-up, then each round the clients' outputs on a public
unlabeled batch tell the coordinator whether there is cluster structure (Hopkins) and which clients
belong together (JS divergence, then cosine similarity of updates); the top p layers stay personal,
p growing with the measured skew.
"""

from __future__ import annotations

import numpy as np
import torch

from p2pfl.models.initial import initial_model
from p2pfl.agents.methods.base import (ClientContext, CoordinatorContext, Payload, Spec, TrainEachRound,
                                       make_optimizer, n_of, params_of, spec, test_metric, train_epochs)
from p2pfl.algorithms.base import set_flat_params
from p2pfl.algorithms.fedtsdp import (cosine_matrix, hopkins, nearest_cluster, pairwise_js, personalization_layers,
                                      reduce_dims, two_stage_clusters, within_and_across)
from p2pfl.algorithms.federated import group_average
from p2pfl.seeds import stream_seed


def personal_mask(model: torch.nn.Module, p: int) -> torch.Tensor:
    """True on the flat parameters of the top `p` layers (modules holding parameters, output side first)."""
    layers = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    personal = {id(t) for m in layers[len(layers) - p:] for t in m.parameters(recurse=False)}
    return torch.cat([torch.full((t.numel(),), id(t) in personal) for t in model.parameters()])


def public_batch(ctx_dataset, samples: int, seed: int) -> torch.Tensor:
    """Unlabeled public images every client scores; the coordinator sends them, labels never leave."""
    order = np.random.default_rng(stream_seed(seed, "public-sample")).permutation(len(ctx_dataset.x_test))[:samples]
    return torch.from_numpy(np.ascontiguousarray(ctx_dataset.x_test[order]))


class FedTSDPCoordinator(TrainEachRound):
    def __init__(self, ctx: CoordinatorContext):
        super().__init__(ctx.config.rounds)
        self.ctx, self.options = ctx, ctx.options
        self.cluster_models = {0: params_of(initial_model(ctx.config, ctx.dataset))}
        self.cluster_of = {c: 0 for c in ctx.clients}
        self.personal = 1  # warm-up: the personalization split at its minimum
        self.clustered = False
        self.above = 0  # consecutive rounds with H >= the threshold
        self.public = public_batch(ctx.dataset, self.options.public_samples, ctx.config.seed)
        self.rng = np.random.default_rng(stream_seed(ctx.config.seed, "hopkins"))
        self.sent: dict[int, torch.Tensor] = {}
        # Clients not taking part in the clustering round are labelled too (nearest cluster by their latest
        # signature, else the largest cluster) and relabelled by their fresh signature the next time they train.
        self.signature_of: dict[int, np.ndarray] = {}  # each client's latest outputs on the public batch
        self.reference: dict[int, np.ndarray] = {}  # the clustered clients' outputs, labelled in cluster_of
        self.provisional: set[int] = set()

    def request(self, tag: str, round_: int, participants: list[int]) -> dict[int, Payload]:
        personal = torch.tensor([float(self.personal)])
        self.sent = {c: self.cluster_models[self.cluster_of[c]] for c in participants}
        if tag == "evaluate":
            return {c: {"model": m, "personal": personal} for c, m in self.sent.items()}
        return {c: {"model": m, "personal": personal, "public": self.public} for c, m in self.sent.items()}

    def reply_spec(self, tag: str, client: int) -> Spec:
        if tag == "evaluate":
            return spec(accuracy=(1,))
        size = len(next(iter(self.cluster_models.values())))
        return spec(model=(size,), n=(1,), signature=(len(self.public), self.ctx.dataset.num_classes), accuracy=(1,))

    def absorb(self, tag: str, round_: int, replies: dict[int, Payload], record: dict) -> None:
        from sklearn.metrics import adjusted_rand_score

        if tag == "train":
            self.signature_of.update({c: r["signature"].numpy() for c, r in replies.items()})
            for client in sorted(self.provisional & replies.keys()):  # its own outputs now, not older ones
                self.cluster_of[client] = self.nearest(self.signature_of[client])
                self.provisional.discard(client)
        if replies:
            record["accuracy"] = float(np.mean([float(r["accuracy"][0]) for r in replies.values()]))
            clients = sorted(replies)
            record["ari"] = float(adjusted_rand_score([self.ctx.truth[c] for c in clients],
                                                      [self.cluster_of[c] for c in clients]))
        record.update(personal_layers=self.personal, clusters=len(set(self.cluster_of.values())))
        if tag != "train" or not replies:
            return
        clients = sorted(replies)
        models = {c: replies[c]["model"] for c in clients}
        sizes = {c: float(replies[c]["n"][0]) for c in clients}
        self.cluster_models.update(group_average(models, self.cluster_of, sizes))
        if round_ < self.options.warmup_rounds - 1 or len(clients) < 3:
            return
        signatures = np.stack([replies[c]["signature"].numpy() for c in clients])
        points = reduce_dims(signatures.reshape(len(clients), -1), self.options.hopkins_dims)
        h = hopkins(points, self.rng, repeats=self.options.hopkins_repeats)
        record["hopkins"] = h
        if self.clustered:
            return
        self.personal = personalization_layers(h, self.options.p_max)
        self.above = self.above + 1 if h >= self.options.hopkins_threshold else 0
        if self.above >= self.options.hopkins_patience:  # one noisy reading of 20 points is not structure
            updates = np.stack([(models[c] - self.sent[c]).numpy() for c in clients])
            divergence = pairwise_js(signatures)
            labels = two_stage_clusters(divergence, updates, self.options.js_threshold,
                                        self.options.cos_ratio, self.options.min_split_size)
            # How far apart the true clusters were in what the two stages looked at (like ARI, a report only).
            truth = np.array([self.ctx.truth[c] for c in clients])
            record["js_within"], record["js_across"] = within_and_across(divergence, truth)
            record["cos_within"], record["cos_across"] = within_and_across(cosine_matrix(updates), truth)
            self.cluster_of.update({c: int(label) for c, label in zip(clients, labels)})
            self.reference = {c: signatures[i] for i, c in enumerate(clients)}
            self.label_the_others(clients)
            self.cluster_models = {int(k): v for k, v in group_average(models, self.cluster_of, sizes).items()}
            self.clustered = True
            record["clustered_now"] = True

    def nearest(self, signature: np.ndarray) -> int:
        members = sorted(self.reference)
        return nearest_cluster(signature, np.stack([self.reference[c] for c in members]),
                               np.array([self.cluster_of[c] for c in members]))

    def label_the_others(self, clustered: list[int]) -> None:
        """Every client gets a cluster when clustering happens, not only those in the round: the nearest
        cluster by its latest known signature, or the largest when it never trained yet. Provisional:
        its next training round relabels it by its fresh signature (before its update is averaged)."""
        others = [c for c in self.ctx.clients if c not in set(clustered)]
        counts = np.bincount([self.cluster_of[c] for c in clustered])
        for client in others:
            known = self.signature_of.get(client)
            self.cluster_of[client] = int(counts.argmax()) if known is None else self.nearest(known)
        self.provisional = set(others)

    def final_models(self) -> dict[int, torch.Tensor]:
        return {}  # the cluster averages include layers no client uses: the results are the clients' own models

    def final_clusters(self) -> dict[int, int] | None:
        return dict(sorted(self.cluster_of.items()))

    def state_dict(self) -> dict:
        def as_tensors(arrays: dict[int, np.ndarray]) -> dict[int, torch.Tensor]:  # checkpoints hold tensors
            return {c: torch.from_numpy(a) for c, a in arrays.items()}

        return {"cluster_models": self.cluster_models, "cluster_of": self.cluster_of, "personal": self.personal,
                "clustered": self.clustered, "above": self.above, "rng": self.rng.bit_generator.state,
                "signature_of": as_tensors(self.signature_of), "reference": as_tensors(self.reference),
                "provisional": sorted(self.provisional)}

    def load_state_dict(self, state: dict) -> None:
        self.cluster_models, self.cluster_of = dict(state["cluster_models"]), dict(state["cluster_of"])
        self.personal, self.clustered, self.above = state["personal"], state["clustered"], state["above"]
        self.rng.bit_generator.state = state["rng"]
        self.signature_of = {c: t.numpy() for c, t in state.get("signature_of", {}).items()}
        self.reference = {c: t.numpy() for c, t in state.get("reference", {}).items()}
        self.provisional = set(state.get("provisional", []))


class FedTSDPClient(TrainEachRound):
    def __init__(self, ctx: ClientContext):
        super().__init__(ctx.config.rounds)
        self.ctx = ctx
        self.model = initial_model(ctx.config, ctx.dataset).to(ctx.device)
        self.size = len(params_of(self.model))
        self.own: torch.Tensor | None = None  # this client's parameters after its last local training
        self.masks: dict[int, torch.Tensor] = {}  # personal-layer mask per p: p changes rarely, the mask never

    def request_spec(self, tag: str) -> Spec:
        if tag == "evaluate":
            return spec(model=(self.size,), personal=(1,))
        return spec(model=(self.size,), personal=(1,),
                    public=(self.ctx.options.public_samples, *self.ctx.dataset.input_shape))

    def final_model(self) -> torch.nn.Module:
        """After the final evaluation: its cluster's shared layers and its own top p layers, as evaluated."""
        return self.model

    def merge(self, payload: Payload) -> None:
        """The shared layers from the coordinator, the top p layers kept from this client's own model."""
        merged = payload["model"].clone()
        if self.own is not None:
            p = int(payload["personal"][0])
            if p not in self.masks:
                self.masks[p] = personal_mask(self.model, p).to(merged.device)
            mask = self.masks[p]
            merged[mask] = self.own[mask]
        set_flat_params(self.model, merged)

    def handle(self, tag: str, round_: int, payload: Payload) -> Payload:
        c = self.ctx
        self.merge(payload)
        accuracy = torch.tensor([test_metric(self.model, c.x_test, c.y_test)])
        if tag == "evaluate":
            return {"accuracy": accuracy}
        optimizer = make_optimizer(self.model.parameters(), c.config.optim, c.options.client_optimizer)
        train_epochs(self.model, c.x, c.y, c.options.local_epochs, c.config.optim.batch_size, optimizer, c.generator)
        self.own = params_of(self.model)
        with torch.no_grad():
            signature = torch.softmax(self.model(payload["public"]), dim=1)
        return {"model": self.own, "n": n_of(c.x), "signature": signature, "accuracy": accuracy}
