"""Mask discriminator D_M: an LSGAN critic on segmentation masks (paper §3.2; DC-GAN without BatchNorm).

Architecture of the authors' Keras code (authors-code §1.8), channels-first:

* Conv 4×4, stride 2, 'same' → LeakyReLU 0.2 with ``filters`` channels;
* ``n_blocks`` × (Conv 4×4 'same' → LeakyReLU 0.2) with filters·2^(i+1) channels, stride 2 except the last
  block, which has stride 1 (64 → 128, 256, 512, 1024; spatial 224 → 112 → 56 → 28 → 14 → 14);
* no normalisation; flatten (14·14·1024 = 200,704) → Linear(1): the LSGAN score, no activation.

Keras/TensorFlow 'same' padding is reproduced exactly with explicit :class:`torch.nn.ZeroPad2d` layers: the total
padding is max((⌈n/s⌉ − 1)·s + k − n, 0), the extra pixel (if odd) going right/bottom. For a 4×4 kernel that is
(1, 1) at stride 2 on even sizes and (1, 2) at stride 1, so every stride-1 layer preserves the spatial size.

The input is the *foreground* mask channels only, (B, L, H, W): real masks without background, or the
segmentor's ``softmax(logits)[:, 1:]``.

Spectral normalisation: the authors (authors-code §1.8) add a spectral *penalty* (a regulariser on D's loss, α = 10) to
the four block convolutions; that is not reproduced. ``spectral_norm=True`` instead re-parameterises every
convolution and the linear layer with :func:`torch.nn.utils.parametrizations.spectral_norm` (Miyato et al.,
2018); the default (False) is an unconstrained D.

Keras defaults are reproduced explicitly: Glorot-uniform weights, zero biases; LeakyReLU slope 0.2 is set
explicitly by the authors. With the defaults (in_channels=3) the network has 11,346,881 trainable parameters
(authors-code §1.18).
"""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from sdnet.models.blocks import keras_init_

__all__ = ["MaskDiscriminator"]

DISCRIMINATOR_LEAKY_SLOPE = 0.2
_KERNEL = 4


def _keras_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding of Keras/TensorFlow 'same' along one axis of length ``size``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class MaskDiscriminator(nn.Module):
    """LSGAN discriminator over foreground segmentation masks (paper §3.2).

    Args:
        in_channels: L, foreground mask channels (n_classes − 1; 3 for ACDC: MYO, LV, RV).
        image_size: H = W of the masks; fixes the size of the flattened features.
        filters: channels of the first convolution, doubled in each block.
        n_blocks: 4×4 convolution blocks after the first one (the last has stride 1).
        spectral_norm: wrap every convolution and the linear layer in spectral normalisation.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        image_size: int = 224,
        filters: int = 64,
        n_blocks: int = 4,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if min(in_channels, image_size, filters) < 1 or n_blocks < 0:
            raise ValueError("in_channels, image_size and filters must be >= 1 and n_blocks >= 0")
        self.in_channels = in_channels
        self.image_size = image_size

        layers: list[nn.Module] = []
        convs: list[nn.Conv2d] = []
        size, previous = image_size, in_channels
        for i in range(n_blocks + 1):
            width = filters * 2**i
            stride = 1 if i == n_blocks and n_blocks > 0 else 2
            pad_h = _keras_same_padding(size, _KERNEL, stride)
            conv = nn.Conv2d(previous, width, kernel_size=_KERNEL, stride=stride)
            layers += [nn.ZeroPad2d((*pad_h, *pad_h)), conv, nn.LeakyReLU(DISCRIMINATOR_LEAKY_SLOPE)]
            convs.append(conv)
            size, previous = math.ceil(size / stride), width
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(previous * size * size, 1)
        keras_init_(self)
        if spectral_norm:
            for conv in convs:
                _spectral_norm(conv)
            _spectral_norm(self.score)

    def forward(self, masks: Tensor) -> Tensor:
        """Score masks as real (→ 1) or fake (→ 0).

        Args:
            masks: (B, L, S, S) float in [0, 1], foreground channels only (no background), S = image_size.

        Returns:
            (B, 1) float, unbounded LSGAN score (no activation).
        """
        if masks.dim() != 4 or tuple(masks.shape[1:]) != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(
                f"expected masks of shape (B, {self.in_channels}, {self.image_size}, {self.image_size}), "
                f"got {tuple(masks.shape)}"
            )
        h = self.features(masks)  # (B, filters·2^n_blocks, s, s), s = 14 for S = 224
        score: Tensor = self.score(h.flatten(1))  # (B, filters·2^n_blocks·s·s) → (B, 1)
        return score
