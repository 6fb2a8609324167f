"""The FiLM decoder alone (shared checks with the segmentor: test_heads.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from .model_helpers import tiny_decoder


class _Constant(nn.Module):
    """Ignores its input and returns a fixed (B, 2w) tensor."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.value


def test_output_shape_and_range(anatomy: torch.Tensor) -> None:
    torch.manual_seed(0)
    out = tiny_decoder()(anatomy, 10 * torch.randn(2, 4))
    assert out.shape == (2, 1, 32, 32)
    assert out.min() >= -1 and out.max() <= 1


def test_forward_equals_render_of_film_parameters(anatomy: torch.Tensor) -> None:
    torch.manual_seed(0)
    decoder = tiny_decoder()
    z = torch.randn(2, 4)
    params = decoder.film_parameters(z)
    assert len(params) == 2
    assert all(gamma.shape == beta.shape == (2, 4) for gamma, beta in params)
    assert torch.equal(decoder(anatomy, z), decoder.render(anatomy, params))


def test_z_acts_only_through_gamma_beta(anatomy: torch.Tensor) -> None:
    torch.manual_seed(0)
    decoder = tiny_decoder()
    z1, z2 = torch.randn(2, 4), torch.randn(2, 4)
    params = decoder.film_parameters(z1)
    reference = decoder(anatomy, z1)
    assert not torch.equal(decoder(anatomy, z2), reference)
    # Freeze (γ, β) at their z1 values: a different z must then change nothing.
    for block, (gamma, beta) in zip(decoder.blocks, params, strict=True):
        block.film_mlp = _Constant(torch.cat([gamma, beta], dim=1).detach())
    assert torch.equal(decoder(anatomy, z2), reference)


def test_changing_gamma_changes_output(anatomy: torch.Tensor) -> None:
    torch.manual_seed(0)
    decoder = tiny_decoder()
    params = decoder.film_parameters(torch.randn(2, 4))
    changed = [(params[0][0] + 1.0, params[0][1]), params[1]]
    assert not torch.equal(decoder.render(anatomy, params), decoder.render(anatomy, changed))
    with pytest.raises(ValueError, match="pairs"):
        decoder.render(anatomy, params[:1])


def test_width_defaults_to_anatomy_channels_and_can_differ(anatomy: torch.Tensor) -> None:
    assert tiny_decoder().width == 4
    wide = tiny_decoder(width=6)
    assert wide.width == 6
    assert all(g.shape == (2, 6) for g, _ in wide.film_parameters(torch.randn(2, 4)))
    assert wide(anatomy, torch.randn(2, 4)).shape == (2, 1, 32, 32)
