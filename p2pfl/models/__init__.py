"""Model registry keyed by name, or a class by import path; every model is a FeatureClassifier with no BatchNorm."""

from __future__ import annotations

from typing import Any, Callable

from p2pfl.errors import UserError
from p2pfl.models.autoencoder import AutoEncoder
from p2pfl.models.base import FeatureClassifier
from p2pfl.models.cnn import SmallCNN
from p2pfl.models.lenet import LeNet5
from p2pfl.models.mlp import MLP
from p2pfl.models.resnet import ResNet20
from p2pfl.plugins import accepted, check_arguments, is_import_path, load_object

MODELS: dict[str, Callable[..., FeatureClassifier]] = {
    "mlp": MLP,
    "cnn": SmallCNN,
    "lenet5": LeNet5,
    "resnet20": ResNet20,
    "autoencoder": AutoEncoder,  # unsupervised: CLoVE and the other coordinator methods only
}
SHAPE_ARGS = ("input_shape", "num_classes")


def model_class(name: str) -> Callable[..., Any]:
    """A built-in by name, or the class (or factory) at `package.module:Name`."""
    if name in MODELS:
        return MODELS[name]
    if is_import_path(name):
        target = load_object(name, "model")
        if not callable(target):
            raise UserError(f"model {name} is a {type(target).__name__}, not a class or function")
        return target
    raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)} or give package.module:Class")


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int,
                args: dict[str, Any] | None = None) -> FeatureClassifier:
    """The model; the class gets input_shape and num_classes when it takes them, and `args` as keywords."""
    cls, args = model_class(name), dict(args or {})
    if name in ("cnn", "lenet5", "resnet20") and len(input_shape) != 3:
        raise UserError(f"model {name!r} needs images (C x H x W), the data has shape {input_shape}; use model: mlp")
    if name == "lenet5" and min(input_shape[1:]) < 16:
        raise UserError(f"lenet5 needs images of at least 16x16, the data is {input_shape[1]}x{input_shape[2]}; "
                        "use model: cnn or mlp")
    check_arguments(cls, args, name, reserved=SHAPE_ARGS)
    shape = {"input_shape": tuple(input_shape), "num_classes": num_classes}
    kwargs = {**{k: v for k, v in shape.items() if accepted(cls, k)}, **args}
    if name in MODELS:
        return cls(**kwargs)
    from p2pfl.models.custom import as_feature_classifier

    try:
        net = cls(**kwargs)
    except UserError:
        raise
    except Exception as exc:  # the user's constructor
        raise UserError(f"building model {name} with {kwargs} failed: {type(exc).__name__}: {exc}") from None
    return as_feature_classifier(net, tuple(input_shape), num_classes, name)
