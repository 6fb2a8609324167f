"""Labels, tissue classes and the data classes shared by every stage of the phantom.

:data:`LABELS`, :data:`TISSUES`, :class:`PhantomSubject` (a rendered subject), :class:`TissueMaps` (the
modality-independent input of every renderer) and the :data:`RngFactory` / :data:`Renderer` call signatures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

LABELS: dict[int, str] = {0: "background", 1: "RV", 2: "MYO", 3: "LV"}

TISSUES: tuple[str, ...] = (
    "air",
    "fat",
    "muscle",
    "lung",
    "liver",
    "bone",
    "marrow",
    "csf",
    "vessel",
    "aorta",
    "lv_blood",
    "rv_blood",
    "myocardium",
    "rv_wall",
    "papillary",
)
"""Tissue classes of :class:`TissueMaps` (index = position). ``myocardium`` is the LV myocardium only; ``rv_wall`` and
``papillary`` are rendered with the myocardial intensity but are labelled background and LV respectively."""

_T: Mapping[str, int] = MappingProxyType({name: i for i, name in enumerate(TISSUES)})

PHANTOM_VERSION = 2
"""``phantom.json`` version: 2 writes the anatomical affine of :func:`phantom_affine`; version-1 files carried
``diag(dx, dy, dz)``, which put the (correctly drawn) heart in a mirrored world (RV left-posterior of the LV)."""


def phantom_affine(spacing: tuple[float, float, float]) -> np.ndarray:
    """The (4, 4) world (RAS+) affine of a phantom volume stored (row, column, slice).

    The slices are drawn as a radiological short-axis-like view (image ``y`` downwards = posterior, ``x`` to the
    right = the patient's left, so the liver and the RV lie on the image's left and the spine at the bottom) and
    stacked from base to apex, i.e. towards inferior. Row i therefore points to -A, column j to -R and slice k to
    -S (a proper rotation, determinant +1); the origin is the first voxel.

    Args:
        spacing: (row, column, slice) voxel sizes in mm.
    """
    dy, dx, dz = spacing
    affine = np.zeros((4, 4))
    affine[0, 1], affine[1, 0], affine[2, 2], affine[3, 3] = -dx, -dy, -dz, 1.0
    return affine


@dataclass
class PhantomSubject:
    """One rendered subject.

    Attributes:
        subject_id: ``phantom_000``, ``phantom_001``, ...
        labels: (P, S, H, W) uint8 label maps, values in :data:`LABELS`.
        images: modality -> (P, S, H, W) float32 image.
        anatomy: true anatomical parameters (plain floats; lengths in mm, angles in degrees, volumes in mL).
        modality_params: modality -> true rendering parameters (tissue intensities ``intensity_<tissue>``, bias
            amplitude, noise sigma, ...).
        lv_volume_ml: per-phase LV blood-pool volume from the labels, (#LV voxels) * dx * dy * dz / 1000.
        ed_phase: index of end-diastole (0).
        es_phase: index of end-systole (P-1).
    """

    subject_id: str
    labels: np.ndarray
    images: dict[str, np.ndarray]
    anatomy: dict[str, float]
    modality_params: dict[str, dict[str, float]]
    lv_volume_ml: list[float]
    ed_phase: int
    es_phase: int


@dataclass
class TissueMaps:
    """Modality-independent description of one subject, the input of every modality renderer.

    Attributes:
        fractions: (T, P, S, H, W) float32 fraction of each pixel covered by tissue ``TISSUES[t]``; sums to 1 over T.
        labels: (P, S, H, W) uint8 label maps (geometry at pixel centres).
        lv_angle: (P, S, H, W) float32 angle in radians (-pi, pi] of each pixel about the LV centre (image axes:
            x right, y down).
        texture: (S, H, W) float32 smooth zero-mean, unit-variance field (tissue micro-texture), shared by all
            modalities.
        anatomy: true anatomical parameters (see :attr:`PhantomSubject.anatomy`).
    """

    fractions: np.ndarray
    labels: np.ndarray
    lv_angle: np.ndarray
    texture: np.ndarray
    anatomy: dict[str, float] = field(default_factory=dict)

    def fraction(self, tissue: str) -> np.ndarray:
        """Fraction map of one tissue.

        Args:
            tissue: a name from :data:`TISSUES`.

        Returns:
            (P, S, H, W) float32 in [0, 1].
        """
        return np.asarray(self.fractions[_T[tissue]])

    def mask(self, tissue: str, threshold: float = 0.999) -> np.ndarray:
        """Pixels (almost) entirely covered by one tissue (no partial volume).

        Args:
            tissue: a name from :data:`TISSUES`.
            threshold: minimum fraction.

        Returns:
            (P, S, H, W) bool.
        """
        return self.fraction(tissue) >= threshold


RngFactory = Callable[[str], np.random.Generator]
"""``rng_for(stream)``: a fresh generator for a named random stream of the current subject (deterministic)."""

Renderer = Callable[[TissueMaps, RngFactory], tuple[np.ndarray, dict[str, float]]]
"""A modality renderer: ``(tissue maps, rng_for) -> ((P, S, H, W) float32 image, true rendering parameters)``."""
