from __future__ import annotations

import pytest
import torch
from torch import nn

from sdnet.models import ModalityCode, ModalityEncoder

from ..helpers import count_parameters


def _tiny() -> ModalityEncoder:
    return ModalityEncoder(anatomy_channels=4, image_size=32, filters=4, n_layers=3, hidden=8, n_z=4)


def test_code_shapes(anatomy: torch.Tensor, image: torch.Tensor) -> None:
    torch.manual_seed(0)
    code = _tiny()(anatomy, image)
    assert isinstance(code, ModalityCode)
    assert code.mu.shape == code.logvar.shape == code.z.shape == (2, 4)
    assert not torch.equal(code.z, code.mu)


def test_no_sampling_gives_mu(anatomy: torch.Tensor, image: torch.Tensor) -> None:
    torch.manual_seed(0)
    code = _tiny()(anatomy, image, sample=False)
    assert torch.equal(code.z, code.mu)


def test_reparameterisation_uses_global_rng(anatomy: torch.Tensor, image: torch.Tensor) -> None:
    torch.manual_seed(0)
    encoder = _tiny()
    torch.manual_seed(3)
    code = encoder(anatomy, image)
    torch.manual_seed(3)
    eps = torch.randn(2, 4)
    torch.testing.assert_close(code.z, code.mu + torch.exp(0.5 * code.logvar) * eps)


def test_gradients_reach_all_parameters(anatomy: torch.Tensor, image: torch.Tensor) -> None:
    torch.manual_seed(0)
    encoder = _tiny()
    code = encoder(anatomy, image)
    (code.z.sum() + code.logvar.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_parameter_count_and_flatten_size_match_authors() -> None:
    encoder = ModalityEncoder()
    assert count_parameters(encoder) == 95_552
    assert count_parameters(ModalityEncoder(anatomy_channels=16)) == 96_704
    linear = encoder.dense[0]
    assert isinstance(linear, nn.Linear) and linear.in_features == 13 * 13 * 16


def test_keras_defaults() -> None:
    encoder = _tiny()
    slopes = {m.negative_slope for m in encoder.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.3}
    norms = [m for m in encoder.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert len(norms) == 4 and all(m.momentum == 0.01 and m.eps == 1e-3 for m in norms)


def test_seeded_determinism_and_state_dict_round_trip(anatomy: torch.Tensor, image: torch.Tensor) -> None:
    torch.manual_seed(7)
    a = _tiny()
    torch.manual_seed(7)
    b = _tiny()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    a(anatomy, image)  # update running statistics
    torch.manual_seed(9)
    c = _tiny()
    c.load_state_dict(a.state_dict())
    a.eval()
    c.eval()
    assert torch.equal(a(anatomy, image, sample=False).mu, c(anatomy, image, sample=False).mu)


def test_rejects_wrong_image_size(anatomy: torch.Tensor, image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="built for"):
        _tiny()(anatomy[..., :16, :16], image[..., :16, :16])
    with pytest.raises(ValueError, match="too small"):
        ModalityEncoder(image_size=8, n_layers=4)
