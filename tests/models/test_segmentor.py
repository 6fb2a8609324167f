from __future__ import annotations

import pytest
import torch
from torch import nn

from sdnet.models import Segmentor


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _tiny() -> Segmentor:
    return Segmentor(anatomy_channels=4, n_classes=4, filters=8)


def test_logits_shape(anatomy: torch.Tensor) -> None:
    torch.manual_seed(0)
    logits = _tiny()(anatomy)
    assert logits.shape == (2, 4, 32, 32)
    torch.testing.assert_close(torch.softmax(logits, dim=1).sum(dim=1), torch.ones(2, 32, 32))


def test_gradients_reach_input_and_parameters(anatomy: torch.Tensor) -> None:
    torch.manual_seed(0)
    segmentor = _tiny()
    s = anatomy.clone().requires_grad_(True)
    (segmentor(s) * torch.randn(2, 4, 32, 32)).sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in segmentor.parameters())


def test_parameter_count_and_keras_defaults() -> None:
    assert _count(Segmentor()) == 42_116
    assert _count(Segmentor(anatomy_channels=16)) == 46_724
    segmentor = _tiny()
    assert {m.negative_slope for m in segmentor.modules() if isinstance(m, nn.LeakyReLU)} == {0.3}
    norms = [m for m in segmentor.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2 and all(m.momentum == 0.01 and m.eps == 1e-3 for m in norms)
    with pytest.raises(ValueError, match="n_classes"):
        Segmentor(n_classes=1)


def test_seeded_determinism_and_state_dict_round_trip(anatomy: torch.Tensor) -> None:
    torch.manual_seed(7)
    a = _tiny()
    torch.manual_seed(7)
    b = _tiny()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    a(anatomy)  # update running statistics
    torch.manual_seed(9)
    c = _tiny()
    c.load_state_dict(a.state_dict())
    a.eval()
    c.eval()
    assert torch.equal(a(anatomy), c(anatomy))
