"""The one axis and orientation convention in which volumes reach the library, and the maps to and from it.

Convention ``CONVENTION`` = ``"ras"`` (recorded in every run config as ``data.orientation`` and so in every
checkpoint):

* a volume is slice-first, ``(S, H, W)``; the slice axis is the voxel axis clearly coarser than the two others
  (:func:`slice_axis`: a PIR or LPS copy of a 10 mm short-axis stack is sliced the same way), else the file's
  third voxel axis (the NIfTI convention for a stack of 2D slices, what ACDC, M&Ms and dcm2niix write);
* in-plane, the two remaining voxel axes are ordered and flipped by the world direction they point along: with
  nibabel's :func:`~nibabel.orientations.io_orientation` each voxel axis is paired with the closest world (RAS+)
  axis, the in-plane axis paired with the lower world axis (R before A before S) becomes the row axis H, the other
  the column axis W, and every axis is flipped where needed to point towards +R, +A or +S. The slice axis is
  flipped the same way. For a short-axis stack the rows therefore run towards the patient's right and the columns
  towards anterior, so the RV lies at larger H (and, mostly, larger W) than the LV.

Two copies of a scan that differ only in how the voxels are stored (axes flipped, in-plane axes swapped, with
affines to match) therefore reach the model as the same array, and :func:`from_canonical` maps a prediction back
onto each copy's own voxel grid: the same mask in world space.

SSL4MIS: the release's HDF5 arrays were written from the ACDC NIfTI files through SimpleITK, whose arrays are
ordered (z, y, x), so a stored slice is (row, column) = (j, i) of the NIfTI file. The release keeps no affine, but
the ACDC NIfTI headers are axis-aligned with both in-plane voxel axes pointing to -x and -y (sform
``diag(-1, -1, 1)``, qform ``diag(-s, -s, 10)``: voxel axis i towards the patient's left, j towards posterior, the
LPS order that ITK writes). :func:`ssl4mis_to_canonical` therefore transposes each slice back to (i, j) and flips
both in-plane axes (a half turn): exactly what :func:`to_canonical` does to the original NIfTI file. The evidence
(the header, and the RV right of the LV in all 200 label volumes after this map) is in ``docs/orientation.md``.

Older frames, still loadable (:func:`model_frame` maps convention slices to what such a model saw):

* ``"canonical"`` (issue 15, before this convention): the same NIfTI handling, but SSL4MIS slices only transposed
  (a half turn from the convention), and phantoms written before phantom version 2, whose files carried an identity
  affine for slices rendered with rows towards posterior and columns towards the patient's left (a mirror of the
  convention: transpose and half turn).
* ``"legacy"`` (before issue 15; a checkpoint config without ``data.orientation``): SSL4MIS slices as stored and
  other NIfTI files in their raw voxel order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff

CONVENTION = "ras"
"""The convention of volumes read by this version (see the module docstring)."""
CANONICAL_V1 = "canonical"
"""The convention of issue 15: right for NIfTI inputs, SSL4MIS slices and version-1 phantoms turned."""
LEGACY = "legacy"
"""Checkpoints from before the convention: SSL4MIS slices transposed (j, i), NIfTI files in raw voxel order."""
Orientation = Literal["ras", "canonical", "legacy"]
ORIENTATIONS: tuple[str, ...] = (CONVENTION, CANONICAL_V1, LEGACY)


@dataclass(frozen=True)
class InPlaneMap:
    """One of the eight square symmetries of the slice plane: first an optional transpose of (H, W), then
    optional flips of the (new) rows and columns.

    Attributes:
        transpose: swap the two in-plane axes.
        flip_rows: reverse the row axis (after the transpose).
        flip_cols: reverse the column axis (after the transpose).
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def apply(self, array: np.ndarray, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
        """Apply the map to the in-plane ``axes`` (rows, columns) of ``array``; returns a contiguous copy (or
        ``array`` itself for the identity)."""
        if self.is_identity:
            return array
        out = np.swapaxes(array, axes[0], axes[1]) if self.transpose else array
        if self.flip_rows:
            out = np.flip(out, axes[0])
        if self.flip_cols:
            out = np.flip(out, axes[1])
        return np.ascontiguousarray(out)

    def inverse(self) -> InPlaneMap:
        """The map that undoes this one (a row flip before a transpose is a column flip after it)."""
        if self.transpose:
            return InPlaneMap(transpose=True, flip_rows=self.flip_cols, flip_cols=self.flip_rows)
        return self

    def spacing(self, spacing: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        """(row, column, slice) voxel sizes after the map."""
        if spacing is None or not self.transpose:
            return spacing
        return (spacing[1], spacing[0], spacing[2])

    def affine(self, affine: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The (4, 4) affine of (H, W, S) data after the map, given the affine and in-plane shape (H, W) before it:
        every voxel keeps its world position."""
        rows, cols = (shape[1], shape[0]) if self.transpose else shape
        m = np.eye(4)  # new voxel (r, c, s) -> old voxel
        if self.flip_rows:
            m[0, 0], m[0, 3] = -1.0, rows - 1
        if self.flip_cols:
            m[1, 1], m[1, 3] = -1.0, cols - 1
        if self.transpose:
            m = np.eye(4)[[1, 0, 2, 3]] @ m
        return np.asarray(affine, dtype=np.float64) @ m


IDENTITY = InPlaneMap()
HALF_TURN = InPlaneMap(flip_rows=True, flip_cols=True)
ANTI_TRANSPOSE = InPlaneMap(transpose=True, flip_rows=True, flip_cols=True)


def radiological_view(slice_image: np.ndarray) -> np.ndarray:
    """A convention slice ((H, W) or (H, W, channels): rows towards +R, columns towards +A) as a radiologist views
    it: anterior at the top, the patient's right on the image's left (rows of the view towards posterior, columns
    towards the patient's left) — the convention's anti-transpose."""
    return ANTI_TRANSPOSE.apply(slice_image, axes=(0, 1))


def model_frame(orientation: str, data_format: str) -> InPlaneMap | None:
    """The in-plane map from convention slices to the slices a model trained in ``orientation`` on
    ``data_format`` saw; None for a ``legacy`` model of a NIfTI format, which saw the files' raw voxel order (read
    those with ``reorient=False`` instead).

    Args:
        orientation: the checkpoint's ``data.orientation``.
        data_format: its ``data.format``.
    """
    if orientation == CONVENTION:
        return IDENTITY
    if orientation == CANONICAL_V1:
        return {"ssl4mis": HALF_TURN, "phantom": ANTI_TRANSPOSE}.get(data_format, IDENTITY)
    if orientation == LEGACY:
        return ANTI_TRANSPOSE if data_format == "ssl4mis" else None
    raise ValueError(f"unknown orientation {orientation!r}; expected one of {ORIENTATIONS}")


SLICE_AXIS_RATIO = 2.0
"""A voxel axis at least this many times coarser than both others is the slice axis, wherever it is stored."""


def slice_axis(affine: np.ndarray, shape: tuple[int, ...] | None = None) -> int:
    """The voxel axis (0, 1 or 2) of a 3D volume that holds its stack of 2D slices.

    A short-axis stack has slices several times thicker than its pixels (ACDC: 1.56 × 1.56 × 10 mm), so the voxel
    axis at least :data:`SLICE_AXIS_RATIO` times coarser than the two others is the slice axis, whichever place the
    file gives it (a PIR copy of an ACDC volume stores it second); a volume with exactly one axis of length 1 is one
    slice along that axis; otherwise (near-isotropic CT, no shape) the third axis, as NIfTI stacks are written.

    Args:
        affine: (4, 4) voxel-to-world affine.
        shape: the volume's voxel shape (its first three entries are used), if known.
    """
    a = np.asarray(affine, dtype=np.float64)
    if shape is not None and len(shape) >= 3:
        single = [k for k in range(3) if int(shape[k]) == 1]
        if len(single) == 1:
            return single[0]
    if a.shape == (4, 4) and np.all(np.isfinite(a)):
        zooms = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
        coarsest = int(np.argmax(zooms))
        others = [float(zooms[k]) for k in range(3) if k != coarsest]
        if max(others) > 0 and zooms[coarsest] >= SLICE_AXIS_RATIO * max(others):
            return coarsest
    return 2


def canonical_ornt(affine: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The nibabel orientation transform (3, 2) that brings a volume with ``affine`` to the convention.

    Row k of the result is ``(output axis, flip)`` for input voxel axis k, as :func:`nibabel.orientations.
    apply_orientation` expects. The slice axis (:func:`slice_axis`) goes last; the two in-plane axes are ordered by
    the world axis they are closest to (R before A before S) and every axis is flipped to point towards + along its
    world axis. Axes whose direction is undefined (a degenerate affine) keep their place unflipped.

    Args:
        affine: (4, 4) voxel-to-world affine of a 3D volume.
        shape: its voxel shape, if known (see :func:`slice_axis`).
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        return np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)
    io = nib.orientations.io_orientation(a)  # (3, 2): world axis (or NaN) and sign per voxel axis
    world = [float(io[k, 0]) if np.isfinite(io[k, 0]) else float(k) for k in range(3)]
    signs = [float(io[k, 1]) if np.isfinite(io[k, 1]) else 1.0 for k in range(3)]
    through = slice_axis(a, shape) if np.all(np.isfinite(io)) else 2
    first, second = [k for k in range(3) if k != through]
    if world[second] < world[first]:
        first, second = second, first
    out = np.zeros((3, 2), dtype=np.float64)
    for axis, position in ((first, 0), (second, 1), (through, 2)):
        out[axis] = (position, signs[axis])
    return out


def is_identity(ornt: np.ndarray) -> bool:
    """Whether ``ornt`` leaves a volume as it is."""
    return bool(np.array_equal(ornt, np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)))


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bring ``data`` (X, Y, Z[, ...]) stored with ``affine`` to the convention's voxel order.

    Args:
        data: (X, Y, Z) or (X, Y, Z, T) array as nibabel returns it; trailing axes (time) are kept.
        affine: its (4, 4) voxel-to-world affine.

    Returns:
        (reoriented contiguous array (H, W, S[, T]), its affine — the same voxel-to-world map for the new voxel
        order —, the orientation transform used, for :func:`from_canonical`).
    """
    ornt = canonical_ornt(affine, data.shape)
    if is_identity(ornt):
        return data, np.asarray(affine, dtype=np.float64), ornt
    out = np.ascontiguousarray(apply_orientation(data, ornt))
    new_affine = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(ornt, data.shape[:3])
    return out, new_affine, ornt


def inverse_ornt(ornt: np.ndarray) -> np.ndarray:
    """The orientation transform that undoes ``ornt``."""
    inv = np.zeros_like(ornt)
    for k, (axis, flip) in enumerate(ornt):
        inv[int(axis)] = (k, flip)
    return inv


def from_canonical(data: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Map an array in the convention's voxel order (H, W, S[, ...]) back to the file's own order, given the
    transform :func:`to_canonical` returned for that file."""
    if is_identity(ornt):
        return data
    return np.ascontiguousarray(apply_orientation(data, inverse_ornt(ornt)))


def ssl4mis_to_canonical(slice_or_volume: np.ndarray) -> np.ndarray:
    """SSL4MIS arrays ((H, W) slices or (Z, H, W) volumes, stored (j, i) of an ACDC NIfTI file whose voxel axes
    point towards L and P) in the convention: transposed back to (i, j), both axes flipped to point to R and A."""
    return InPlaneMap(transpose=True, flip_rows=True, flip_cols=True).apply(slice_or_volume)
