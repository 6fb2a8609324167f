"""Pieces shared by at least two SDNet networks: Keras-default initialisation and normalisation, the
conv → BatchNorm → activation block, the straight-through binarisation of the anatomy factor (paper §3.1.1) and
FiLM conditioning (paper §3.3).

The authors' model is written in Keras 2.1; a faithful port has to state Keras' defaults explicitly
(authors-code §1.16):

* Conv2D / Dense weights are Glorot-uniform with zero biases (:func:`keras_init_`), not PyTorch's
  Kaiming-uniform(a=√5).
* BatchNormalization uses momentum 0.99 and epsilon 1e-3; PyTorch's ``momentum`` is the weight of the *new*
  batch statistic, so Keras 0.99 is ``momentum=0.01`` here (:data:`KERAS_BN_MOMENTUM`, :data:`KERAS_BN_EPS`).
* ``LeakyReLU()`` without an argument has slope 0.3 (:data:`KERAS_LEAKY_SLOPE`); the discriminator sets 0.2.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from sdnet.config import BinarisationMode
from sdnet.utils import at_least_float32

__all__ = [
    "KERAS_BN_EPS",
    "KERAS_BN_MOMENTUM",
    "KERAS_LEAKY_SLOPE",
    "BinarisationMode",
    "batch_norm_1d",
    "batch_norm_2d",
    "binarise",
    "channel_argmax",
    "conv_bn_act",
    "film",
    "float32_head",
    "keras_init_",
]

KERAS_BN_MOMENTUM = 0.01
"""PyTorch ``momentum`` equivalent to Keras' BatchNormalization(momentum=0.99)."""

KERAS_BN_EPS = 1e-3
"""Keras' BatchNormalization epsilon (PyTorch's default is 1e-5)."""

KERAS_LEAKY_SLOPE = 0.3
"""Keras' ``LeakyReLU()`` default negative slope (PyTorch's default is 0.01)."""


def keras_init_(module: nn.Module) -> None:
    """Re-initialise, in place, every Conv2d and Linear inside ``module`` as Keras does by default.

    Weights: Glorot (Xavier) uniform, with fan_in = in·k·k and fan_out = out·k·k for convolutions, exactly Keras'
    ``glorot_uniform``; biases: zeros. BatchNorm layers keep PyTorch's (= Keras') γ = 1, β = 0.
    Call it at construction, before wrapping layers in parametrisations such as spectral normalisation.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def batch_norm_2d(channels: int) -> nn.BatchNorm2d:
    """BatchNorm2d with Keras' defaults (momentum 0.99 → PyTorch 0.01, eps 1e-3)."""
    return nn.BatchNorm2d(channels, momentum=KERAS_BN_MOMENTUM, eps=KERAS_BN_EPS)


def batch_norm_1d(features: int) -> nn.BatchNorm1d:
    """BatchNorm1d with Keras' defaults (momentum 0.99 → PyTorch 0.01, eps 1e-3)."""
    return nn.BatchNorm1d(features, momentum=KERAS_BN_MOMENTUM, eps=KERAS_BN_EPS)


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    *,
    activation: nn.Module,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int = 1,
) -> nn.Sequential:
    """Conv2d → BatchNorm2d (Keras defaults) → ``activation``.

    The defaults (3×3, stride 1, padding 1) are Keras' ``Conv2D(f, 3, padding='same')``; ``padding=0`` is Keras'
    ``'valid'``. Pass ``nn.Identity()`` for a linear activation. Weights are Glorot-uniform, biases zero.
    """
    block = nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding),
        batch_norm_2d(out_channels),
        activation,
    )
    keras_init_(block)
    return block


def float32_head(head: nn.Module, features: Tensor) -> Tensor:
    """``head(features)`` computed in float32 even under mixed precision (``train.precision=bf16``).

    The 1×1 output layers whose logits feed a softmax — the anatomy encoder's, whose probabilities are then
    binarised by their argmax, and the segmentor's — are run with autocast off on float32 features, the usual
    mixed-precision practice for output layers: bfloat16 keeps ~3 significant digits, too few for the close
    probabilities of a young network. Their cost is negligible (1×1 convolutions). Outside autocast this is
    ``head(features)`` (float64 stays float64).
    """
    (features,) = at_least_float32(features)
    with torch.autocast(device_type=features.device.type, enabled=False):
        out: Tensor = head(features)
    return out


def channel_argmax(values: Tensor) -> Tensor:
    """Index of the largest channel, (B, C, H, W) -> (B, 1, H, W) int64; ties go to the lowest index.

    The same result as ``values.argmax(dim=1, keepdim=True)`` for finite values, computed as a running maximum over
    the C channel planes (C − 1 elementwise passes over contiguous (B, H, W) planes). On the CPU, ATen's argmax over
    a non-innermost dimension of an NCHW tensor walks it with stride H·W and was ~5× slower at (4, 8, 128, 128)
    (issue "Performance"; measured on 2 cores with torch 2.13).
    """
    best = values[:, 0]
    index = torch.zeros_like(best, dtype=torch.int64)
    for c in range(1, values.shape[1]):
        plane = values[:, c]
        larger = plane > best  # strict: the first maximum wins, as in argmax
        best = torch.where(larger, plane, best)
        index = index.masked_fill(larger, c)
    return index.unsqueeze(1)


class _StraightThrough(torch.autograd.Function):
    """Forward: exact binarisation of the probabilities; backward: identity (Bengio et al., 2013)."""

    @staticmethod
    def forward(ctx: Any, probabilities: Tensor, mode: str) -> Tensor:
        if mode == "argmax":
            index = channel_argmax(probabilities)  # (B, 1, H, W)
            return torch.zeros_like(probabilities).scatter_(1, index, 1.0)  # (B, C, H, W) one-hot
        return torch.round(probabilities)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output, None


def binarise(probabilities: Tensor, mode: BinarisationMode) -> Tensor:
    """Binarise the softmax anatomy factor with a straight-through gradient (paper §3.1.1).

    Args:
        probabilities: (B, C, H, W) float in [0, 1], summing to 1 over C (a softmax over channels).
        mode: ``"argmax"``: one-hot of the argmax over C, so every pixel is active in exactly one channel (the
            paper's stated constraint Σ_c s = 1). ``"round"``: ``torch.round``, the paper's ⌊s + 0.5⌋ and the
            authors' ``np.round`` (both round half to even, so they differ from ⌊s + 0.5⌋ only at exactly 0.5);
            a pixel whose largest probability is below 0.5 becomes all-zero, as in the authors' code.
            ``"none"``: the soft probabilities unchanged (ablation, paper Fig. 3b).

    Returns:
        s: (B, C, H, W). In ``argmax`` / ``round`` mode the values are exactly 0.0 or 1.0 (same dtype as the
        input) and the gradient w.r.t. ``probabilities`` is the identity (straight-through). In ``none`` mode the
        input itself is returned.
    """
    if mode == "none":
        return probabilities
    if mode not in ("argmax", "round"):
        raise ValueError(f"binarisation mode must be 'argmax', 'round' or 'none', got {mode!r}")
    return cast(Tensor, _StraightThrough.apply(probabilities, mode))


def film(features: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """Feature-wise linear modulation FiLM(F_c | γ_c, β_c) = γ_c ⊙ F_c + β_c (paper §3.3, Perez et al., 2018).

    Args:
        features: (B, K, H, W) float, the feature maps F (K channels).
        gamma: (B, K) float, one scale per channel (no "+1" offset, as in the authors' code).
        beta: (B, K) float, one offset per channel.

    Returns:
        (B, K, H, W) float, γ and β broadcast over the spatial dimensions.
    """
    if gamma.shape != beta.shape or gamma.shape != features.shape[:2]:
        raise ValueError(
            f"FiLM expects gamma and beta of shape {tuple(features.shape[:2])}, "
            f"got {tuple(gamma.shape)} and {tuple(beta.shape)}"
        )
    return gamma[:, :, None, None] * features + beta[:, :, None, None]  # (B, K, H, W)
