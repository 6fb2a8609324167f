"""Left-ventricular volume from the anatomy factor (paper §5.2).

The true LV volume (LVV) of a volume is computed as in the paper: per slice, the LV pixel count times the pixel
area, times the slice thickness, summed over slices. The model's estimate replaces the pixel count by the
:class:`~sdnet.models.AreaRegressor`'s prediction from s; for reference the volume of the model's own LV
segmentation is reported beside it. Volumes are in mL when the voxel size is known, in voxels otherwise.

Statistics: mean ± std over test volumes of true and predicted LVV, the mean (signed) and mean absolute error, and
a paired t-test of predicted vs true (``scipy.stats.ttest_rel``), as the paper reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from sdnet.data.pipeline import PreparedVolume
from sdnet.metrics import area_percent
from sdnet.models import SDNet
from sdnet.utils import evaluating

__all__ = ["VolumeComparison", "VolumeEstimate", "compare_volumes", "lv_volumes", "paired_difference"]


@dataclass(frozen=True)
class VolumeEstimate:
    """LV volume of one labelled volume (a subject's phase).

    Attributes:
        subject_id, phase, modality: which volume.
        true: LVV of the ground-truth mask.
        regressed: LVV from the area regressor on s (NaN when the model has none).
        segmented: LVV of the model's own LV segmentation.
        unit: ``mL`` (voxel size known) or ``voxels``.
    """

    subject_id: str
    phase: int
    modality: str
    true: float
    regressed: float
    segmented: float
    unit: str


def lv_volumes(model: SDNet, volumes: Sequence[PreparedVolume], class_index: int, *,
               batch_size: int = 16) -> list[VolumeEstimate]:
    """True, regressed and segmented LV volume of every volume (model in eval mode; its mode is restored).

    Args:
        model: a trained SDNet (with an area regressor for the ``regressed`` column).
        volumes: labelled preprocessed volumes (image (S, 1, H, W), label (S, H, W)).
        class_index: class index of the LV cavity in the labels and the model's output.
        batch_size: slices per forward pass.

    Returns:
        One :class:`VolumeEstimate` per volume, in the input order.
    """
    out = []
    with evaluating(model) as device:
        for v in volumes:
            n_pixels = int(v.image.shape[-1] * v.image.shape[-2])
            regressed, segmented = [], []
            for start in range(0, v.image.shape[0], batch_size):
                x = v.image[start:start + batch_size].to(device=device, dtype=torch.float32)
                seg = model.segment(x)
                segmented.append(area_percent(seg.labels, class_index).cpu())
                if model.area_regressor is not None:
                    regressed.append(model.regress_area(seg.anatomy).cpu())
            voxel = 1.0 if v.spacing is None else v.spacing[0] * v.spacing[1] * v.spacing[2] / 1000.0
            scale = voxel * n_pixels / 100.0  # percent of the slice -> pixels -> mL (or voxels)
            true = float(area_percent(v.label, class_index).sum()) * scale
            reg = float(torch.cat(regressed).sum()) * scale if regressed else math.nan
            out.append(VolumeEstimate(subject_id=v.subject_id, phase=v.phase, modality=v.modality, true=true,
                                      regressed=reg, segmented=float(torch.cat(segmented).sum()) * scale,
                                      unit="voxels" if v.spacing is None else "mL"))
    return out


@dataclass(frozen=True)
class VolumeComparison:
    """Estimated vs true LVV over volumes.

    Attributes:
        n: volumes compared.
        unit: ``mL`` or ``voxels``.
        true_mean, true_std, estimate_mean, estimate_std: mean and (sample) std over volumes.
        mean_error: mean of estimate − true (bias); mean_abs_error: mean |estimate − true|.
        t, p: paired t-test of estimate vs true (NaN with fewer than 2 volumes or identical values).
    """

    n: int
    unit: str
    true_mean: float
    true_std: float
    estimate_mean: float
    estimate_std: float
    mean_error: float
    mean_abs_error: float
    t: float
    p: float


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Mean of b − a, and the paired t-test (scipy ``ttest_rel``) of b vs a: (mean difference, t, p)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired_difference needs two equally long sequences, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.allclose(x, y):
        return (float(np.mean(y - x)) if len(x) else math.nan), math.nan, math.nan
    result = stats.ttest_rel(y, x)
    return float(np.mean(y - x)), float(result.statistic), float(result.pvalue)


def compare_volumes(estimates: Sequence[VolumeEstimate], which: str = "regressed") -> VolumeComparison:
    """Compare the ``regressed`` or ``segmented`` LVV with the true one.

    Raises:
        ValueError: unknown ``which``, no estimates, or a mix of units.
    """
    if which not in ("regressed", "segmented"):
        raise ValueError(f"which must be 'regressed' or 'segmented', got {which!r}")
    if not estimates:
        raise ValueError("no volumes to compare")
    units = {e.unit for e in estimates}
    if len(units) != 1:
        raise ValueError(f"volumes mix units {sorted(units)}")
    true = np.array([e.true for e in estimates])
    estimate = np.array([getattr(e, which) for e in estimates])
    error = estimate - true
    mean_error, t, p = paired_difference(true.tolist(), estimate.tolist())
    return VolumeComparison(n=len(true), unit=units.pop(), true_mean=float(true.mean()), true_std=_std(true),
                            estimate_mean=float(np.nanmean(estimate)) if np.isfinite(estimate).any() else math.nan,
                            estimate_std=_std(estimate), mean_error=mean_error,
                            mean_abs_error=float(np.nanmean(np.abs(error))) if np.isfinite(error).any() else math.nan,
                            t=t, p=p)
