"""Model registry keyed by name; every model is a FeatureClassifier with no BatchNorm."""

from __future__ import annotations

from typing import Callable

from p2pfl.errors import UserError
from p2pfl.models.autoencoder import AutoEncoder
from p2pfl.models.base import FeatureClassifier
from p2pfl.models.cnn import SmallCNN
from p2pfl.models.lenet import LeNet5
from p2pfl.models.mlp import MLP
from p2pfl.models.resnet import ResNet20

MODELS: dict[str, Callable[[tuple[int, ...], int], FeatureClassifier]] = {
    "mlp": MLP,
    "cnn": SmallCNN,
    "lenet5": LeNet5,
    "resnet20": ResNet20,
    "autoencoder": AutoEncoder,  # unsupervised: CLoVE and the other coordinator methods only
}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> FeatureClassifier:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if name in ("cnn", "lenet5", "resnet20") and len(input_shape) != 3:
        raise UserError(f"model {name!r} needs images (C x H x W), the data has shape {input_shape}; use model: mlp")
    if name == "lenet5" and min(input_shape[1:]) < 16:
        raise UserError(f"lenet5 needs images of at least 16x16, the data is {input_shape[1]}x{input_shape[2]}; "
                        "use model: cnn or mlp")
    return MODELS[name](input_shape, num_classes)
