"""Every model honours the serving contract: pixels [N,1,28,28] in [0,1] → probabilities [N,10]."""

from __future__ import annotations

import pytest
import torch
from mnistream_common.preprocessing import MNIST_MEAN, MNIST_STD
from trainer.models import CNN, MLP, Normalize, build_model


@pytest.mark.parametrize("model", [MLP(10), MLP(64), CNN()], ids=["mlp10", "mlp64", "cnn"])
def test_model_maps_pixels_to_probabilities(model: torch.nn.Module) -> None:
    model.eval()
    with torch.inference_mode():
        probabilities = model(torch.rand(5, 1, 28, 28))
    assert probabilities.shape == (5, 10)
    assert torch.all(probabilities >= 0)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(5), atol=1e-5)


def test_mlp_hidden_layer_has_the_configured_width() -> None:
    model = MLP(hidden=37)
    weights = [p.shape for name, p in model.named_parameters() if name.endswith("weight")]
    assert weights == [(37, 784), (10, 37)]
    assert model.hidden == 37


def test_models_normalise_with_the_mnist_statistics_first() -> None:
    normalize = Normalize()
    pixels = torch.full((1, 1, 28, 28), MNIST_MEAN + MNIST_STD)
    assert torch.allclose(normalize(pixels), torch.ones_like(pixels))
    assert isinstance(MLP().normalize, Normalize)
    assert isinstance(CNN().normalize, Normalize)


def test_build_model_names_the_architecture() -> None:
    assert build_model("mlp", hidden=12).architecture == "mlp"
    assert build_model("cnn").architecture == "cnn"
