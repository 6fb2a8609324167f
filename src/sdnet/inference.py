"""Segment slices and volumes; segment scans and write the masks back on the input's own grid (same shape, voxel
order and header).

A scan is read in the library's orientation convention (:mod:`sdnet.data.orientation`), or in the one the
checkpoint was trained in (``data.orientation=legacy`` for checkpoints from before the convention). The model works
on the preprocessed grid (resampled to the target spacing, optionally resized, centre cropped/padded).
:func:`to_input_grid` undoes those steps on the class *probabilities* (inverse crop/pad, bilinear resize back
through each step), then takes the argmax; the mask is then mapped back to the file's own voxel order and written
with the input's header (qform and sform), so it overlays the original image in any viewer.

:func:`predict_probabilities` / :func:`predict_volume` (a preprocessed (S, 1, H, W) stack → probabilities / labels)
are the slice-level primitives that evaluation, self-training's pseudo-labels and the analyses use as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdnet.config import DataConfig
from sdnet.data.nifti import save_like, save_nifti
from sdnet.data.orientation import InPlaneMap, model_frame
from sdnet.data.pipeline import preprocess_volume
from sdnet.data.scans import Scan, read_nifti_scan
from sdnet.data.volumes import DatasetInfo, Volume
from sdnet.models import Segmenter, for_inference
from sdnet.models.blocks import channel_argmax
from sdnet.utils import evaluating


def predict_probabilities(model: Segmenter, image: torch.Tensor, *, batch_size: int = 16) -> torch.Tensor:
    """Class probabilities of every slice of a volume, in eval mode (restored afterwards).

    Args:
        model: a trained SDNet or baseline U-Net (anything with ``segment``).
        image: (S, 1, H, W) float in [−1, 1].
        batch_size: slices per forward pass.

    Returns:
        (S, n_classes, H, W) float on the CPU.
    """
    out = []
    with evaluating(model) as device:  # type: ignore[arg-type]
        for start in range(0, image.shape[0], batch_size):
            out.append(model.segment(image[start : start + batch_size].to(device)).probabilities.cpu())
    return torch.cat(out)


def predict_volume(model: Segmenter, image: torch.Tensor, *, batch_size: int = 16) -> torch.Tensor:
    """(S, H, W) int64 class indices of every slice of ``image`` (S, 1, H, W)."""
    return channel_argmax(predict_probabilities(model, image, batch_size=batch_size)).squeeze(1)


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


def probabilities_to_input_grid(probabilities: torch.Tensor, steps: GridSteps) -> torch.Tensor:
    """Map class probabilities from the model's grid back to the input grid.

    Args:
        probabilities: (S, K, size, size) softmax output on the preprocessed grid.
        steps: from :func:`grid_steps`.

    Returns:
        (S, K, H, W) float32 probabilities on the input grid.
    """
    p = _uncrop(probabilities.float(), steps.resized_shape)
    if steps.resized_shape != steps.resampled_shape:
        p = F.interpolate(p, size=steps.resampled_shape, mode="bilinear", align_corners=False)
    if steps.resampled_shape != steps.input_shape:
        p = F.interpolate(p, size=steps.input_shape, mode="bilinear", align_corners=False)
    return p


def to_input_grid(probabilities: torch.Tensor, steps: GridSteps) -> np.ndarray:
    """Map class probabilities from the model's grid back to the input grid and take the argmax.

    Args:
        probabilities: (S, K, size, size) softmax output on the preprocessed grid.
        steps: from :func:`grid_steps`.

    Returns:
        (S, H, W) int64 class indices on the input grid.
    """
    labels: np.ndarray = channel_argmax(probabilities_to_input_grid(probabilities, steps)).squeeze(1).numpy()
    return labels


@dataclass(frozen=True)
class Prediction:
    """What :func:`predict_scan` wrote.

    Attributes:
        scan: the input.
        mask: the written mask, on the input's voxel grid ((X, Y, Z) or (X, Y, Z, T) uint8 label values).
        mask_path: where it was written.
        probability_paths: the probability maps (one per frame; empty unless asked for).
    """

    scan: Scan
    mask: np.ndarray
    mask_path: Path
    probability_paths: tuple[Path, ...] = ()


def _model_frame(scan: Scan, t: int, data_config: DataConfig) -> tuple[Volume, InPlaneMap | None]:
    """Frame ``t`` as the model expects it: (the slice-first volume, the in-plane map from the convention to the
    model's frame (:func:`sdnet.data.orientation.model_frame`), or None when the model saw the file's raw voxel
    order — a ``legacy`` model of a NIfTI format)."""
    frame = model_frame(data_config.orientation, data_config.format)
    if frame is not None:
        data, spacing = scan.frame(t), scan.spacing
    else:
        data = scan.frame_in_file_order(t)
        zooms = np.sqrt((scan.file_affine[:3, :3] ** 2).sum(axis=0))
        spacing = (float(zooms[0]), float(zooms[1]), float(zooms[2]))
    image = np.moveaxis(data, 2, 0)
    if frame is not None and not frame.is_identity:
        image = frame.apply(image)
        spacing = frame.spacing(spacing) or spacing
    volume = Volume(subject_id=scan.name, phase=t, image=np.ascontiguousarray(image), label=None, spacing=spacing,
                    affine=scan.file_affine, modality="", source=scan.source)
    return volume, frame


def _back_to_file(array: np.ndarray, scan: Scan, frame: InPlaneMap | None) -> np.ndarray:
    """(S, H, W[, K]) model-frame result -> (X, Y, Z[, K]) on the file's voxel grid."""
    if frame is None:
        return np.ascontiguousarray(np.moveaxis(array, 0, 2))
    array = frame.inverse().apply(array, axes=(1, 2))
    return scan.to_file_order(np.moveaxis(array, 0, 2))


def predict_scan(
    model: Segmenter,
    scan: Scan,
    mask_path: str | Path,
    *,
    data_config: DataConfig,
    image_size: int,
    labels: dict[int, str],
    batch_size: int = 16,
    probabilities_path: str | Path | None = None,
) -> Prediction:
    """Segment every frame of a scan and write the mask on the scan's own voxel grid.

    Frames are read, segmented and written one at a time (memory: one float frame and the uint8 mask). NIfTI
    inputs' masks keep the input's header (qform and sform); DICOM ones get the affine built from the series.

    Args:
        model: a trained SDNet or baseline U-Net (anything with ``segment``) on the device to run on.
        scan: from :func:`~sdnet.data.scans.read_nifti_scan` or :func:`~sdnet.data.scans.read_dicom_folder`.
        mask_path: where to write the uint8 mask (dataset label values), (X, Y, Z) or (X, Y, Z, T).
        data_config: the preprocessing and orientation settings the model was trained with.
        image_size: the model's input size.
        labels: label value -> name of the training data (background 0 included).
        batch_size: slices per forward pass.
        probabilities_path: also write the class probabilities (float32 (X, Y, Z, K) per frame; for a cine,
            ``<stem>_t<frame>`` files).
    """
    info = DatasetInfo(name="input", labels=labels, modalities=())
    values = np.array(sorted(labels), dtype=np.uint8)
    mask = np.zeros(scan.file_shape, dtype=np.uint8)
    prob_paths: list[Path] = []
    inference_model = for_inference(model)
    for t in range(scan.n_frames):
        volume, frame = _model_frame(scan, t, data_config)
        image, _ = preprocess_volume(volume, info, image_size, data_config)
        probabilities = predict_probabilities(inference_model, torch.from_numpy(image), batch_size=batch_size)
        on_grid = probabilities_to_input_grid(probabilities, grid_steps(volume, data_config, image_size))
        classes = channel_argmax(on_grid).squeeze(1).numpy()  # (S, H, W)
        frame_mask = _back_to_file(values[classes], scan, frame)
        if mask.ndim == 4:
            mask[..., t] = frame_mask
        else:
            mask[...] = frame_mask
        if probabilities_path is not None:
            prob = _back_to_file(on_grid.permute(0, 2, 3, 1).numpy(), scan, frame)  # (X, Y, Z, K)
            base = Path(probabilities_path)
            path = base if scan.n_frames == 1 else base.with_name(
                f"{base.name.removesuffix('.nii.gz')}_t{t:02d}.nii.gz")
            prob_paths.append(_write(path, prob.astype(np.float32), scan, np.float32))
    return Prediction(scan=scan, mask=mask, mask_path=_write(Path(mask_path), mask, scan, np.uint8),
                      probability_paths=tuple(prob_paths))


def _write(path: Path, data: np.ndarray, scan: Scan, dtype: type) -> Path:
    if scan.reference is not None:
        return save_like(path, data, scan.reference, dtype=dtype)
    return save_nifti(path, data, scan.file_affine, dtype=dtype)


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
    """Segment one 3D or 4D NIfTI image and write the mask (dataset label values) on its own voxel grid with its
    header (:func:`predict_scan` on :func:`~sdnet.data.scans.read_nifti_scan`)."""
    scan = read_nifti_scan(image_path)
    return predict_scan(model, scan, out_path, data_config=data_config, image_size=image_size, labels=labels,
                        batch_size=batch_size).mask_path
