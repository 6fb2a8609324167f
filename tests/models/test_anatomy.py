from __future__ import annotations

import pytest
import torch
from torch import nn

from sdnet.models import AnatomyEncoder

from ..helpers import count_parameters


def _tiny(**kwargs: object) -> AnatomyEncoder:
    return AnatomyEncoder(anatomy_channels=4, filters=4, depth=3, **kwargs)  # type: ignore[arg-type]


def test_argmax_output_is_binary_one_hot(image: torch.Tensor) -> None:
    torch.manual_seed(0)
    encoder = _tiny()
    s = encoder(image)
    assert s.shape == (2, 4, 32, 32)
    assert torch.equal(s, (s == 1).float())
    assert torch.equal(s.sum(dim=1), torch.ones(2, 32, 32))


def test_probabilities_sum_to_one_and_match_s(image: torch.Tensor) -> None:
    torch.manual_seed(0)
    encoder = _tiny().eval()
    p = encoder.probabilities(image)
    assert p.shape == (2, 4, 32, 32)
    assert p.min() >= 0 and p.max() <= 1
    torch.testing.assert_close(p.sum(dim=1), torch.ones(2, 32, 32))
    assert torch.equal(encoder(image).argmax(dim=1), p.argmax(dim=1))


def test_round_mode_is_binary_with_at_most_one_channel(image: torch.Tensor) -> None:
    torch.manual_seed(0)
    s = _tiny(binarisation="round")(image)
    assert torch.equal(s, (s == 1).float())
    assert s.sum(dim=1).max() <= 1


def test_none_mode_is_soft(image: torch.Tensor) -> None:
    torch.manual_seed(0)
    encoder = _tiny(binarisation="none").eval()
    torch.testing.assert_close(encoder(image), encoder.probabilities(image))


@pytest.mark.parametrize("mode", ["argmax", "round"])
def test_gradient_reaches_first_conv_through_straight_through(image: torch.Tensor, mode: str) -> None:
    torch.manual_seed(0)
    encoder = _tiny(binarisation=mode)
    weights = torch.randn(2, 4, 32, 32)  # a loss whose gradient w.r.t. the softmax is not in its null space
    (encoder(image) * weights).sum().backward()
    first_conv = next(m for m in encoder.modules() if isinstance(m, nn.Conv2d))  # down[0], the image's first conv
    assert first_conv.in_channels == 1
    assert first_conv.weight.grad is not None
    assert first_conv.weight.grad.abs().sum() > 0


def test_parameter_count_matches_authors() -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        assert count_parameters(AnatomyEncoder()) == 34_526_344
        assert count_parameters(AnatomyEncoder(anatomy_channels=16)) == 34_526_864


def test_keras_batchnorm_settings() -> None:
    norms = [m for m in _tiny().modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms
    assert all(m.momentum == 0.01 and m.eps == 1e-3 for m in norms)


def test_seeded_determinism() -> None:
    torch.manual_seed(7)
    a = _tiny().state_dict()
    torch.manual_seed(7)
    b = _tiny().state_dict()
    torch.manual_seed(8)
    c = _tiny().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_state_dict_round_trip(image: torch.Tensor) -> None:
    torch.manual_seed(0)
    source = _tiny()
    source(image)  # update the BatchNorm running statistics
    torch.manual_seed(1)
    target = _tiny()
    target.load_state_dict(source.state_dict())
    source.eval()
    target.eval()
    assert torch.equal(source.probabilities(image), target.probabilities(image))


def test_rejects_bad_input_size() -> None:
    encoder = _tiny()
    with pytest.raises(ValueError, match="divisible"):
        encoder(torch.randn(1, 1, 30, 32))
    with pytest.raises(ValueError, match="shape"):
        encoder(torch.randn(1, 2, 32, 32))
    with pytest.raises(ValueError, match="binarisation"):
        AnatomyEncoder(binarisation="floor")  # type: ignore[arg-type]
