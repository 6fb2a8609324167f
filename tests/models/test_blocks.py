from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sdnet.models.blocks import (
    KERAS_BN_EPS,
    KERAS_BN_MOMENTUM,
    batch_norm_1d,
    binarise,
    channel_argmax,
    conv_bn_act,
    film,
    float32_head,
    keras_init_,
)


def _probabilities(shape: tuple[int, ...], seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(*shape, generator=generator), dim=1)


def test_keras_init_is_glorot_uniform_with_zero_bias() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3)
    linear = nn.Linear(100, 50)
    model = nn.Sequential(conv, nn.Flatten(), linear)
    keras_init_(model)
    conv_limit = math.sqrt(6 / (16 * 9 + 32 * 9))
    linear_limit = math.sqrt(6 / (100 + 50))
    assert conv.weight.abs().max() <= conv_limit
    assert conv.weight.abs().max() > 0.9 * conv_limit
    assert linear.weight.abs().max() <= linear_limit
    assert linear.weight.abs().max() > 0.9 * linear_limit
    assert conv.bias is not None and linear.bias is not None
    assert torch.count_nonzero(conv.bias) == 0
    assert torch.count_nonzero(linear.bias) == 0


def test_conv_bn_act_uses_keras_batchnorm_defaults() -> None:
    block = conv_bn_act(3, 5, activation=nn.ReLU())
    bn = block[1]
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.momentum == KERAS_BN_MOMENTUM == 0.01
    assert bn.eps == KERAS_BN_EPS == 1e-3
    assert block(torch.randn(2, 3, 8, 8)).shape == (2, 5, 8, 8)
    strided = conv_bn_act(3, 5, activation=nn.Identity(), stride=2, padding=0)
    assert strided(torch.randn(2, 3, 224, 224)).shape == (2, 5, 111, 111)
    bn1 = batch_norm_1d(7)
    assert bn1.momentum == 0.01 and bn1.eps == 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binarise_argmax_is_exactly_one_hot(dtype: torch.dtype) -> None:
    # Near-uniform softmax over 8 channels: the max is usually < 0.5, the case where p + (1 - p) is inexact.
    p = _probabilities((2, 8, 16, 16), scale=0.3).to(dtype)
    s = binarise(p, "argmax")
    assert s.dtype == dtype
    assert torch.equal(s, (s == 1).to(dtype))  # values exactly 0.0 or 1.0
    assert torch.equal(s.sum(dim=1), torch.ones(2, 16, 16, dtype=dtype))
    assert torch.equal(s.argmax(dim=1), p.argmax(dim=1))


def test_binarise_round_is_exactly_binary_and_can_be_all_zero() -> None:
    p = _probabilities((2, 8, 16, 16), scale=3.0)
    s = binarise(p, "round")
    assert torch.equal(s, (s == 1).float())
    assert torch.equal(s, torch.round(p))
    assert s.sum(dim=1).max() <= 1
    uniform = torch.full((1, 8, 2, 2), 1 / 8)
    assert torch.count_nonzero(binarise(uniform, "round")) == 0  # no channel above 0.5 → all-zero pixel


def test_binarise_none_returns_probabilities() -> None:
    p = _probabilities((2, 4, 8, 8))
    assert binarise(p, "none") is p


@pytest.mark.parametrize("mode", ["argmax", "round"])
def test_binarise_backward_is_identity(mode: str) -> None:
    p = _probabilities((2, 8, 8, 8), scale=0.5).requires_grad_(True)
    weights = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(5))
    (binarise(p, mode) * weights).sum().backward()  # type: ignore[arg-type]
    assert p.grad is not None
    assert torch.equal(p.grad, weights)


def test_binarise_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="binarisation mode"):
        binarise(torch.rand(1, 2, 2, 2), "floor")  # type: ignore[arg-type]


def test_film_broadcasts_over_space() -> None:
    features = torch.randn(2, 3, 4, 5)
    gamma, beta = torch.randn(2, 3), torch.randn(2, 3)
    out = film(features, gamma, beta)
    assert out.shape == (2, 3, 4, 5)
    expected = features * gamma.view(2, 3, 1, 1) + beta.view(2, 3, 1, 1)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="FiLM"):
        film(features, torch.randn(2, 4), torch.randn(2, 4))


def test_channel_argmax_matches_torch_argmax_including_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    values = torch.randint(0, 3, (3, 6, 9, 7), generator=gen).float()  # many ties: the first maximum must win
    assert torch.equal(channel_argmax(values), values.argmax(dim=1, keepdim=True))
    values = torch.randn(2, 5, 4, 4, generator=gen)
    assert torch.equal(channel_argmax(values), values.argmax(dim=1, keepdim=True))
    assert channel_argmax(values[:, :1]).abs().sum() == 0  # one channel: always index 0


def test_float32_head_runs_in_float32_under_autocast() -> None:
    head = nn.Conv2d(4, 3, kernel_size=1)
    features = torch.randn(2, 4, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert head(features).dtype == torch.bfloat16  # what autocast would do
        out = float32_head(head, features.to(torch.bfloat16))
    assert out.dtype == torch.float32
    assert torch.allclose(out, head(features.to(torch.bfloat16).float()))
    assert float32_head(head.double(), features.double()).dtype == torch.float64  # float64 stays float64
