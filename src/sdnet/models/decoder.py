"""Decoder g: S × Z → Y, a convolutional network conditioned on z through FiLM layers (paper §3.3, Fig. 2).

Architecture of the authors' Keras code (authors-code §1.6), channels-first. ``n_blocks`` residual blocks, each with its
own convolutions and its own two-layer FiLM network:

    l1 = LeakyReLU(Conv 3×3(h))
    l2 = Conv 3×3(l1)
    (γ, β) = split(Linear(2w → 2w)(LeakyReLU(Linear(n_z → 2w)(z))))   # first w units γ, last w units β
    l2 = LeakyReLU(γ ⊙ l2 + β)
    h = l1 + l2

then Conv 3×3 → ``out_channels``, tanh. The width w inside the decoder is C (the anatomy channels) for the
authors; there is no normalisation in the decoder.

The decoder sees z *only* through (γ, β): :meth:`FiLMDecoder.film_parameters` maps z to the list of (γ, β) pairs
and :meth:`FiLMDecoder.render` draws the image from s and that list; ``forward(s, z)`` is exactly
``render(s, film_parameters(z))``. No parameters are assigned from outside.

Keras defaults are reproduced explicitly: LeakyReLU slope 0.3, Glorot-uniform weights, zero biases. With the
defaults the network has 6,409 trainable parameters (authors-code §1.18).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from sdnet.models.blocks import KERAS_LEAKY_SLOPE, film, keras_init_

__all__ = ["FiLMDecoder"]

FiLMParameters = list[tuple[Tensor, Tensor]]
"""One (γ, β) pair per FiLM block, each (B, width)."""


class _FiLMResidualBlock(nn.Module):
    """Conv → LReLU → Conv → FiLM → LReLU, plus a skip from the first activation; owns its FiLM MLP."""

    def __init__(self, *, in_channels: int, width: int, n_z: int) -> None:
        super().__init__()
        self.width = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1)
        self.activation = nn.LeakyReLU(KERAS_LEAKY_SLOPE)
        self.film_mlp = nn.Sequential(
            nn.Linear(n_z, 2 * width),
            nn.LeakyReLU(KERAS_LEAKY_SLOPE),
            nn.Linear(2 * width, 2 * width),
        )

    def film_parameters(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z: (B, n_z) → (γ, β), each (B, width)."""
        gamma, beta = self.film_mlp(z).split(self.width, dim=1)  # (B, 2w) → 2 × (B, w)
        return gamma, beta

    def forward(self, h: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        """h: (B, in, H, W); gamma, beta: (B, w) → (B, w, H, W)."""
        l1 = self.activation(self.conv1(h))  # (B, w, H, W)
        l2 = self.activation(film(self.conv2(l1), gamma, beta))  # (B, w, H, W)
        out: Tensor = l1 + l2
        return out


class FiLMDecoder(nn.Module):
    """Renders an image from the anatomy factor s, modulated by the modality factor z via FiLM (paper §3.3).

    Args:
        anatomy_channels: C, channels of the anatomy factor s.
        n_z: n_z, dimension of z.
        n_blocks: FiLM residual blocks (the paper's "four FiLM layers").
        width: channels inside the decoder; 0 means ``anatomy_channels`` (the authors' choice).
        out_channels: image channels of the reconstruction.
    """

    def __init__(
        self,
        *,
        anatomy_channels: int = 8,
        n_z: int = 8,
        n_blocks: int = 4,
        width: int = 0,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        if width < 0:
            raise ValueError(f"width must be >= 0 (0 = anatomy_channels), got {width}")
        if min(anatomy_channels, n_z, n_blocks, out_channels) < 1:
            raise ValueError("anatomy_channels, n_z, n_blocks and out_channels must all be >= 1")
        self.anatomy_channels = anatomy_channels
        self.n_z = n_z
        self.width = width or anatomy_channels
        self.blocks = nn.ModuleList(
            _FiLMResidualBlock(in_channels=anatomy_channels if i == 0 else self.width, width=self.width, n_z=n_z)
            for i in range(n_blocks)
        )
        self.out = nn.Conv2d(self.width, out_channels, kernel_size=3, padding=1)
        keras_init_(self)

    def film_parameters(self, z: Tensor) -> FiLMParameters:
        """Map z to the FiLM scales and offsets of every block.

        Args:
            z: (B, n_z) float.

        Returns:
            ``n_blocks`` pairs (γ, β), each (B, width) float (unbounded; γ has no "+1" offset).
        """
        if z.dim() != 2 or z.shape[1] != self.n_z:
            raise ValueError(f"expected z of shape (B, {self.n_z}), got {tuple(z.shape)}")
        return [cast(_FiLMResidualBlock, block).film_parameters(z) for block in self.blocks]

    def render(self, anatomy: Tensor, film_params: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
        """Draw the image from s and explicit FiLM parameters.

        Args:
            anatomy: s, (B, C, H, W) float, binary {0, 1} (or soft in [0, 1]).
            film_params: ``n_blocks`` pairs (γ, β), each (B, width) float, e.g. from :meth:`film_parameters`.

        Returns:
            x̂: (B, out_channels, H, W) float in [-1, 1] (tanh).
        """
        if len(film_params) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} (gamma, beta) pairs, got {len(film_params)}")
        h = anatomy
        for block, (gamma, beta) in zip(self.blocks, film_params, strict=True):
            h = block(h, gamma, beta)  # (B, width, H, W)
        return torch.tanh(self.out(h))  # (B, out_channels, H, W)

    def forward(self, anatomy: Tensor, z: Tensor) -> Tensor:
        """Reconstruct x̂ = g(s, z) = render(s, film_parameters(z)).

        Args:
            anatomy: s, (B, C, H, W) float, binary {0, 1} (or soft in [0, 1]).
            z: (B, n_z) float.

        Returns:
            x̂: (B, out_channels, H, W) float in [-1, 1] (tanh).
        """
        return self.render(anatomy, self.film_parameters(z))
