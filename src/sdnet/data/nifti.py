"""NIfTI input and output with nibabel, keeping the affine.

Axis convention: a 3D NIfTI volume is read as a numpy array of shape (H, W, S), ``data[:, :, k]`` being slice k,
brought to the library's orientation convention (:mod:`sdnet.data.orientation`: slice axis = the file's third
axis, in-plane axes ordered and flipped by the world direction they point along). The returned affine belongs to
the reoriented array; the file's own affine, header and the transform travel alongside, so that
:func:`sdnet.data.orientation.from_canonical` and :func:`save_like` write predictions back on the input's own voxel
grid with the input's header.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from sdnet.data.orientation import to_canonical
from sdnet.errors import DataError
from sdnet.outputs import atomic_output


@dataclass(frozen=True)
class NiftiVolume:
    """A loaded NIfTI volume.

    Attributes:
        data: (H, W, S) array (float32 for images; integer for labels when ``as_labels``), in the orientation
            convention unless read with ``reorient=False``.
        affine: (4, 4) voxel-to-world affine of ``data``.
        spacing: voxel sizes in mm, (dy, dx, dz) for the axes of ``data``.
        path: where it was read from.
        ornt: the (3, 2) nibabel orientation transform from the file's voxel order to ``data``'s (identity when
            the file already is in the convention or ``reorient=False``).
        file_affine: the file's own (4, 4) affine.
        file_shape: the file's own (X, Y, Z) voxel shape.
    """

    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    path: Path
    ornt: np.ndarray = field(default_factory=lambda: np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64))
    file_affine: np.ndarray | None = None
    file_shape: tuple[int, int, int] | None = None


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


def load_nifti(
    path: str | Path, *, as_labels: bool = False, expect_3d: bool = True, reorient: bool = True,
    affine: np.ndarray | None = None,
) -> NiftiVolume:
    """Read a NIfTI file, checking that it exists, decodes, is 3D (or 2D, promoted to one slice) and is finite.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        as_labels: return integer data (values must be whole numbers).
        expect_3d: reject volumes with a 4th dimension of size > 1.
        reorient: bring the volume to the orientation convention (:mod:`sdnet.data.orientation`); False keeps the
            file's voxel order (checkpoints of the ``legacy`` convention).
        affine: the true (4, 4) affine of a file known to carry a wrong one (version-1 phantoms); None uses the
            file's.

    Raises:
        DataError: naming the file, for a missing, corrupt, 4D, non-finite or non-integer-label file.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    data, file_affine, zooms = decode_nifti(p)
    if affine is not None:
        file_affine = np.asarray(affine, dtype=np.float64)
    affine = file_affine
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
    zoom3 = (*zooms, 1.0, 1.0, 1.0)[:3]
    file_shape = (int(out.shape[0]), int(out.shape[1]), int(out.shape[2])) if out.ndim >= 3 else None
    ornt = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)
    if reorient and out.ndim >= 3:
        out, affine, ornt = to_canonical(out, affine)
    spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(ornt):
        spacing[int(target)] = float(zoom3[axis])
    return NiftiVolume(data=out, affine=affine, spacing=(spacing[0], spacing[1], spacing[2]), path=p, ornt=ornt,
                       file_affine=file_affine, file_shape=file_shape)


AFFINE_TOLERANCE = 1e-3


def check_same_grid(image: NiftiVolume, label: NiftiVolume) -> None:
    """Raise :class:`DataError` naming the label file when it does not lie on its image's voxel grid: another
    shape, or an affine that differs by more than ``AFFINE_TOLERANCE`` (mm) — e.g. a mirrored or shifted label.
    Both volumes are compared as read (after reorientation), so copies stored in another voxel order with a
    matching affine agree."""
    if label.data.shape[:3] != image.data.shape[:3]:
        raise DataError(f"{label.path}: label shape {tuple(label.data.shape)} differs from image {image.path} shape "
                        f"{tuple(image.data.shape)}")
    deviation = float(np.max(np.abs(label.affine - image.affine)))
    if deviation > AFFINE_TOLERANCE:
        raise DataError(f"{label.path}: affine differs from that of {image.path} (max deviation {deviation:.4g}); "
                        "the label does not lie on the image's grid")


def save_like(path: str | Path, data: np.ndarray, reference: str | Path, *, dtype: type = np.uint8) -> Path:
    """Write ``data`` (on ``reference``'s own voxel grid and order: (X, Y, Z[, ...])) with ``reference``'s header:
    its qform and sform (codes included), voxel sizes and units are kept; the data type, the trailing dimensions
    and the scaling change (labels are written unscaled as ``dtype``).

    Raises:
        DataError: naming ``reference`` when it cannot be read, or when the shapes differ.
    """
    try:
        ref = nib.load(str(reference))
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{reference}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    ref_shape = tuple(ref.shape)  # type: ignore[attr-defined]
    if tuple(data.shape[:3]) != ref_shape[:3]:
        raise DataError(f"{reference}: voxel grid {ref_shape[:3]} does not match the data to write "
                        f"{tuple(data.shape)}")
    header = ref.header.copy()
    header.set_data_dtype(dtype)  # type: ignore[attr-defined]
    header.set_data_shape(data.shape)  # type: ignore[attr-defined]
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), None, header=header)
    qform, qcode = ref.header.get_qform(coded=True)  # type: ignore[attr-defined]
    sform, scode = ref.header.get_sform(coded=True)  # type: ignore[attr-defined]
    if qform is not None:
        image.set_qform(qform, int(qcode))
    if sform is not None:
        image.set_sform(sform, int(scode))
    if qform is None and sform is None:  # neither set in the file: keep the affine nibabel derived from it
        image.set_sform(ref.affine, 1)  # type: ignore[attr-defined]
    image.header.set_slope_inter(1.0, 0.0)
    p = Path(path)
    with atomic_output(p) as tmp:  # a full disk never leaves a finished-looking, truncated mask
        nib.save(image, str(tmp))
    return p


def save_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray, *, dtype: type | None = None,
               unit: str = "mm") -> Path:
    """Write ``data`` (H, W, S[, ...]) with ``affine`` (as qform and sform, code 1 "scanner") to ``path``
    (``.nii.gz``), creating parent folders. ``unit="unknown"`` marks a file whose voxel size is not known."""
    p = Path(path)
    array = np.asarray(data if dtype is None else data.astype(dtype))
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    image.set_qform(np.asarray(affine, dtype=np.float64), 1)
    image.set_sform(np.asarray(affine, dtype=np.float64), 1)
    if unit == "unknown":
        image.header.set_xyzt_units(0, 0)
    else:
        image.header.set_xyzt_units(unit)
    with atomic_output(p) as tmp:
        nib.save(image, str(tmp))
    return p
