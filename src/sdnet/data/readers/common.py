"""Helpers shared by the dataset readers: root-folder check, 3D NIfTI loading, slice-first arrays, sorting and checks.

Every problem with the data raises :class:`~sdnet.errors.DataError` with a message that starts with the offending
file's (or folder's) path.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from sdnet.data.nifti import NiftiVolume, load_nifti
from sdnet.data.volumes import DatasetInfo, Volume, check_volume
from sdnet.errors import DataError

_NIFTI_ENDINGS = (".nii.gz", ".nii")


def _check_root(root: str | Path) -> Path:
    base = Path(root)
    if not base.exists():
        raise DataError(f"{base}: dataset folder not found")
    if not base.is_dir():
        raise DataError(f"{base}: not a folder")
    return base


def _header_ndim(path: Path) -> int:
    """Number of dimensions stored in a NIfTI header, trailing singleton dimensions beyond the third ignored."""
    try:
        shape = tuple(nib.load(str(path)).shape)  # type: ignore[attr-defined]
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return len(shape)


def _load_3d(path: Path, *, as_labels: bool = False, reorient: bool = True) -> NiftiVolume:
    """:func:`load_nifti` that also rejects a 2D file (``load_nifti`` would promote it to one slice)."""
    vol = load_nifti(path, as_labels=as_labels, expect_3d=True, reorient=reorient)
    ndim = _header_ndim(path)
    if ndim != 3:
        raise DataError(f"{path}: expected a 3D volume (H, W, S), got a {ndim}D image")
    return vol


def _slice_first(data: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(data, 2, 0))


def _spacing_affine(spacing: tuple[float, float, float] | None) -> np.ndarray:
    affine = np.eye(4)
    if spacing is not None:
        affine[[0, 1, 2], [0, 1, 2]] = spacing
    return affine


def _finish(info: DatasetInfo, volumes: Iterable[Volume]) -> tuple[DatasetInfo, list[Volume]]:
    out = sorted(volumes, key=lambda v: (v.subject_id, v.phase, v.source))
    for volume in out:
        check_volume(volume, info)
    return info, out


def _find_nifti(folder: Path, stem: str) -> Path | None:
    """``folder/<stem>.nii.gz`` or ``.nii``, the extension matched in any case (``.NII.GZ`` from some exporters)."""
    for ending in _NIFTI_ENDINGS:
        candidate = folder / f"{stem}{ending}"
        if candidate.is_file():
            return candidate
    wanted = {f"{stem}{ending}".lower() for ending in _NIFTI_ENDINGS}
    for candidate in sorted(folder.iterdir()) if folder.is_dir() else ():
        if candidate.name.lower() in wanted and candidate.is_file():
            return candidate
    return None
