"""Modality encoder f_modality: X × S → Z, the VAE encoder of q(z | x, s) (paper §3.1.2, Fig. 2).

Architecture of the authors' Keras code (authors-code §1.5), channels-first:

* input concat([s, x]) over channels (anatomy first, image last): C + 1 channels;
* ``n_layers`` × (Conv 3×3, stride 2, padding 0 = Keras 'valid' → BatchNorm → LeakyReLU 0.3), all with
  ``filters`` channels; spatial 224 → 111 → 55 → 27 → 13 for the ACDC configuration;
* flatten (13·13·16 = 2704) → Linear(hidden) → BatchNorm1d → LeakyReLU 0.3;
* two linear heads, μ and log σ² (n_z each); z = μ + exp(½ log σ²) · ε, ε ~ N(0, I) (reparameterisation).

Keras defaults are reproduced explicitly: LeakyReLU slope 0.3, BatchNorm momentum 0.99 (PyTorch 0.01), eps 1e-3,
Glorot-uniform weights, zero biases. With the defaults the network has 95,552 trainable parameters (authors-code §1.18).

Note: Keras flattens channels-last feature maps, PyTorch channels-first, so the Linear layer's input ordering
differs from the authors' (a permutation of the weight matrix; irrelevant when training from scratch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sdnet.models.blocks import KERAS_LEAKY_SLOPE, batch_norm_1d, conv_bn_act, keras_init_

__all__ = ["ModalityCode", "ModalityEncoder"]


@dataclass(frozen=True)
class ModalityCode:
    """The modality factor: the Gaussian q(z | x, s) and a sample of it.

    Attributes:
        mu: (B, n_z) float, μ.
        logvar: (B, n_z) float, log σ².
        z: (B, n_z) float, μ + σ·ε when sampled, else μ.
    """

    mu: Tensor
    logvar: Tensor
    z: Tensor


def _valid_output_size(size: int) -> int:
    """Spatial size after a 3×3, stride-2, 'valid' (unpadded) convolution."""
    return (size - 3) // 2 + 1


class ModalityEncoder(nn.Module):
    """Convolutional VAE encoder of the modality factor z from an image and its anatomy factor (paper §3.1.2).

    Args:
        anatomy_channels: C, channels of the anatomy factor s.
        in_channels: image channels (1 for MR/CT).
        image_size: H = W of the inputs; fixes the size of the flattened features (the network is not fully
            convolutional).
        filters: channels of every strided convolution.
        n_layers: number of stride-2 'valid' convolutions.
        hidden: width of the dense layer before the heads.
        n_z: n_z, dimension of z.
    """

    def __init__(
        self,
        *,
        anatomy_channels: int = 8,
        in_channels: int = 1,
        image_size: int = 224,
        filters: int = 16,
        n_layers: int = 4,
        hidden: int = 32,
        n_z: int = 8,
    ) -> None:
        super().__init__()
        size = image_size
        for _ in range(n_layers):
            size = _valid_output_size(size)
        if size < 1:
            raise ValueError(f"image_size={image_size} is too small for {n_layers} stride-2 'valid' convolutions")
        self.anatomy_channels = anatomy_channels
        self.in_channels = in_channels
        self.image_size = image_size
        self.n_z = n_z

        layers: list[nn.Module] = []
        previous = anatomy_channels + in_channels
        for _ in range(n_layers):
            layers.append(
                conv_bn_act(
                    previous, filters, activation=nn.LeakyReLU(KERAS_LEAKY_SLOPE), kernel_size=3, stride=2, padding=0
                )
            )
            previous = filters
        self.convs = nn.Sequential(*layers)
        self.dense = nn.Sequential(
            nn.Linear(filters * size * size, hidden),  # 2704 → 32 at the defaults
            batch_norm_1d(hidden),
            nn.LeakyReLU(KERAS_LEAKY_SLOPE),
        )
        self.mu = nn.Linear(hidden, n_z)
        self.logvar = nn.Linear(hidden, n_z)
        keras_init_(self)

    def forward(self, anatomy: Tensor, image: Tensor, *, sample: bool = True) -> ModalityCode:
        """Encode q(z | x, s) and draw z with the reparameterisation trick.

        Args:
            anatomy: s, (B, C, S, S) float, binary {0, 1} (or soft in [0, 1]), S = image_size.
            image: x, (B, in_channels, S, S) float in [-1, 1].
            sample: draw z = μ + exp(½ log σ²)·ε with ε from the global torch RNG (``torch.randn_like``);
                if False, z = μ (deterministic encoding).

        Returns:
            ModalityCode with mu, logvar and z, each (B, n_z) float (unbounded).
        """
        expected = (self.image_size, self.image_size)
        if tuple(anatomy.shape[2:]) != expected or tuple(image.shape[2:]) != expected:
            raise ValueError(
                f"ModalityEncoder was built for {expected} inputs, got anatomy {tuple(anatomy.shape)} and image "
                f"{tuple(image.shape)}"
            )
        h = torch.cat([anatomy, image], dim=1)  # (B, C + in_channels, S, S)
        h = self.convs(h)  # (B, filters, s, s), s = 13 for S = 224
        h = h.flatten(1)  # (B, filters·s·s)
        h = self.dense(h)  # (B, hidden)
        mu = self.mu(h)  # (B, n_z)
        logvar = self.logvar(h)  # (B, n_z)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if sample else mu
        return ModalityCode(mu=mu, logvar=logvar, z=z)
