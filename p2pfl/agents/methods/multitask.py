"""Multi-task FL with heterogeneous encoder-decoder models (M-Fed, ALGORITHMS.md B5).

Clients are split into one block per task; every task has its own target and decoder architecture.
Each round a client receives the encoder and its task's global decoder, sets E_i <- E, keeps its
own decoder pulled toward the global one by (mu/2)||D_i - D_tau||^2, trains, and sends both back.
`sharing: per-task` (FedAvg within each task) and `local` are the baselines, run by the same code.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from p2pfl.agents.methods.base import (ClientContext, CoordinatorContext, Payload, Spec, TrainEachRound,
                                       make_optimizer, n_of, spec, test_metric, train_epochs, true_cluster_of)
from p2pfl.algorithms.federated import group_average
from p2pfl.algorithms.multitask import proximal_term, sharing_groups
from p2pfl.algorithms.method_options import MultiTaskOptions
from p2pfl.config import RunConfig
from p2pfl.data.dataset import ArrayDataset
from p2pfl.data.partition import iid_partition
from p2pfl.data.tasks import TASKS, task_targets
from p2pfl.models.encoder_decoder import EncoderDecoder
from p2pfl.seeds import stream_seed


def task_model(config: RunConfig, dataset: ArrayDataset, options: MultiTaskOptions, task: int) -> EncoderDecoder:
    """Same seed for every task: the encoder (built first) starts identical everywhere."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        name = options.tasks[task]
        return EncoderDecoder(dataset.input_shape, options.decoders[task], TASKS[name][1])


def vector(module: torch.nn.Module) -> torch.Tensor:
    return parameters_to_vector(module.parameters()).detach().clone()


def task_data(config: RunConfig, dataset: ArrayDataset, options: MultiTaskOptions, client: int):
    """An IID shard relabelled for the client's task, cut to `samples_per_client` for low-data tasks."""
    task = true_cluster_of(config, options, client)
    shard = iid_partition(dataset.y_train, config.agents - 1, config.seed)[client - 1]
    keep = options.samples_per_client[task]
    if keep:
        shard = np.random.default_rng(stream_seed(config.seed, "task-samples", client)).permutation(shard)[:keep]
    name = options.tasks[task]
    return (dataset.x_train[shard], task_targets(name, dataset.y_train[shard]), dataset.x_test,
            task_targets(name, dataset.y_test))


class MultiTaskCoordinator(TrainEachRound):
    def __init__(self, ctx: CoordinatorContext):
        super().__init__(ctx.config.rounds)
        self.ctx, o = ctx, ctx.options
        self.task_of = dict(ctx.truth)  # the true "clusters" of the multi-task method are its tasks
        models = [task_model(ctx.config, ctx.dataset, o, t) for t in range(len(o.tasks))]
        self.encoder = {c: vector(models[t].encoder) for c, t in self.task_of.items()}
        self.decoder = {c: vector(models[t].decoder) for c, t in self.task_of.items()}

    def request(self, tag: str, round_: int, participants: list[int]) -> dict[int, Payload]:
        return {c: {"encoder": self.encoder[c], "decoder": self.decoder[c]} for c in participants}

    def reply_spec(self, tag: str, client: int) -> Spec:
        if tag == "evaluate":
            return spec(accuracy=(1,))
        return spec(encoder=(len(self.encoder[client]),), decoder=(len(self.decoder[client]),), n=(1,), accuracy=(1,))

    def absorb(self, tag: str, round_: int, replies: dict[int, Payload], record: dict) -> None:
        if not replies:
            return
        accuracy = {c: float(r["accuracy"][0]) for c, r in replies.items()}
        record["accuracy"] = float(np.mean(list(accuracy.values())))
        record["accuracy_by_task"] = {name: float(np.mean([a for c, a in accuracy.items() if self.task_of[c] == t]))
                                      for t, name in enumerate(self.ctx.options.tasks)
                                      if any(self.task_of[c] == t for c in accuracy)}
        if tag != "train":
            return
        encoder_group, decoder_group = sharing_groups(self.task_of, self.ctx.options.sharing)
        sizes = {c: float(r["n"][0]) for c, r in replies.items()}
        encoders = group_average({c: r["encoder"] for c, r in replies.items()}, encoder_group, sizes)
        decoders = group_average({c: r["decoder"] for c, r in replies.items()}, decoder_group, sizes)
        for c in self.task_of:  # a client that sat out still gets its groups' new averages next time
            self.encoder[c] = encoders.get(encoder_group[c], self.encoder[c])
            self.decoder[c] = decoders.get(decoder_group[c], self.decoder[c])

    def final_models(self) -> dict[int, torch.Tensor]:
        return {}  # encoder and decoders differ per client under M-Fed: the results are the clients' own models

    def final_clusters(self) -> dict[int, int] | None:
        return None  # the tasks are fixed by the split, not found

    def state_dict(self) -> dict:
        return {"encoder": self.encoder, "decoder": self.decoder}

    def load_state_dict(self, state: dict) -> None:
        self.encoder, self.decoder = dict(state["encoder"]), dict(state["decoder"])


class MultiTaskClient(TrainEachRound):
    def __init__(self, ctx: ClientContext):
        super().__init__(ctx.config.rounds)
        self.ctx, o = ctx, ctx.options
        self.model = task_model(ctx.config, ctx.dataset, o, true_cluster_of(ctx.config, o, ctx.agent_id)).to(ctx.device)
        self.trained = False
        self.spec = spec(encoder=(len(vector(self.model.encoder)),), decoder=(len(vector(self.model.decoder)),))

    def request_spec(self, tag: str) -> Spec:
        return self.spec

    def final_model(self) -> torch.nn.Module:
        """After the final evaluation: the shared encoder and this client's decoder, as evaluated."""
        return self.model

    def merge(self, payload: Payload) -> None:
        """E_i <- E; under M-Fed the client keeps its own decoder (after its first round), else takes D_tau."""
        vector_to_parameters(payload["encoder"].clone(), self.model.encoder.parameters())
        if self.ctx.options.sharing != "mfed" or not self.trained:
            vector_to_parameters(payload["decoder"].clone(), self.model.decoder.parameters())

    def handle(self, tag: str, round_: int, payload: Payload) -> Payload:
        c, o = self.ctx, self.ctx.options
        self.merge(payload)
        accuracy = torch.tensor([test_metric(self.model, c.x_test, c.y_test)])
        if tag == "evaluate":
            return {"accuracy": accuracy}
        mu = o.mu if o.sharing == "mfed" else 0.0
        target = payload["decoder"]

        def loss(model: EncoderDecoder, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(model(xb), yb) + proximal_term(model.decoder.parameters(), target, mu)

        optimizer = make_optimizer(self.model.parameters(), c.config.optim, o.client_optimizer)
        train_epochs(self.model, c.x, c.y, o.local_epochs, c.config.optim.batch_size, optimizer, c.generator, loss)
        self.trained = True
        return {"encoder": vector(self.model.encoder), "decoder": vector(self.model.decoder), "n": n_of(c.x),
                "accuracy": accuracy}
