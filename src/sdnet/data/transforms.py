"""Pure, seeded image transforms: intensity normalisation, centre crop/pad, rotation, flip and intensity augmentation.

Preprocessing follows the authors (authors-code §1.12): clip each volume to its 5th–95th percentile, scale to [−1, 1],
centre crop/pad to the model size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from sdnet.errors import DataError


def normalise_intensity(
    volume: np.ndarray, *, low: float = 5.0, high: float = 95.0, source: str = "image"
) -> np.ndarray:
    """Clip to the [low, high] percentiles of the whole volume and scale linearly to [−1, 1].

    Args:
        volume: (S, H, W) or any shape, raw intensities.
        low, high: percentiles.
        source: name used in error messages.

    Returns:
        float32 array of the same shape in [−1, 1].

    Raises:
        DataError: for non-finite voxels or a constant volume (nothing to scale).
    """
    arr = np.asarray(volume, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{source}: image contains non-finite (NaN/Inf) voxels")
    lo, hi = np.percentile(arr, [low, high])
    if not hi > lo:
        lo, hi = float(arr.min()), float(arr.max())
        if not hi > lo:
            raise DataError(f"{source}: image is constant (value {lo:g}); cannot normalise intensities")
    clipped = np.clip(arr, lo, hi)
    out: np.ndarray = ((clipped - lo) / (hi - lo) * 2.0 - 1.0).astype(np.float32)
    return out


def center_crop_or_pad(array: np.ndarray, size: int, *, pad_value: float = 0.0) -> np.ndarray:
    """Centre-crop or pad the last two axes of ``array`` to ``size`` × ``size``.

    Args:
        array: (..., H, W).
        size: output height and width.
        pad_value: value for padded pixels (−1 for normalised images, 0 for labels).

    Returns:
        (..., size, size) array of the same dtype.
    """
    h, w = array.shape[-2:]
    out = np.full((*array.shape[:-2], size, size), pad_value, dtype=array.dtype)
    # source window
    sy, sx = max((h - size) // 2, 0), max((w - size) // 2, 0)
    # destination offset
    dy, dx = max((size - h) // 2, 0), max((size - w) // 2, 0)
    ch, cw = min(h, size), min(w, size)
    out[..., dy : dy + ch, dx : dx + cw] = array[..., sy : sy + ch, sx : sx + cw]
    return out


def rotate(
    images: torch.Tensor, masks: torch.Tensor | None, angles_deg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rotate each image (bilinear, edge-padded) and mask (nearest) about the centre.

    Args:
        images: (B, 1, H, W) float.
        masks: (B, H, W) int64 label maps or None.
        angles_deg: (B,) rotation angles in degrees.

    Returns:
        Rotated images (B, 1, H, W) and masks (B, H, W).
    """
    theta = angles_deg.to(images.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zeros = torch.zeros_like(cos)
    matrix = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(matrix, list(images.shape), align_corners=False)
    rotated = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    rotated_masks: torch.Tensor | None = None
    if masks is not None:
        m = masks[:, None].to(images.dtype)  # (B, 1, H, W)
        rotated_masks = F.grid_sample(m, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        rotated_masks = rotated_masks[:, 0].round().to(masks.dtype)
    return rotated, rotated_masks


def dihedral(
    images: torch.Tensor, masks: torch.Tensor | None, codes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply one of the 8 symmetries of the square to each image and mask (exact, no interpolation).

    Args:
        images: (B, 1, H, W) float, H == W.
        masks: (B, H, W) int64 label maps or None.
        codes: (B,) int in [0, 8): ``code % 4`` quarter turns, then a left-right flip when ``code >= 4``.

    Returns:
        Transformed images (B, 1, H, W) and masks (B, H, W).
    """
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"dihedral augmentation needs square images, got {tuple(images.shape[-2:])}")
    out_images, out_masks = images.clone(), None if masks is None else masks.clone()
    for i, code in enumerate(codes.tolist()):
        k, flip = int(code) % 4, int(code) >= 4
        img = torch.rot90(images[i], k, dims=(-2, -1))
        out_images[i] = img.flip(-1) if flip else img
        if masks is not None and out_masks is not None:
            msk = torch.rot90(masks[i], k, dims=(-2, -1))
            out_masks[i] = msk.flip(-1) if flip else msk
    return out_images, out_masks


def intensity(images: torch.Tensor, strength: float, uniform: torch.Tensor) -> torch.Tensor:
    """Random gamma and contrast of each image: a hand-made change of appearance (the baseline against which
    SDNet+'s re-rendering with other modality factors is measured). Masks are unchanged.

    With u1, u2 ~ U(−1, 1) per image (``uniform``): intensities mapped from [−1, 1] to [0, 1] are raised to
    γ = exp(strength · u1) (``strength`` 0.5: γ in [0.61, 1.65], nnU-Net's range is 0.7–1.5), mapped back, then
    scaled about the image's mean by c = exp(strength / 2 · u2) and clipped to [−1, 1].

    Args:
        images: (B, 1, H, W) float in [−1, 1].
        strength: 0 returns the images unchanged.
        uniform: (B, 2) draws in [−1, 1).

    Returns:
        (B, 1, H, W) float in [−1, 1].
    """
    if strength <= 0:
        return images
    u = uniform.to(images.dtype).view(-1, 2, 1, 1)
    gamma, contrast = torch.exp(strength * u[:, :1]), torch.exp(0.5 * strength * u[:, 1:])
    unit = ((images + 1) / 2).clamp(0, 1)
    out = 2 * unit.pow(gamma) - 1
    mean = out.mean(dim=(-2, -1), keepdim=True)
    return (mean + contrast * (out - mean)).clamp(-1, 1)
