"""What the FiLM decoder and the segmentor share: both read the anatomy factor s (2, 4, 32, 32).

Each test runs once per network; the tests of one network alone are in test_decoder.py and test_segmentor.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from sdnet.models import FiLMDecoder, Segmentor

from ..helpers import count_parameters
from .model_helpers import tiny_decoder, tiny_segmentor


@dataclass(frozen=True)
class Head:
    network: type[FiLMDecoder] | type[Segmentor]
    tiny: Callable[[], nn.Module]
    parameters: int  # trainable parameters at the authors' sizes (the class defaults)
    parameters_16: int  # ... with 16 anatomy channels
    takes_z: bool  # the decoder also reads the modality factor z (2, 4)

    def inputs(self, anatomy: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (anatomy, torch.randn(2, 4)) if self.takes_z else (anatomy,)


HEADS = [
    pytest.param(Head(FiLMDecoder, tiny_decoder, 6_409, 24_081, takes_z=True), id="decoder"),
    pytest.param(Head(Segmentor, tiny_segmentor, 42_116, 46_724, takes_z=False), id="segmentor"),
]


@pytest.mark.parametrize("head", HEADS)
def test_parameter_count_matches_authors(head: Head) -> None:
    assert count_parameters(head.network()) == head.parameters
    assert count_parameters(head.network(anatomy_channels=16)) == head.parameters_16
    for network in (head.network(), head.tiny()):
        assert {m.negative_slope for m in network.modules() if isinstance(m, nn.LeakyReLU)} == {0.3}


@pytest.mark.parametrize("head", HEADS)
def test_gradients_reach_input_and_parameters(head: Head, anatomy: torch.Tensor) -> None:
    torch.manual_seed(0)
    network = head.tiny()
    s = anatomy.clone().requires_grad_(True)
    out = network(*head.inputs(s))
    (out * torch.randn_like(out)).sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in network.parameters())


@pytest.mark.parametrize("head", HEADS)
def test_seeded_determinism_and_state_dict_round_trip(head: Head, anatomy: torch.Tensor) -> None:
    torch.manual_seed(7)
    a = head.tiny()
    torch.manual_seed(7)
    b = head.tiny()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    torch.manual_seed(9)
    c = head.tiny()
    inputs = head.inputs(anatomy)
    a(*inputs)  # update running statistics (the segmentor's batch norms; the decoder has none)
    assert not torch.equal(a(*inputs), c(*inputs))
    c.load_state_dict(a.state_dict())
    assert torch.equal(a(*inputs), c(*inputs))
    a.eval()
    c.eval()
    assert torch.equal(a(*inputs), c(*inputs))
