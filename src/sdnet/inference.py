"""Segment NIfTI volumes and write the masks back on the input's own grid (same shape, voxel order and header).

A scan is read in the library's orientation convention (:mod:`sdnet.data.orientation`), or in the one the
checkpoint was trained in (``data.orientation=legacy`` for checkpoints from before the convention). The model works
on the preprocessed grid (resampled to the target spacing, optionally resized, centre cropped/padded).
:func:`to_input_grid` undoes those steps on the class *probabilities* (inverse crop/pad, bilinear resize back
through each step), then takes the argmax; the mask is then mapped back to the file's own voxel order and written
with the input's header (qform and sform), so it overlays the original image in any viewer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdnet.config import DataConfig
from sdnet.data.nifti import NiftiVolume, load_nifti, save_like
from sdnet.data.orientation import LEGACY, from_canonical, legacy_to_canonical
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


def read_for_model(image_path: str | Path, data_config: DataConfig) -> tuple[Volume, NiftiVolume, bool]:
    """Read a 3D NIfTI scan as the model expects it.

    Returns:
        (the slice-first volume to preprocess, the loaded file (its orientation transform maps predictions back),
        whether the slices were transposed in-plane for a ``legacy`` SSL4MIS-trained model).
    """
    legacy = data_config.orientation == LEGACY
    # legacy models: SSL4MIS-trained ones saw transposed canonical slices; the others the files' voxel order
    transpose = legacy and data_config.format == "ssl4mis"
    nii = load_nifti(image_path, reorient=not legacy or transpose)
    image = np.moveaxis(nii.data, 2, 0)
    spacing = nii.spacing
    if transpose:
        image = legacy_to_canonical(image)
        spacing = (spacing[1], spacing[0], spacing[2])
    volume = Volume(subject_id=Path(image_path).name, phase=0, image=np.ascontiguousarray(image), label=None,
                    spacing=spacing, affine=nii.affine, modality="", source=str(nii.path))
    return volume, nii, transpose


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
    """Segment one 3D NIfTI image and write the mask (dataset label values) on its own voxel grid with its header.

    Args:
        model: a trained SDNet or baseline U-Net (anything with ``segment``).
        image_path: 3D NIfTI image (any voxel order; it is read in the model's orientation convention).
        out_path: where to write the uint8 mask.
        data_config: the preprocessing and orientation settings the model was trained with.
        image_size: the model's input size.
        labels: label value -> name of the training data (background 0 included).
    """
    volume, nii, transposed = read_for_model(image_path, data_config)
    info = DatasetInfo(name="input", labels=labels, modalities=())
    image, _ = preprocess_volume(volume, info, image_size, data_config)
    probabilities = predict_probabilities(for_inference(model), torch.from_numpy(image), batch_size=batch_size)
    classes = to_input_grid(probabilities, grid_steps(volume, data_config, image_size))  # (S, H, W)
    if transposed:
        classes = legacy_to_canonical(classes)
    values = np.array(sorted(labels), dtype=np.uint8)
    mask = from_canonical(np.moveaxis(values[classes], 0, 2), nii.ornt)  # the file's own (X, Y, Z) order
    return save_like(out_path, mask, image_path, dtype=np.uint8)
