import pytest
import torch

from p2pfl.errors import UserError
from p2pfl.models import MODELS, build_model

SHAPES = {"mlp": (1, 8, 8), "cnn": (1, 8, 8), "lenet5": (1, 28, 28), "resnet20": (3, 32, 32), "autoencoder": (1, 8, 8)}


@pytest.mark.parametrize("name", list(MODELS))
def test_features_then_head_is_forward(name):
    model = build_model(name, SHAPES[name], 10)
    x = torch.randn(5, *SHAPES[name])
    f = model.features(x)
    assert f.shape == (5, model.feature_dim)
    assert torch.allclose(model.head(f), model(x))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_lenet_has_the_84_wide_feature_layer():
    assert build_model("lenet5", (1, 28, 28), 10).feature_dim == 84


def test_model_data_mismatch_is_a_user_error():
    with pytest.raises(UserError, match="at least 16x16"):
        build_model("lenet5", (1, 8, 8), 10)
    with pytest.raises(UserError, match="unknown model"):
        build_model("vgg", (1, 8, 8), 10)


def test_resnet20_uses_groupnorm_with_two_groups_and_has_about_270k_parameters():
    model = build_model("resnet20", (3, 32, 32), 10)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 2 for m in norms)
    assert 260_000 < sum(p.numel() for p in model.parameters()) < 280_000
    assert model.feature_dim == 64


def test_autoencoder_reconstructs_in_the_input_shape():
    model = build_model("autoencoder", (1, 8, 8), 10)
    assert model.unsupervised and model(torch.randn(3, 1, 8, 8)).shape == (3, 1, 8, 8)
