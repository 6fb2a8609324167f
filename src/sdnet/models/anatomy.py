"""Anatomy encoder f_anatomy: X → S, a U-Net whose softmax output is binarised (paper §3.1.1, Fig. 2).

Architecture of the authors' Keras code (authors-code §1.3), channels-first:

* ``conv_block(f)`` = 2 × (Conv 3×3 'same' → BatchNorm → ReLU) (plain ReLU, not LeakyReLU).
* Down path: ``depth`` conv_blocks with f = filters·2^i, each followed by MaxPool 2×2; bottleneck conv_block
  with filters·2^depth (64-128-256-512 → 1024 for the ACDC configuration; 224 → 112 → 56 → 28 → 14).
* Up path, per level: nearest UpSampling ×2 → Conv 3×3 'same' → BatchNorm → *linear*; concat([up, skip])
  (upsampled first); conv_block(f).
* Conv 1×1 to C channels, softmax over channels, then :func:`~sdnet.models.blocks.binarise` with a
  straight-through gradient.

Everything before the 1×1 head is :class:`UNet`, which the U-Net baselines of paper §4.3
(:mod:`sdnet.models.baselines`) share, so that all compared methods use the same network body.

Keras defaults are reproduced explicitly: BatchNorm momentum 0.99 (PyTorch 0.01), eps 1e-3; Glorot-uniform
weights, zero biases. With the defaults the network has 34,526,344 trainable parameters (authors-code §1.18).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sdnet.models.blocks import BinarisationMode, binarise, conv_bn_act, float32_head, keras_init_

__all__ = ["AnatomyEncoder", "UNet"]


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """2 × (Conv 3×3 'same' → BatchNorm → ReLU): the U-Net's ``conv_block``."""
    return nn.Sequential(
        conv_bn_act(in_channels, out_channels, activation=nn.ReLU()),
        conv_bn_act(out_channels, out_channels, activation=nn.ReLU()),
    )


class _UpLevel(nn.Module):
    """One up-sampling level: nearest ×2 → Conv 3×3 → BN (linear) → concat([up, skip]) → conv_block."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv_bn_act(in_channels, out_channels, activation=nn.Identity()),
        )
        self.conv = _conv_block(2 * out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """x: (B, 2f, h, w) float; skip: (B, f, 2h, 2w) float → (B, f, 2h, 2w) float."""
        up = self.upsample(x)  # (B, f, 2h, 2w)
        out: Tensor = self.conv(torch.cat([up, skip], dim=1))  # cat: (B, 2f, 2h, 2w) → (B, f, 2h, 2w)
        return out


class UNet(nn.Module):
    """The anatomy encoder's U-Net without its output head: down path, bottleneck, up path (paper §3.1.1).

    Shared by :class:`AnatomyEncoder` (1×1 head to C channels, softmax, binarisation) and the U-Net baselines of
    paper §4.3 (:class:`~sdnet.models.baselines.UNetSegmenter`: 1×1 head to n_classes, softmax), so that every
    method compared in the semi-supervised study uses exactly the same network body. Subclasses add ``head``.

    Args:
        in_channels: image channels (1 for MR/CT).
        filters: filters of the first U-Net level, doubled at each down-sampling step.
        depth: number of 2×2 max-pool steps; H and W must be divisible by 2**depth.

    Attributes:
        out_channels: channels of :meth:`features` (= ``filters``).
    """

    def __init__(self, *, in_channels: int = 1, filters: int = 64, depth: int = 4) -> None:
        super().__init__()
        if min(in_channels, filters, depth) < 1:
            raise ValueError("in_channels, filters and depth must all be >= 1")
        self.in_channels = in_channels
        self.depth = depth
        widths = [filters * 2**i for i in range(depth)]  # 64, 128, 256, 512
        self.down = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.down.append(_conv_block(previous, width))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _conv_block(previous, filters * 2**depth)  # 1024
        self.up = nn.ModuleList()
        previous = filters * 2**depth
        for width in reversed(widths):
            self.up.append(_UpLevel(in_channels=previous, out_channels=width))
            previous = width
        self.out_channels = previous

    def features(self, x: Tensor) -> Tensor:
        """The last up-level's feature maps, before any head.

        Args:
            x: (B, in_channels, H, W) float in [-1, 1]; H and W divisible by 2**depth.

        Returns:
            (B, filters, H, W) float.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected x of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        factor = 2**self.depth
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"H and W must be divisible by 2**depth = {factor}, got {tuple(x.shape[2:])}")
        skips: list[Tensor] = []
        h: Tensor = x
        for block in self.down:
            h = block(h)  # (B, f·2^i, H/2^i, W/2^i)
            skips.append(h)
            h = self.pool(h)  # (B, f·2^i, H/2^(i+1), W/2^(i+1))
        h = self.bottleneck(h)  # (B, f·2^depth, H/2^depth, W/2^depth)
        for level, skip in zip(self.up, reversed(skips), strict=True):
            h = level(h, skip)  # (B, f·2^i, H/2^i, W/2^i)
        return h  # (B, f, H, W)


class AnatomyEncoder(UNet):
    """U-Net that maps an image x to the binary anatomy factor s (paper §3.1.1).

    Args:
        in_channels: image channels (1 for MR/CT).
        anatomy_channels: C, channels of s (8 for ACDC).
        filters: filters of the first U-Net level, doubled at each down-sampling step.
        depth: number of 2×2 max-pool steps; H and W must be divisible by 2**depth.
        binarisation: ``"argmax"``, ``"round"`` or ``"none"``; see :func:`~sdnet.models.blocks.binarise`.
            The authors use rounding (``"round"``); the library default is ``"argmax"``, which guarantees the
            paper's one-active-channel-per-pixel constraint.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        anatomy_channels: int = 8,
        filters: int = 64,
        depth: int = 4,
        binarisation: BinarisationMode = "argmax",
    ) -> None:
        if binarisation not in ("argmax", "round", "none"):
            raise ValueError(f"binarisation must be 'argmax', 'round' or 'none', got {binarisation!r}")
        if min(in_channels, anatomy_channels, filters, depth) < 1:
            raise ValueError("in_channels, anatomy_channels, filters and depth must all be >= 1")
        super().__init__(in_channels=in_channels, filters=filters, depth=depth)
        self.anatomy_channels = anatomy_channels
        self.binarisation: BinarisationMode = binarisation
        self.head = nn.Conv2d(self.out_channels, anatomy_channels, kernel_size=1)
        keras_init_(self)

    def probabilities(self, x: Tensor) -> Tensor:
        """The softmax anatomy map before binarisation.

        Args:
            x: (B, in_channels, H, W) float in [-1, 1]; H and W divisible by 2**depth.

        Returns:
            (B, C, H, W) float in [0, 1], summing to 1 over C.
        """
        return torch.softmax(float32_head(self.head, self.features(x)), dim=1)  # (B, C, H, W), float32 at least

    def forward(self, x: Tensor) -> Tensor:
        """Encode an image into the anatomy factor s.

        Args:
            x: (B, in_channels, H, W) float in [-1, 1]; H and W divisible by 2**depth.

        Returns:
            s: (B, C, H, W). ``argmax``: binary {0, 1}, exactly one active channel per pixel; ``round``: binary
            {0, 1}, at most one active channel per pixel (all-zero where no probability exceeds 0.5); ``none``:
            float in [0, 1] summing to 1 over C. Gradients pass straight through the binarisation.
        """
        return binarise(self.probabilities(x), self.binarisation)
