"""The anatomical check of a cardiac label map in world coordinates: is the RV where anatomy puts it?

In every heart the right ventricle lies to the patient's right of the left ventricle and in front of it. For a
short-axis stack with a true (scanner) geometry the RV centroid lies both towards +R and towards +A of the LV
centroid (world RAS+, as nibabel reports it); for files whose header is only axis-aligned (ACDC's: the oblique
short-axis plane was not kept), the in-plane direction is kept up to the plane's rotation about the long axis, and
the RV lies towards +R while its anterior offset can have either sign. The check therefore asks, per frame, that

* the RV and the LV are both present, and
* the RV−LV centroid vector, projected on the axial (R, A) plane, points within 90° of the right-anterior
  diagonal ``(R + A) / √2`` (``dR + dA > 0``).

A model fed images turned by a half turn, or mirrored left-right, writes masks that fail it (``docs/orientation.md``
has the numbers: 196 of 200 ACDC label volumes pass in the convention, 4 of 200 after a half turn). What it cannot
see is a mirror across the right-anterior diagonal itself (it maps the vector onto one with the same ``dR + dA``).

:func:`rv_lv_check` works on any voxel layout: centroids are taken in voxel indices and mapped through the affine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrameCheck:
    """The anatomical check of one 3D label frame.

    Attributes:
        present: class name -> whether any voxel has it (background excluded).
        rv_minus_lv_mm: world (R, A, S) vector from the LV to the RV centroid, in the affine's units (mm); None
            when either is missing or the label map names no RV/LV.
        angle_deg: direction of that vector in the axial plane, degrees from +R towards +A (-180, 180]; the
            right-anterior diagonal is 45°.
        ok: the check passed (True), failed (False) or does not apply (None: no RV/LV labels).
        problem: why it failed ("" when it passed or does not apply).
    """

    present: dict[str, bool]
    rv_minus_lv_mm: tuple[float, float, float] | None
    angle_deg: float | None
    ok: bool | None
    problem: str = ""


def _value_named(labels: Mapping[int, str], name: str) -> int | None:
    return next((int(v) for v, n in labels.items() if int(v) != 0 and str(n).upper() == name), None)


def rv_lv_check(mask: np.ndarray, affine: np.ndarray, labels: Mapping[int, str]) -> FrameCheck:
    """Check one 3D label frame against anatomy.

    Args:
        mask: (X, Y, Z) integer label map in any voxel order (a 2D (X, Y) map is one slice).
        affine: its (4, 4) voxel-to-world (RAS+) affine.
        labels: label value -> name (background 0 included); the RV and LV are the values named ``RV`` and ``LV``
            (any case).

    Returns:
        The :class:`FrameCheck`.
    """
    m = np.asarray(mask)
    if m.ndim == 2:
        m = m[:, :, None]
    present = {str(n): bool(np.any(m == int(v))) for v, n in labels.items() if int(v) != 0}
    rv, lv = _value_named(labels, "RV"), _value_named(labels, "LV")
    if rv is None or lv is None:
        return FrameCheck(present=present, rv_minus_lv_mm=None, angle_deg=None, ok=None)
    missing = [name for name, value in (("RV", rv), ("LV", lv)) if not np.any(m == value)]
    if missing:
        return FrameCheck(present=present, rv_minus_lv_mm=None, angle_deg=None, ok=False,
                          problem=f"{' and '.join(missing)} missing")
    a = np.asarray(affine, dtype=np.float64)
    centroids = []
    for value in (rv, lv):
        index = np.argwhere(m == value).mean(axis=0)
        centroids.append(a[:3, :3] @ index + a[:3, 3])
    d = centroids[0] - centroids[1]
    vector = (float(d[0]), float(d[1]), float(d[2]))
    angle = float(np.degrees(np.arctan2(d[1], d[0])))
    if is_right_anterior((d[0], d[1])):
        return FrameCheck(present=present, rv_minus_lv_mm=vector, angle_deg=angle, ok=True)
    return FrameCheck(present=present, rv_minus_lv_mm=vector, angle_deg=angle, ok=False,
                      problem=f"RV not right-anterior of the LV (direction {angle:.0f}° from +R towards +A; "
                              "expected within 90° of 45°)")


def is_right_anterior(vector: tuple[float, float] | np.ndarray) -> bool:
    """Whether an (R, A) offset lies within 90° of the right-anterior diagonal: the test of :func:`rv_lv_check`."""
    return bool(float(vector[0]) + float(vector[1]) > 0)
