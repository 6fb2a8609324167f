"""Segment NIfTI volumes and write the masks back on the input's own grid (same shape, same affine).

The model works on the preprocessed grid (resampled to the target spacing, optionally resized, centre
cropped/padded). :func:`to_input_grid` undoes those steps on the class *probabilities* (inverse crop/pad, bilinear
resize back through each step), then takes the argmax, so the written mask overlays the original image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdnet.config import DataConfig
from sdnet.data.nifti import load_nifti, save_nifti
from sdnet.data.pipeline import preprocess_volume
from sdnet.data.volumes import DatasetInfo, Volume
from sdnet.evaluation import predict_probabilities
from sdnet.models import Segmenter, for_inference
from sdnet.models.blocks import channel_argmax


@dataclass(frozen=True)
class GridSteps:
    """In-plane shapes a volume passes through: input (H, W) -> resampled -> resized -> crop/pad to size."""

    input_shape: tuple[int, int]
    resampled_shape: tuple[int, int]
    resized_shape: tuple[int, int]
    size: int


def grid_steps(volume: Volume, config: DataConfig, image_size: int) -> GridSteps:
    """The shapes :func:`sdnet.data.pipeline.preprocess_volume` produces for ``volume``."""
    h, w = int(volume.image.shape[1]), int(volume.image.shape[2])
    resampled = (h, w)
    if config.target_spacing_mm > 0 and volume.spacing is not None:
        resampled = (max(1, round(h * volume.spacing[0] / config.target_spacing_mm)),
                     max(1, round(w * volume.spacing[1] / config.target_spacing_mm)))
    resized = (config.resize, config.resize) if config.resize > 0 else resampled
    return GridSteps(input_shape=(h, w), resampled_shape=resampled, resized_shape=resized, size=image_size)


def _uncrop(probabilities: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of the centre crop/pad: (S, K, size, size) -> (S, K, H, W); pixels outside the window are
    background (probability 1 for class 0)."""
    s, k, size, _ = probabilities.shape
    h, w = shape
    out = torch.zeros(s, k, h, w, dtype=probabilities.dtype)
    out[:, 0] = 1.0
    sy, sx = max((h - size) // 2, 0), max((w - size) // 2, 0)  # window in the uncropped image
    dy, dx = max((size - h) // 2, 0), max((size - w) // 2, 0)  # window in the model's grid
    ch, cw = min(h, size), min(w, size)
    out[:, :, sy : sy + ch, sx : sx + cw] = probabilities[:, :, dy : dy + ch, dx : dx + cw]
    return out


def to_input_grid(probabilities: torch.Tensor, steps: GridSteps) -> np.ndarray:
    """Map class probabilities from the model's grid back to the input grid and take the argmax.

    Args:
        probabilities: (S, K, size, size) softmax output on the preprocessed grid.
        steps: from :func:`grid_steps`.

    Returns:
        (S, H, W) int64 class indices on the input grid.
    """
    p = _uncrop(probabilities.float(), steps.resized_shape)
    if steps.resized_shape != steps.resampled_shape:
        p = F.interpolate(p, size=steps.resampled_shape, mode="bilinear", align_corners=False)
    if steps.resampled_shape != steps.input_shape:
        p = F.interpolate(p, size=steps.input_shape, mode="bilinear", align_corners=False)
    labels: np.ndarray = channel_argmax(p).squeeze(1).numpy()
    return labels


def predict_nifti(
    model: Segmenter,
    image_path: str | Path,
    out_path: str | Path,
    *,
    data_config: DataConfig,
    image_size: int,
    labels: dict[int, str],
    batch_size: int = 16,
) -> Path:
    """Segment one 3D NIfTI image and write the mask (dataset label values) with the input's affine.

    Args:
        model: a trained SDNet or baseline U-Net (anything with ``segment``).
        image_path: (H, W, S) NIfTI image.
        out_path: where to write the uint8 mask.
        data_config: the preprocessing settings the model was trained with.
        image_size: the model's input size.
        labels: label value -> name of the training data (background 0 included).
    """
    nii = load_nifti(image_path)
    volume = Volume(subject_id=Path(image_path).name, phase=0, image=np.ascontiguousarray(np.moveaxis(nii.data, 2, 0)),
                    label=None, spacing=nii.spacing, affine=nii.affine, modality="", source=str(nii.path))
    info = DatasetInfo(name="input", labels=labels, modalities=())
    image, _ = preprocess_volume(volume, info, image_size, data_config)
    probabilities = predict_probabilities(for_inference(model), torch.from_numpy(image), batch_size=batch_size)
    classes = to_input_grid(probabilities, grid_steps(volume, data_config, image_size))  # (S, H, W)
    values = np.array(sorted(labels), dtype=np.uint8)
    mask = values[classes]
    return save_nifti(out_path, np.moveaxis(mask, 0, 2), nii.affine, dtype=np.uint8)
