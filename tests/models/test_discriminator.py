from __future__ import annotations

import pytest
import torch
from torch import nn

from sdnet.models import MaskDiscriminator
from sdnet.models.discriminator import _keras_same_padding

from ..helpers import count_parameters


def _tiny(**kwargs: bool) -> MaskDiscriminator:
    return MaskDiscriminator(in_channels=3, image_size=32, filters=4, n_blocks=2, **kwargs)


def _masks(size: int = 32) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_score_shape_and_gradients(spectral_norm: bool) -> None:
    torch.manual_seed(0)
    discriminator = _tiny(spectral_norm=spectral_norm)
    masks = _masks().requires_grad_(True)
    score = discriminator(masks)
    assert score.shape == (2, 1)
    score.sum().backward()
    assert masks.grad is not None and masks.grad.abs().sum() > 0
    assert all(p.grad is not None for p in discriminator.parameters())


def test_keras_same_padding() -> None:
    assert _keras_same_padding(224, 4, 2) == (1, 1)
    assert _keras_same_padding(14, 4, 1) == (1, 2)
    assert _keras_same_padding(225, 4, 2) == (1, 2)


def test_default_architecture_matches_authors() -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        assert count_parameters(MaskDiscriminator()) == 11_346_881
    discriminator = MaskDiscriminator(filters=1)  # same strides and paddings as the default, cheap to run
    with torch.no_grad():
        features = discriminator.features(torch.rand(1, 3, 224, 224))
        assert features.shape == (1, 16, 14, 14)  # 224 → 112 → 56 → 28 → 14 → 14 (last block stride 1)
        assert discriminator(torch.rand(2, 3, 224, 224)).shape == (2, 1)
    assert {m.negative_slope for m in discriminator.modules() if isinstance(m, nn.LeakyReLU)} == {0.2}
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in discriminator.modules())


def test_odd_image_size_uses_ceil_like_keras() -> None:
    discriminator = MaskDiscriminator(in_channels=3, image_size=30, filters=4, n_blocks=2)
    assert discriminator(_masks(30)).shape == (2, 1)  # 30 → 15 → 8 → 8


def test_spectral_norm_is_a_parametrisation() -> None:
    discriminator = _tiny(spectral_norm=True)
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    # the parametrisation adds buffers, not parameters
    assert count_parameters(discriminator) == count_parameters(_tiny())
    assert all(nn.utils.parametrize.is_parametrized(m, "weight") for m in [*convs, discriminator.score])


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_seeded_determinism_and_state_dict_round_trip(spectral_norm: bool) -> None:
    torch.manual_seed(7)
    a = _tiny(spectral_norm=spectral_norm)
    torch.manual_seed(7)
    b = _tiny(spectral_norm=spectral_norm)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    masks = _masks()
    a(masks)  # one power iteration in training mode
    torch.manual_seed(9)
    c = _tiny(spectral_norm=spectral_norm)
    c.load_state_dict(a.state_dict())
    a.eval()
    c.eval()
    assert torch.equal(a(masks), c(masks))


def test_rejects_wrong_input_shape() -> None:
    with pytest.raises(ValueError, match="expected masks"):
        _tiny()(torch.rand(2, 4, 32, 32))
