from __future__ import annotations

import pytest
import torch
from torch import nn

from sdnet.models import FiLMDecoder


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _tiny(**kwargs: int) -> FiLMDecoder:
    return FiLMDecoder(anatomy_channels=4, n_z=4, n_blocks=2, **kwargs)


class _Constant(nn.Module):
    """Ignores its input and returns a fixed (B, 2w) tensor."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.value


def test_output_shape_and_range(anatomy: torch.Tensor) -> None:
    torch.manual_seed(0)
    out = _tiny()(anatomy, 10 * torch.randn(2, 4))
    assert out.shape == (2, 1, 32, 32)
    assert out.min() >= -1 and out.max() <= 1


def test_forward_equals_render_of_film_parameters(anatomy: torch.Tensor) -> None:
    torch.manual_seed(0)
    decoder = _tiny()
    z = torch.randn(2, 4)
    params = decoder.film_parameters(z)
    assert len(params) == 2
    assert all(gamma.shape == beta.shape == (2, 4) for gamma, beta in params)
    assert torch.equal(decoder(anatomy, z), decoder.render(anatomy, params))


def test_z_acts_only_through_gamma_beta(anatomy: torch.Tensor) -> None:
    torch.manual_seed(0)
    decoder = _tiny()
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
    decoder = _tiny()
    params = decoder.film_parameters(torch.randn(2, 4))
    changed = [(params[0][0] + 1.0, params[0][1]), params[1]]
    assert not torch.equal(decoder.render(anatomy, params), decoder.render(anatomy, changed))
    with pytest.raises(ValueError, match="pairs"):
        decoder.render(anatomy, params[:1])


def test_gradients_reach_all_parameters(anatomy: torch.Tensor) -> None:
    torch.manual_seed(0)
    decoder = _tiny()
    decoder(anatomy, torch.randn(2, 4)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())


def test_width_defaults_to_anatomy_channels_and_can_differ(anatomy: torch.Tensor) -> None:
    assert _tiny().width == 4
    wide = _tiny(width=6)
    assert wide.width == 6
    assert all(g.shape == (2, 6) for g, _ in wide.film_parameters(torch.randn(2, 4)))
    assert wide(anatomy, torch.randn(2, 4)).shape == (2, 1, 32, 32)


def test_parameter_count_matches_authors() -> None:
    assert _count(FiLMDecoder()) == 6_409
    assert _count(FiLMDecoder(anatomy_channels=16)) == 24_081
    slopes = {m.negative_slope for m in FiLMDecoder().modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.3}


def test_seeded_determinism_and_state_dict_round_trip(anatomy: torch.Tensor) -> None:
    torch.manual_seed(7)
    a = _tiny()
    torch.manual_seed(7)
    b = _tiny()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    torch.manual_seed(9)
    c = _tiny()
    z = torch.randn(2, 4)
    assert not torch.equal(a(anatomy, z), c(anatomy, z))
    c.load_state_dict(a.state_dict())
    assert torch.equal(a(anatomy, z), c(anatomy, z))
