"""Modality transfer by swapping z (paper §5.3.2, Figure 6), scored against a known truth on the phantom.

``g(f_anatomy(x_A), f_modality(x_B, f_anatomy(x_B)))`` renders the anatomy of image A with the modality of image B.
On real data there is no truth to compare with; the phantom renders every anatomy in every modality, so the
transferred image can be compared with the *true* rendering of anatomy A in the target modality:

* PSNR and SSIM (scikit-image, ``data_range`` 2 for images in [−1, 1]) of the transferred image against that truth;
* the same numbers for a naive baseline: the source image's histogram matched to image B's
  (``skimage.exposure.match_histograms``), i.e. a global intensity remapping with no notion of anatomy;
* the Dice of the model's own segmentation of the transferred image against A's mask (is the anatomy kept?).

Image B is another subject's slice at the same position (same phase and slice index), so z carries the target
modality but not A's own rendering parameters; the truth is A's own rendering in the target modality (its random
tissue intensities and noise differ from B's: both methods pay that price equally).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sdnet.data.pipeline import PreparedVolume
from sdnet.errors import SDNetError
from sdnet.inference import predict_volume
from sdnet.metrics import dice_per_class
from sdnet.models import SDNet
from sdnet.utils import evaluating


@torch.inference_mode()
def transfer(model: SDNet, anatomy_from: Tensor, modality_from: Tensor, *, batch_size: int = 16) -> Tensor:
    """Render the anatomy of one set of images with the modality factor of another: g(s_A, μ_B).

    The model runs in eval mode (restored afterwards) and z is the posterior mean μ, so the result is
    deterministic.

    Args:
        model: a trained SDNet.
        anatomy_from: x_A, (N, 1, H, W) float in [−1, 1].
        modality_from: x_B, (N, 1, H, W), or (1, 1, H, W) to use one modality vector for every image.

    Returns:
        (N, 1, H, W) float in [−1, 1], on the CPU.
    """
    if anatomy_from.ndim != 4 or modality_from.ndim != 4:
        raise SDNetError(f"transfer expects (N, 1, H, W) images, got {tuple(anatomy_from.shape)} and "
                         f"{tuple(modality_from.shape)}")
    if modality_from.shape[0] not in (1, anatomy_from.shape[0]):
        raise SDNetError(f"modality images: 1 or {anatomy_from.shape[0]} needed, got {modality_from.shape[0]}")
    out = []
    with evaluating(model) as device:
        for start in range(0, anatomy_from.shape[0], batch_size):
            xa = anatomy_from[start:start + batch_size].to(device)
            xb = modality_from if modality_from.shape[0] == 1 else modality_from[start:start + batch_size]
            s_a = model.encode(xa, sample=False).anatomy
            mu_b = model.encode(xb.to(device), sample=False).modality.mu
            out.append(model.decode(s_a, mu_b.expand(xa.shape[0], -1)).cpu())
    return torch.cat(out) if out else anatomy_from.new_zeros((0, *anatomy_from.shape[1:]))


def histogram_matched(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The naive baseline: ``source``'s intensities remapped so that its histogram matches ``reference``'s.

    Args:
        source: (H, W) float.
        reference: (H, W) float.

    Returns:
        (H, W) float32.
    """
    from skimage.exposure import match_histograms

    return np.asarray(match_histograms(source, reference), dtype=np.float32)


def similarity(image: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of ``image`` against ``truth``, both (H, W) in [−1, 1] (data range 2)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    image = np.clip(image, -1.0, 1.0).astype(np.float64)
    truth = truth.astype(np.float64)
    psnr = float(peak_signal_noise_ratio(truth, image, data_range=2.0))
    ssim = float(structural_similarity(truth, image, data_range=2.0))
    return psnr, ssim


@dataclass(frozen=True)
class TransferScores:
    """Scores of one transfer direction (mean ± std over slices; Dice: mean over volumes of the class average).

    Attributes:
        source / target: the modality of the anatomy image and of the modality image (``MR`` -> ``CT``).
        n_slices / n_volumes: how many slices (volumes) were scored.
        psnr / ssim: of g(s_A, μ_B) against the true target-modality rendering of anatomy A.
        baseline_psnr / baseline_ssim: of histogram matching of x_A to x_B, against the same truth.
        dice_transfer: 3D Dice (mean over classes and volumes) of the model's segmentation of the transferred
            images against A's masks.
        dice_source: the same for the source images themselves (the reference the transfer should keep).
    """

    source: str
    target: str
    n_slices: int
    n_volumes: int
    psnr: tuple[float, float]
    ssim: tuple[float, float]
    baseline_psnr: tuple[float, float]
    baseline_ssim: tuple[float, float]
    dice_transfer: float
    dice_source: float


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return float(np.mean(finite)), float(np.std(finite))


def _mean_dice(model: SDNet, image: Tensor, label: Tensor, n_classes: int) -> float:
    pred = predict_volume(model, image).numpy()
    return float(np.nanmean(dice_per_class(pred, label.numpy(), n_classes)))


def score_transfer(
    model: SDNet, volumes: Sequence[PreparedVolume], *, source: str = "MR", target: str = "CT", n_classes: int = 4
) -> TransferScores:
    """Score source -> target transfer on volumes that exist in both modalities (the phantom's test subjects).

    For every (subject A, phase) with both renderings, the modality image is the same slice and phase of the next
    subject (B, cyclically, in sorted order) in the target modality; the truth is A's own target rendering.

    Args:
        model: a trained SDNet.
        volumes: prepared, labelled volumes with their ``modality`` set (e.g. ``TrainingData.test``).
        source / target: modality names.
        n_classes: the model's classes including background.

    Raises:
        SDNetError: fewer than two subjects with both renderings, or mismatching shapes.
    """
    by_key = {(v.subject_id, v.phase, v.modality): v for v in volumes}
    pairs = sorted({(sid, ph) for sid, ph, m in by_key if m == source and (sid, ph, target) in by_key})
    subjects = sorted({sid for sid, _ in pairs})
    if len(subjects) < 2:
        raise SDNetError(f"modality transfer needs >= 2 subjects rendered in both {source} and {target}, found "
                         f"{len(subjects)}")
    psnr, ssim, base_psnr, base_ssim, dice_t, dice_s = [], [], [], [], [], []
    n_slices = 0
    for sid, phase in pairs:
        other = subjects[(subjects.index(sid) + 1) % len(subjects)]
        ref = by_key.get((other, phase, target))
        if ref is None:
            continue
        a_src, a_true = by_key[(sid, phase, source)], by_key[(sid, phase, target)]
        if a_src.image.shape != a_true.image.shape or ref.image.shape != a_src.image.shape:
            raise SDNetError(f"{sid}/{other} phase {phase}: volumes of different shapes cannot be paired slice by "
                             f"slice ({tuple(a_src.image.shape)}, {tuple(ref.image.shape)})")
        moved = transfer(model, a_src.image, ref.image)
        for k in range(a_src.image.shape[0]):
            truth = a_true.image[k, 0].numpy()
            p, s = similarity(moved[k, 0].numpy(), truth)
            bp, bs = similarity(histogram_matched(a_src.image[k, 0].numpy(), ref.image[k, 0].numpy()), truth)
            psnr.append(p)
            ssim.append(s)
            base_psnr.append(bp)
            base_ssim.append(bs)
            n_slices += 1
        dice_t.append(_mean_dice(model, moved, a_src.label, n_classes))
        dice_s.append(_mean_dice(model, a_src.image, a_src.label, n_classes))
    return TransferScores(
        source=source, target=target, n_slices=n_slices, n_volumes=len(dice_t), psnr=_mean_std(psnr),
        ssim=_mean_std(ssim), baseline_psnr=_mean_std(base_psnr), baseline_ssim=_mean_std(base_ssim),
        dice_transfer=float(np.nanmean(dice_t)) if dice_t else float("nan"),
        dice_source=float(np.nanmean(dice_s)) if dice_s else float("nan"),
    )
