"""Segmentor h: S → M, two convolutional blocks and a 1×1 convolution on the anatomy factor (paper §3.2, Fig. 2).

Architecture of the authors' Keras code (authors-code §1.7), channels-first: 2 × (Conv 3×3 'same' → BatchNorm →
LeakyReLU 0.3) → Conv 1×1 to ``n_classes`` = L + 1.

Deviation in the class layout: here the **background is channel 0** and all ``n_classes`` logits are returned;
the softmax is applied by the caller (:class:`~sdnet.models.sdnet.SDNet`). The authors instead put background in
the *last* softmax channel and slice it off, returning only the L foreground probabilities. The foreground
probabilities of this segmentor are ``softmax(logits, dim=1)[:, 1:]``; they are what the mask discriminator and
the (foreground-only) Dice loss should see.

Keras defaults are reproduced explicitly: LeakyReLU slope 0.3, BatchNorm momentum 0.99 (PyTorch 0.01), eps 1e-3,
Glorot-uniform weights, zero biases. With the defaults the network has 42,116 trainable parameters (authors-code §1.18).
"""

from __future__ import annotations

from torch import Tensor, nn

from sdnet.models.blocks import KERAS_LEAKY_SLOPE, conv_bn_act, float32_head, keras_init_

__all__ = ["Segmentor"]


class Segmentor(nn.Module):
    """Maps the anatomy factor s to segmentation logits (paper §3.2).

    Args:
        anatomy_channels: C, channels of the anatomy factor s.
        n_classes: L + 1 segmentation classes, background at index 0.
        filters: channels of the two 3×3 convolutions.
    """

    def __init__(self, *, anatomy_channels: int = 8, n_classes: int = 4, filters: int = 64) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2 (background + at least one structure), got {n_classes}")
        self.anatomy_channels = anatomy_channels
        self.n_classes = n_classes
        self.features = nn.Sequential(
            conv_bn_act(anatomy_channels, filters, activation=nn.LeakyReLU(KERAS_LEAKY_SLOPE)),
            conv_bn_act(filters, filters, activation=nn.LeakyReLU(KERAS_LEAKY_SLOPE)),
        )
        self.head = nn.Conv2d(filters, n_classes, kernel_size=1)
        keras_init_(self)

    def forward(self, anatomy: Tensor) -> Tensor:
        """Segment the anatomy factor.

        Args:
            anatomy: s, (B, C, H, W) float, binary {0, 1} (or soft in [0, 1]).

        Returns:
            logits: (B, n_classes, H, W) float (unbounded); class 0 is background. Apply a softmax over dim 1
            for probabilities.
        """
        logits = float32_head(self.head, self.features(anatomy))  # (B, n_classes, H, W), float32 at least
        return logits
