"""Evaluation scores on hard labels (no gradients). Training losses live in :mod:`sdnet.losses`.

Conventions: Dice of a class that is absent from both prediction and ground truth is NaN (undefined) and is left
out of averages (``nanmean``), as in nnU-Net; a class present in only one of them scores 0.
"""

from __future__ import annotations

import numpy as np
import torch


def dice_per_class(prediction: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """Dice of each foreground class over a whole array (a 3D volume: the standard "3D Dice").

    Args:
        prediction: (...) int class indices.
        target: (...) int class indices, same shape.
        n_classes: L + 1 (background 0 included).

    Returns:
        (L,) float64 Dice of classes 1..L; NaN where the class is absent from both.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"dice_per_class: shape mismatch {prediction.shape} vs {target.shape}")
    scores = np.full(n_classes - 1, np.nan)
    for c in range(1, n_classes):
        p, t = prediction == c, target == c
        denom = int(p.sum()) + int(t.sum())
        if denom > 0:
            scores[c - 1] = 2.0 * np.logical_and(p, t).sum() / denom
    return scores


def slice_averaged_dice(
    prediction: np.ndarray, target: np.ndarray, n_classes: int, *, empty_score: float = 1.0
) -> np.ndarray:
    """The authors' per-slice Dice averaged over the slices of a volume (authors-code §1.14), per class: the number the
    paper's tables report.

    A slice where a class is absent from both prediction and target scores ``empty_score``: 1 by default, as the
    authors' smoothed Dice (ε = 0.1) gives it, so a correctly empty basal or apical slice counts as right.
    ``empty_score=nan`` skips such slices instead (the slice average then covers only slices where the class
    appears in the prediction or the truth).

    Args:
        prediction: (S, H, W) class indices.
        target: (S, H, W) class indices.
        n_classes: L + 1 (background 0 included).
        empty_score: the score of a slice with the class in neither.

    Returns:
        (L,) mean over slices of the per-slice Dice (NaN only when ``empty_score`` is NaN and the class never
        appears).
    """
    per_slice = np.stack([dice_per_class(p, t, n_classes) for p, t in zip(prediction, target, strict=True)])
    per_slice = np.where(np.isnan(per_slice), empty_score, per_slice)
    with np.errstate(invalid="ignore"):
        out = np.full(n_classes - 1, np.nan)
        for c in range(n_classes - 1):
            column = per_slice[:, c]
            if np.any(~np.isnan(column)):
                out[c] = np.nanmean(column)
    return out


def hd95_per_class(
    prediction: np.ndarray, target: np.ndarray, n_classes: int, spacing: tuple[float, ...] | None = None
) -> np.ndarray:
    """95th-percentile symmetric Hausdorff distance of each foreground class, computed by MONAI.

    Args:
        prediction: (S, H, W) int class indices (a volume, slice-first).
        target: (S, H, W) int class indices.
        n_classes: L + 1.
        spacing: (dy, dx, dz) voxel size in mm of (row, column, slice); None gives distances in pixels with the
            slice axis counted as 1 pixel.

    Returns:
        (L,) HD95 per class; NaN where the class is missing from the prediction or the target (the distance is
        undefined; callers report how many volumes that affects).
    """
    import warnings

    import torch
    from monai.metrics import compute_hausdorff_distance

    if prediction.shape != target.shape:
        raise ValueError(f"hd95_per_class: shape mismatch {prediction.shape} vs {target.shape}")
    out = np.full(n_classes - 1, np.nan)
    # MONAI wants (B, C, spatial...) one-hot; we pass (H, W, S) with spacing (dy, dx, dz)
    pred = torch.from_numpy(np.moveaxis(prediction, 0, -1).astype(np.int64))
    true = torch.from_numpy(np.moveaxis(target, 0, -1).astype(np.int64))
    voxel = list(spacing) if spacing is not None else [1.0, 1.0, 1.0]
    for c in range(1, n_classes):
        p, t = (pred == c), (true == c)
        if not bool(p.any()) or not bool(t.any()):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = compute_hausdorff_distance(
                p[None, None].float(), t[None, None].float(), include_background=True, percentile=95,
                spacing=voxel,
            )
        out[c - 1] = float(value.reshape(-1)[0])
    return out


def area_percent(masks: torch.Tensor, class_index: int) -> torch.Tensor:
    """The area of class ``class_index`` in percent of each slice's pixels: the LV-volume task's per-slice label
    (paper §5.2), and what its regressor predicts.

    Args:
        masks: (N, H, W) integer class indices.
        class_index: the class whose pixels are counted (the LV cavity).

    Returns:
        (N,) float32 in [0, 100].
    """
    return (masks == class_index).flatten(1).to(torch.float32).mean(dim=1) * 100.0
