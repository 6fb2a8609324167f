"""NIfTI input and output with nibabel, keeping the affine.

Axis convention (the one place that owns it): a 3D NIfTI volume is read as a numpy array of shape (H, W, S) exactly
as nibabel returns it, i.e. ``data[:, :, k]`` is slice k with (row, column) = (first, second) voxel axis. No
reorientation is applied; the affine is carried alongside so predictions can be written back on the input's grid.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from sdnet.errors import DataError


@dataclass(frozen=True)
class NiftiVolume:
    """A loaded NIfTI volume.

    Attributes:
        data: (H, W, S) array (float32 for images; integer for labels when ``as_labels``).
        affine: (4, 4) voxel-to-world affine.
        spacing: voxel sizes in mm, (dy, dx, dz) for the axes of ``data``.
        path: where it was read from.
    """

    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    path: Path


def decode_nifti(path: Path, dtype: type | None = None) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Decode a NIfTI file of any dimension: (data, (4, 4) affine, header zooms).

    Raises:
        DataError: naming the file, when nibabel cannot read it.
    """
    try:
        image = nib.load(str(path))
        proxy = image.dataobj  # type: ignore[attr-defined]
        data = np.asanyarray(proxy) if dtype is None else np.asarray(proxy, dtype=dtype)
        affine = np.asarray(image.affine, dtype=np.float64)  # type: ignore[attr-defined]
        zooms = tuple(float(z) for z in image.header.get_zooms())  # type: ignore[attr-defined]
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    return data, affine, zooms


def check_finite(data: np.ndarray, path: Path | str) -> None:
    """Raise :class:`DataError` naming ``path`` when ``data`` holds NaN or infinite values."""
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise DataError(f"{path}: image contains {bad} non-finite (NaN/Inf) voxels")


def load_nifti(path: str | Path, *, as_labels: bool = False, expect_3d: bool = True) -> NiftiVolume:
    """Read a NIfTI file, checking that it exists, decodes, is 3D (or 2D, promoted to one slice) and is finite.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        as_labels: return integer data (values must be whole numbers).
        expect_3d: reject volumes with a 4th dimension of size > 1.

    Raises:
        DataError: naming the file, for a missing, corrupt, 4D, non-finite or non-integer-label file.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    data, affine, zooms = decode_nifti(p)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if expect_3d and data.ndim != 3:
        raise DataError(f"{p}: expected a 3D volume (H, W, S), got shape {tuple(data.shape)}")
    if as_labels:
        if not np.issubdtype(data.dtype, np.integer):
            as_float = np.asarray(data, dtype=np.float64)
            if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
                raise DataError(f"{p}: label volume contains non-integer or non-finite values")
        out = np.asarray(data).astype(np.int64)
    else:
        out = np.asarray(data, dtype=np.float32)
        check_finite(out, p)
    spacing = (*zooms, 1.0, 1.0, 1.0)[:3]
    return NiftiVolume(data=out, affine=affine, spacing=(spacing[0], spacing[1], spacing[2]), path=p)


def save_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray, *, dtype: type | None = None) -> Path:
    """Write ``data`` (H, W, S) with ``affine`` to ``path`` (``.nii.gz``), creating parent folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(data if dtype is None else data.astype(dtype))
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm")
    nib.save(image, str(p))
    return p
