"""The segmentation network of the paper's baselines (§4.3): the anatomy encoder's U-Net with a class head.

Paper §4.3: the fully supervised **U-Net** baseline "is the same as the SDNet's anatomy encoder for fair
comparison"; the **GAN** baseline adds the mask discriminator's adversarial cost to that U-Net, and **self-train**
(Bai et al., 2017, without CRF post-processing) retrains the same U-Net on its own pseudo-labels. All three use
:class:`UNetSegmenter`; they differ only in training (:mod:`sdnet.training.methods`).

:class:`UNetSegmenter` is :class:`~sdnet.models.anatomy.UNet` (the anatomy encoder's body, built by the same code,
so its parameter count is that of f_anatomy without the 1×1 head) followed by a 1×1 convolution to ``n_classes``
and a softmax — no binarisation, no decoder, no separate segmentor. It exposes the same
:meth:`~UNetSegmenter.segment` as :class:`~sdnet.models.sdnet.SDNet`, so evaluation and inference treat both alike
(:class:`sdnet.models.Segmenter`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sdnet.models.anatomy import UNet
from sdnet.models.blocks import float32_head, keras_init_
from sdnet.models.sdnet import Segmentation

__all__ = ["UNetSegmenter"]


class UNetSegmenter(UNet):
    """The anatomy encoder's U-Net with a 1×1 convolution to ``n_classes`` logits and a softmax (paper §4.3).

    Args:
        in_channels: image channels (1 for MR/CT).
        n_classes: L + 1 segmentation classes, background at index 0.
        filters: filters of the first U-Net level, doubled at each down-sampling step.
        depth: number of 2×2 max-pool steps; H and W must be divisible by 2**depth.
    """

    def __init__(self, *, in_channels: int = 1, n_classes: int = 4, filters: int = 64, depth: int = 4) -> None:
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2 (background + at least one structure), got {n_classes}")
        super().__init__(in_channels=in_channels, filters=filters, depth=depth)
        self.n_classes = n_classes
        self.head = nn.Conv2d(self.out_channels, n_classes, kernel_size=1)
        keras_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        """Segmentation logits.

        Args:
            x: (B, in_channels, H, W) float in [-1, 1]; H and W divisible by 2**depth.

        Returns:
            logits: (B, n_classes, H, W) float (unbounded); class 0 is background.
        """
        logits = float32_head(self.head, self.features(x))  # (B, n_classes, H, W), float32 at least
        return logits

    def segment(self, x: Tensor) -> Segmentation:
        """Segment images, as :meth:`SDNet.segment <sdnet.models.sdnet.SDNet.segment>` does.

        Args:
            x: (B, in_channels, H, W) float in [-1, 1].

        Returns:
            Segmentation: logits and probabilities (B, n_classes, H, W), background at index 0. A U-Net has no
            anatomy factor; ``anatomy`` holds the class probabilities (B, n_classes, H, W).
        """
        logits = self(x)  # (B, n_classes, H, W)
        probabilities = torch.softmax(logits, dim=1)
        return Segmentation(anatomy=probabilities, logits=logits, probabilities=probabilities)
