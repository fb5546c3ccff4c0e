"""A model class given by import path, made a FeatureClassifier so every algorithm (CCL too) can use it."""

from __future__ import annotations

import math

import torch
from torch import nn

from p2pfl.errors import UserError
from p2pfl.models.base import FeatureClassifier


class SplitAtLastLinear(FeatureClassifier):
    """Wraps a model without features()/head(): phi(x) is the input of its last nn.Linear, the head that layer.

    Valid when the model's output is that layer applied to its input (checked when built); the
    wrapped model's own state_dict is `self.net.state_dict()`.
    """

    def __init__(self, net: nn.Module, last: str):
        super().__init__()
        self.net, self.last_name = net, last
        self.feature_dim = net.get_submodule(last).in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        # Registered per call on this instance's own layer: copies (CCL's shadow model) stay independent.
        handle = self.net.get_submodule(self.last_name).register_forward_pre_hook(
            lambda _module, args: captured.append(args[0]))
        try:
            self.net(x)
        finally:
            handle.remove()
        return captured[-1]

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.net.get_submodule(self.last_name)(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def last_linear(net: nn.Module) -> str | None:
    names = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    return names[-1] if names else None


def as_feature_classifier(net: nn.Module, input_shape: tuple[int, ...], num_classes: int,
                          what: str) -> FeatureClassifier:
    """`net` itself when it has features() and head(), else wrapped at its last Linear; checked on a dummy batch."""
    if not isinstance(net, nn.Module):
        raise UserError(f"model {what} built a {type(net).__name__}, not a torch.nn.Module")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        raise UserError(f"model {what} has BatchNorm layers: gossip cannot average running statistics and CCL "
                        "forwards neighbours' parameters on local data; use GroupNorm or no normalisation")
    own_split = callable(getattr(net, "features", None)) and callable(getattr(net, "head", None))
    model = net
    if not own_split:
        last = last_linear(net)
        if last is None:
            raise UserError(f"model {what} has no nn.Linear layer to split at; give it features(x) and head(f) "
                            "methods (forward(x) = head(features(x)))")
        model = SplitAtLastLinear(net, last)
    probe = torch.zeros(2, *input_shape)
    try:
        with torch.no_grad():
            out = model(probe)
            phi = model.features(probe)
            split = model.head(phi)
    except Exception as exc:  # the user's forward does not fit the data
        raise UserError(f"model {what} fails on a batch of the data's shape {tuple(input_shape)}: "
                        f"{type(exc).__name__}: {exc}") from None
    unsupervised = getattr(net, "unsupervised", False)
    expected = (2, *input_shape) if unsupervised else (2, num_classes)
    if tuple(out.shape) != expected:
        raise UserError(f"model {what} outputs shape {tuple(out.shape)[1:]} per sample, the data needs "
                        f"{expected[1:]} ({num_classes} classes); pass num_classes to its last layer")
    if not torch.allclose(out, split, atol=1e-5):
        raise UserError(f"model {what}: forward(x) differs from head(features(x)); "
                        + ("make them agree" if own_split else "its output must be its last nn.Linear layer, or give it "
                           "features(x) and head(f) methods"))
    if not getattr(model, "feature_dim", None):
        model.feature_dim = int(math.prod(phi.shape[1:]))
    return model  # type: ignore[return-value]


def inner_module(model: nn.Module) -> nn.Module:
    """The user's own module (what its constructor rebuilds), unwrapped."""
    return model.net if isinstance(model, SplitAtLastLinear) else model
