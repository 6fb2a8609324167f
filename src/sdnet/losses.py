"""SDNet's training losses as pure, unweighted functions (paper §3 and §4.2).

Each function maps tensors to a scalar tensor. The paper's weights λ1..λ5 are applied in exactly one place,
:func:`weighted_sum`, which the training steps call with a :class:`~sdnet.config.LossWeights`. Evaluation
scores (hard-label Dice, HD95) live in :mod:`sdnet.metrics`, never here.

Every loss is computed in float32 at least: bfloat16 / float16 inputs (network outputs under mixed precision,
``train.precision=bf16``) are promoted first, so sums over 10^5 pixels do not lose precision; float32 and float64
inputs are used as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from sdnet.config import LossWeights
from sdnet.utils import at_least_float32

#: Term name -> the paper's λ it is weighted by (§4.2).
LAMBDA_OF_TERM: dict[str, str] = {
    "kl": "λ1", "segm": "λ2", "adv": "λ3", "rec": "λ4", "zrec": "λ5",
    "ce": "λ_ce (not in the paper; default 0)",
    "vol": "λ_vol (§5.2 gives no weight; default 0)",
    "mix": "λ_mix (SDNet+, our addition; default 0)",
    "acons": "λ_acons (SDNet+, our addition; default 0)",
}


def dice_loss(probabilities: torch.Tensor, target: torch.Tensor, *, smooth: float = 0.1) -> torch.Tensor:
    """The paper's Dice loss (§3.2), summed over pixels *and* foreground channels, averaged over the batch.

    L_segm = 1 − 2 · E_x[(Σ_{h,w,l} m·p + ε) / (Σ_{h,w,l} (m + p) + ε)]

    As in the authors' code (authors-code §1.9), ε = 0.1 sits inside the factor 2, so a perfect prediction scores
    slightly below 0. Background is excluded: pass foreground channels only.

    Args:
        probabilities: (B, L, H, W) predicted foreground probabilities in [0, 1].
        target: (B, L, H, W) one-hot (or soft) foreground masks in [0, 1].
        smooth: ε.

    Returns:
        Scalar tensor.
    """
    if probabilities.shape != target.shape:
        raise ValueError(f"dice_loss: shape mismatch {tuple(probabilities.shape)} vs {tuple(target.shape)}")
    probabilities, target = at_least_float32(probabilities, target)
    dims = tuple(range(1, probabilities.dim()))
    intersection = (probabilities * target).sum(dim=dims)  # (B,)
    total = (probabilities + target).sum(dim=dims)  # (B,)
    ratio = (intersection + smooth) / (total + smooth)  # (B,)
    return 1.0 - 2.0 * ratio.mean()


def cross_entropy(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy of the segmentor's logits, background included (not in the paper).

    An optional companion of the Dice loss (the authors' later DAFNet adds a weighted cross-entropy); its weight
    ``LossWeights.ce`` is 0 by default, which is the paper's SDNet.

    Args:
        logits: (B, L + 1, H, W) segmentor logits.
        masks: (B, H, W) int64 class indices.
    """
    (logits,) = at_least_float32(logits)
    return F.cross_entropy(logits, masks)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """L_KL = D_KL(N(μ, σ²) || N(0, I)) summed over the n_z dimensions, averaged over the batch (§3.1.2).

    Args:
        mu: (B, n_z) posterior mean.
        logvar: (B, n_z) posterior log-variance.

    Returns:
        Scalar tensor, −0.5 · Σ(1 + log σ² − μ² − σ²) averaged over B.
    """
    mu, logvar = at_least_float32(mu, logvar)
    per_sample = -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)  # (B,)
    return per_sample.mean()


def l1_reconstruction(image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """L_rec = E_x ||x − g(s, z)||_1, the mean absolute error over pixels and batch (§3.3; Keras 'mae').

    Args:
        image: (B, 1, H, W) in [−1, 1].
        reconstruction: (B, 1, H, W) in [−1, 1].
    """
    image, reconstruction = at_least_float32(image, reconstruction)
    return F.l1_loss(reconstruction, image)


def z_reconstruction(z: torch.Tensor, z_reencoded: torch.Tensor) -> torch.Tensor:
    """L_zrec = E ||z − f_modality(g(s, z), s)||_1, mean absolute error over dimensions and batch (§3.3.1).

    Args:
        z: (B, n_z) the sampled modality factor that was decoded.
        z_reencoded: (B, n_z) the modality factor re-encoded from the decoded image.
    """
    z, z_reencoded = at_least_float32(z, z_reencoded)
    return F.l1_loss(z_reencoded, z)


def area_regression(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_vol = E |â − a|: mean absolute error of the regressed LV area of each slice (paper §5.2, which does not
    name the loss; MAE as for the paper's other regression terms).

    Args:
        predicted: (B,) regressed areas, percent of the slice's pixels.
        target: (B,) true areas, percent of the slice's pixels.
    """
    if predicted.shape != target.shape:
        raise ValueError(f"area_regression: shape mismatch {tuple(predicted.shape)} vs {tuple(target.shape)}")
    predicted, target = at_least_float32(predicted, target)
    return F.l1_loss(predicted, target)


def anatomy_consistency(anatomy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SDNet+ anatomy consistency: mean absolute difference between the anatomy factor of a re-rendered image and
    that of the image whose anatomy was rendered (our addition, not in the paper).

    Args:
        anatomy: (B, C, H, W) f_anatomy(g(s, z')).
        target: (B, C, H, W) s, detached.
    """
    anatomy, target = at_least_float32(anatomy, target)
    return (anatomy - target).abs().mean()


def lsgan_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The discriminator side of L_adv (§3.2, LSGAN): E[(D(m) − 1)²] + E[D(h(s))²].

    Args:
        real_scores: (B, 1) D_M on real masks.
        fake_scores: (B, 1) D_M on predicted masks.
    """
    real_scores, fake_scores = at_least_float32(real_scores, fake_scores)
    return (real_scores - 1.0).pow(2).mean() + fake_scores.pow(2).mean()


def lsgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """The generator side of L_adv (LSGAN): E[(D(h(s)) − 1)²], minimised by f_anatomy and h.

    Args:
        fake_scores: (B, 1) D_M on predicted masks of unlabelled images.
    """
    (fake_scores,) = at_least_float32(fake_scores)
    return (fake_scores - 1.0).pow(2).mean()


def weighted_sum(terms: Mapping[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """Σ λ_term · L_term over the given terms: the one place where the paper's λ1..λ5 are applied.

    Args:
        terms: unweighted scalar losses keyed by ``kl``, ``segm``, ``adv``, ``rec``, ``zrec`` (``ce``, ``vol``,
            ``mix``, ``acons``).
        weights: the λ values.

    Returns:
        Scalar tensor.
    """
    if not terms:
        raise ValueError("weighted_sum: no loss terms given")
    total: torch.Tensor | None = None
    for name, value in terms.items():
        if name not in LAMBDA_OF_TERM:
            raise KeyError(f"unknown loss term {name!r}; expected one of {sorted(LAMBDA_OF_TERM)}")
        weighted = getattr(weights, name) * value
        total = weighted if total is None else total + weighted
    assert total is not None
    return total
