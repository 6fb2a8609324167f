"""The one axis and orientation convention in which volumes reach the library, and the maps to and from it.

Convention ``CONVENTION`` (recorded in every run config as ``data.orientation`` and so in every checkpoint):

* a volume is slice-first, ``(S, H, W)``; the slice axis is the file's third voxel axis (the NIfTI convention
  for a stack of 2D slices, what ACDC, M&Ms and dcm2niix write);
* in-plane, the two remaining voxel axes are ordered and flipped by the world direction they point along: with
  nibabel's :func:`~nibabel.orientations.io_orientation` each voxel axis is paired with the closest world (RAS+)
  axis, the in-plane axis paired with the lower world axis (R before A before S) becomes the row axis H, the other
  the column axis W, and every axis is flipped where needed to point towards +R, +A or +S. The slice axis is
  flipped the same way.

Two copies of a scan that differ only in how the voxels are stored (axes flipped, in-plane axes swapped, with
affines to match) therefore reach the model as the same array, and :func:`from_canonical` maps a prediction back
onto each copy's own voxel grid: the same mask in world space.

SSL4MIS: the release's HDF5 arrays were written from the ACDC NIfTI files through SimpleITK, whose arrays are
ordered (z, y, x), so a stored slice is (row, column) = (j, i) of the NIfTI file. :func:`ssl4mis_to_canonical`
transposes each slice back to (i, j). The release keeps no affine; ACDC's NIfTI headers carry an axis-aligned
affine with positive voxel sizes (assumed here — the release cannot show it), for which the file's own voxel
order already is the convention's order, so the transposed slices are in the convention.

Checkpoints trained before the convention existed (their config has no ``data.orientation``) saw SSL4MIS slices in
the release's (j, i) order and NIfTI files in their raw voxel order; they load as ``LEGACY`` and
:func:`legacy_to_canonical` tells how to bring canonical arrays to what such a model expects.
"""

from __future__ import annotations

from typing import Literal

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff

CONVENTION = "canonical"
"""The convention of volumes read by this version (see the module docstring)."""
LEGACY = "legacy"
"""Checkpoints from before the convention: SSL4MIS slices transposed (j, i), NIfTI files in raw voxel order."""
Orientation = Literal["canonical", "legacy"]
ORIENTATIONS: tuple[str, ...] = (CONVENTION, LEGACY)


def canonical_ornt(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform (3, 2) that brings a volume with ``affine`` to the convention.

    Row k of the result is ``(output axis, flip)`` for input voxel axis k, as :func:`nibabel.orientations.
    apply_orientation` expects. Axes whose direction is undefined (a degenerate affine) keep their place unflipped.

    Args:
        affine: (4, 4) voxel-to-world affine of a 3D volume stored (i, j, slice).
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        return np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)
    io = nib.orientations.io_orientation(a)  # (3, 2): world axis (or NaN) and sign per voxel axis
    world = [float(io[k, 0]) if np.isfinite(io[k, 0]) else float(k) for k in range(3)]
    signs = [float(io[k, 1]) if np.isfinite(io[k, 1]) else 1.0 for k in range(3)]
    rows = (0, 1) if world[0] <= world[1] else (1, 0)  # rows[k] = output position of in-plane input axis k
    return np.array([[rows[0], signs[0]], [rows[1], signs[1]], [2, signs[2]]], dtype=np.float64)


def is_identity(ornt: np.ndarray) -> bool:
    """Whether ``ornt`` leaves a volume as it is."""
    return bool(np.array_equal(ornt, np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)))


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bring ``data`` (i, j, slice[, ...]) stored with ``affine`` to the convention's voxel order.

    Args:
        data: (X, Y, Z) or (X, Y, Z, T) array as nibabel returns it; trailing axes (time) are kept.
        affine: its (4, 4) voxel-to-world affine.

    Returns:
        (reoriented contiguous array (H, W, S[, T]), its affine — the same voxel-to-world map for the new voxel
        order —, the orientation transform used, for :func:`from_canonical`).
    """
    ornt = canonical_ornt(affine)
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
    """SSL4MIS arrays ((H, W) slices or (Z, H, W) volumes, stored (j, i)) in the convention's (i, j) order."""
    return np.ascontiguousarray(np.swapaxes(slice_or_volume, -1, -2))


def legacy_to_canonical(slice_first: np.ndarray) -> np.ndarray:
    """(S, H, W) canonical slices as a ``LEGACY`` SSL4MIS-trained model saw its training slices (transposed
    in-plane); the map is its own inverse."""
    return np.ascontiguousarray(np.swapaxes(slice_first, -1, -2))
