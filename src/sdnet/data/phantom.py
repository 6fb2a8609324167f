"""Synthetic cardiac phantom: short-axis cine stacks of a 3D heart with known anatomy, rendered as MR and as CT.

The phantom is the package's built-in dataset (demo, tests) and the ground truth for disentanglement studies: the
*same* tissue maps are rendered in several modalities with known, per-subject rendering parameters, so anatomy and
imaging factors are separable by construction.

Geometry lives in normalised image coordinates (``x`` to the right, ``y`` downwards, both in [-1, 1] across the field
of view; the image centre is 0). Each subject has

* a body (ellipse) with subcutaneous fat, a chest-wall muscle layer with ribs and a sternum, both lungs with
  pulmonary vessels, a mediastinum (fat), the spine (vertebral body: cortical bone around marrow; posterior arch,
  spinal canal), paraspinal muscles, the descending aorta next to the spine, and the liver in the basal slices;
* a heart: LV blood pool with two papillary muscles (labelled LV, as in ACDC), LV myocardium, an RV crescent on the
  septal side (thin RV wall rendered but not labelled), epicardial fat around it;
* ``n_slices`` slices from base (slice 0) to apex (slice S-1): LV/RV radii shrink towards the apex, the RV vanishes
  before the apex, the liver only appears in the basal slices;
* ``n_phases`` frames from ED (phase 0) to ES (phase P-1): the LV cavity area shrinks by the subject's ejection
  fraction, the myocardium thickens (its area is conserved), the RV shrinks.

Images are rendered from tissue fractions computed on a 2x supersampled grid (anti-aliased edges); labels are the
geometry sampled at pixel centres. Everything is vectorised numpy; a subject is a pure function of
``(config.seed, index)`` and the rendering settings, not of ``n_subjects``.

Modalities (:data:`MODALITY_RENDERERS`): ``MR`` (bSSFP-like, arbitrary units ~0-1000, bias field, Rician noise),
``CT`` (contrast-enhanced, Hounsfield units, additive Gaussian noise), ``BOLD`` (``MR`` with a subtle, local change of
the myocardial intensity, mimicking cine vs CP-BOLD).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy import ndimage

from sdnet.data.nifti import save_nifti
from sdnet.errors import DataError
from sdnet.outputs import check_writable, write_text

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
_SUPERSAMPLE = 2
_MAX_EPI_FAT = 0.06
_HEART_TISSUE: Mapping[str, str] = MappingProxyType(
    {
        "envelope": "fat",
        "rv_outer": "rv_wall",
        "rv_inner": "rv_blood",
        "epi": "myocardium",
        "cavity": "lv_blood",
        "papillary": "papillary",
    }
)  # heart masks of _heart_shapes, in painting order, and the tissue each is painted with
_CHECK_GRID = 64  # resolution of the (config-independent) anatomical plausibility check
_MIN_IMAGE_SIZE = 32
_MIN_SLICES = 3
_MIN_PHASES = 2


# ----------------------------------------------------------------------------------------------------------------------
# Public data classes


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate.

    Attributes:
        n_subjects: number of subjects (``phantom_000`` ...).
        image_size: H = W of every slice, in pixels (>= 32).
        pixel_spacing_mm: in-plane voxel size (both axes), mm.
        slice_thickness_mm: through-plane voxel size, mm.
        n_slices: S, short-axis slices from base (0) to apex (S-1) (>= 3).
        n_phases: P, cardiac frames from ED (0) to ES (P-1) (>= 2).
        modalities: renderings to produce, names from :data:`MODALITY_RENDERERS` (``MR``, ``CT``, ``BOLD``).
        seed: base seed (>= 0); subject k uses generators seeded by ``(seed, k)``.
    """

    n_subjects: int = 40
    image_size: int = 96
    pixel_spacing_mm: float = 2.0
    slice_thickness_mm: float = 8.0
    n_slices: int = 8
    n_phases: int = 5
    modalities: tuple[str, ...] = ("MR", "CT")
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.modalities, tuple):  # accept a list (e.g. read back from phantom.json)
            object.__setattr__(self, "modalities", tuple(self.modalities))
        if self.n_subjects < 1:
            raise ValueError(f"PhantomConfig.n_subjects must be >= 1, got {self.n_subjects}")
        if self.image_size < _MIN_IMAGE_SIZE:
            raise ValueError(f"PhantomConfig.image_size must be >= {_MIN_IMAGE_SIZE} pixels, got {self.image_size}")
        if not self.pixel_spacing_mm > 0:
            raise ValueError(f"PhantomConfig.pixel_spacing_mm must be > 0, got {self.pixel_spacing_mm}")
        if not self.slice_thickness_mm > 0:
            raise ValueError(f"PhantomConfig.slice_thickness_mm must be > 0, got {self.slice_thickness_mm}")
        if self.n_slices < _MIN_SLICES:
            raise ValueError(f"PhantomConfig.n_slices must be >= {_MIN_SLICES} (base, mid, apex), got {self.n_slices}")
        if self.n_phases < _MIN_PHASES:
            raise ValueError(f"PhantomConfig.n_phases must be >= {_MIN_PHASES} (ED and ES), got {self.n_phases}")
        if not self.modalities:
            raise ValueError("PhantomConfig.modalities must name at least one modality")
        unknown = [m for m in self.modalities if m not in MODALITY_RENDERERS]
        if unknown:
            raise ValueError(
                f"PhantomConfig.modalities: unknown modality {unknown}; known: {sorted(MODALITY_RENDERERS)}"
            )
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"PhantomConfig.modalities has duplicates: {list(self.modalities)}")
        if self.seed < 0:
            raise ValueError(f"PhantomConfig.seed must be >= 0, got {self.seed}")


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


# ----------------------------------------------------------------------------------------------------------------------
# Anatomy sampling


@dataclass(frozen=True)
class _Anatomy:
    """Per-subject geometry in normalised units (fraction of the half field of view)."""

    body_cx: float
    body_cy: float
    body_ax: float
    body_ay: float
    fat_sc: float
    muscle: float
    spine_x: float
    canal_y: float
    canal_r: float
    vb_y: float
    vb_r: float
    aorta_x: float
    aorta_y: float
    aorta_r: float
    rib_angles: tuple[float, ...]
    rib_r: float
    liver_angle: float  # image angle of the thorax corner holding the liver dome
    liver_size: float
    liver_extent: float  # liver present for t < liver_extent
    heart_x: float
    heart_y: float
    drift_x: float
    drift_y: float
    rv_angle: float  # image angle (radians, y down) of the direction from the LV centre to the RV
    lv_r: float  # ED cavity radius at the base
    wall: float  # ED wall thickness at the base
    ef: float
    rv_scale: float
    rv_ef: float
    apex_extent: float  # LV shape ends at t = apex_extent (t = 0 base, 1 most apical slice)
    rv_extent: float  # RV vanishes at t = rv_extent (< 1)
    ecc2: float
    ecc2_phase: float
    ecc3: float
    ecc3_phase: float
    pm_frac: float
    pm_spread: float
    epi_fat: float
    epi_fat_angle: float


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    """One random draw of all anatomical parameters (not yet checked for plausibility)."""
    body_ax = _u(rng, 0.86, 0.96)
    body_ay = body_ax * _u(rng, 0.76, 0.92)
    body_cx = _u(rng, -0.03, 0.03)
    body_cy = _u(rng, -0.03, min(0.05, 0.97 - body_ay))
    fat_sc = _u(rng, 0.025, 0.07)
    muscle = _u(rng, 0.035, 0.06)
    spine_x = body_cx + _u(rng, -0.03, 0.03)
    canal_r = _u(rng, 0.035, 0.045)
    canal_y = body_cy + body_ay - fat_sc - _u(rng, 0.15, 0.18)
    vb_r = _u(rng, 0.085, 0.105)
    vb_y = canal_y - canal_r - 0.02 - vb_r
    aorta_r = _u(rng, 0.065, 0.085)
    aorta_dy = -_u(rng, 0.3, 0.6) * vb_r
    gap = _u(rng, 0.01, 0.03)
    aorta_x = spine_x + float(np.sqrt((vb_r + aorta_r + gap) ** 2 - aorta_dy**2))
    aorta_y = vb_y + aorta_dy
    n_ribs = int(rng.integers(3, 5))  # per side, anterior-lateral
    left = np.linspace(-np.pi + 0.35, -np.pi / 2 - 0.4, n_ribs)
    right = np.linspace(-np.pi / 2 + 0.4, -0.35, n_ribs)
    post = np.array([0.3, 0.75, np.pi - 0.75, np.pi - 0.3])
    ribs = np.concatenate([left, right, post]) + rng.uniform(-0.08, 0.08, 2 * n_ribs + 4)
    heart_x = body_cx + _u(rng, -0.04, 0.10)
    heart_y = body_cy + _u(rng, -0.16, 0.04)
    drift = _u(rng, 0.0, 0.06)
    drift_dir = _u(rng, 0.0, 2 * np.pi)
    ef = _u(rng, 0.5, 0.7) if rng.uniform() < 0.75 else _u(rng, 0.2, 0.5)
    return _Anatomy(
        body_cx=body_cx,
        body_cy=body_cy,
        body_ax=body_ax,
        body_ay=body_ay,
        fat_sc=fat_sc,
        muscle=muscle,
        spine_x=spine_x,
        canal_y=canal_y,
        canal_r=canal_r,
        vb_y=vb_y,
        vb_r=vb_r,
        aorta_x=aorta_x,
        aorta_y=aorta_y,
        aorta_r=aorta_r,
        rib_angles=tuple(float(a) for a in ribs),
        rib_r=_u(rng, 0.022, 0.03),
        liver_angle=float(np.deg2rad(_u(rng, 115.0, 145.0))),
        liver_size=_u(rng, 0.35, 0.6),
        liver_extent=_u(rng, 0.3, 0.6),
        heart_x=heart_x,
        heart_y=heart_y,
        drift_x=drift * float(np.cos(drift_dir)),
        drift_y=drift * float(np.sin(drift_dir)),
        rv_angle=float(np.deg2rad(200.0 + _u(rng, -25.0, 25.0))),
        lv_r=_u(rng, 0.17, 0.22),
        wall=_u(rng, 0.06, 0.085),
        ef=ef,
        rv_scale=_u(rng, 0.8, 1.2),
        rv_ef=_u(rng, 0.35, 0.6),
        apex_extent=_u(rng, 1.1, 1.3),
        rv_extent=_u(rng, 0.75, 0.92),
        ecc2=_u(rng, 0.0, 0.06),
        ecc2_phase=_u(rng, 0.0, np.pi),
        ecc3=_u(rng, 0.0, 0.03),
        ecc3_phase=_u(rng, 0.0, 2 * np.pi),
        pm_frac=_u(rng, 0.13, 0.18),
        pm_spread=float(np.deg2rad(_u(rng, 35.0, 55.0))),
        epi_fat=_u(rng, 0.02, _MAX_EPI_FAT),
        epi_fat_angle=_u(rng, 0.0, 2 * np.pi),
    )


def _grid(n: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised sample coordinates of an ``n x n`` image sampled ``factor`` times per pixel and axis.

    Returns:
        x (1, 1, 1, n*factor) and y (1, 1, n*factor, 1) float32, in [-1, 1].
    """
    c = (((np.arange(n * factor) + 0.5) / factor - n / 2) / (n / 2)).astype(np.float32)
    return c.reshape(1, 1, 1, -1), c.reshape(1, 1, -1, 1)


def _ellipse(
    x: np.ndarray,
    y: np.ndarray,
    cx: float | np.ndarray,
    cy: float | np.ndarray,
    ax: float | np.ndarray,
    ay: float | np.ndarray,
) -> np.ndarray:
    """Inside of an axis-aligned ellipse (broadcasting)."""
    return np.asarray(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 < 1.0)


def _heart_state(an: _Anatomy, t: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Heart shape parameters per (phase, slice).

    Args:
        an: anatomy.
        t: (1, S) slice position, 0 base .. 1 apex.
        w: (P, 1) contraction state, 0 at ED .. 1 at ES.

    Returns:
        name -> (P, S, 1, 1) float32 array.
    """
    f_lv = np.sqrt(np.clip(1.0 - (t / an.apex_extent) ** 2, 0.0, None))
    f_rv = np.sqrt(np.clip(1.0 - (t / an.rv_extent) ** 2, 0.0, None))
    r_cav_ed = an.lv_r * f_lv
    r_epi_ed = r_cav_ed + an.wall * (1.0 - 0.2 * t)
    r_cav = r_cav_ed * np.sqrt(1.0 - an.ef * w)
    r_epi = np.sqrt(r_cav**2 + r_epi_ed**2 - r_cav_ed**2)  # myocardial area conserved
    rv_width = (an.lv_r + an.wall) * 0.95 * an.rv_scale * f_rv * (1.0 - an.rv_ef * w)
    rv_d = 0.5 * r_epi
    rv_b = rv_width + r_epi - rv_d
    rv_a = r_epi * (1.0 + 0.3 * an.rv_scale) * (0.6 + 0.4 * f_rv) * (1.0 - 0.15 * an.rv_ef * w)
    pm_window = ((t > 0.12) & (t < 0.85)).astype(float)
    pm_r = an.pm_frac * r_cav_ed * pm_window
    zero = 0.0 * w
    out = {
        "cx": an.heart_x + an.drift_x * t + zero,
        "cy": an.heart_y + an.drift_y * t + zero,
        "r_cav": r_cav,
        "r_epi": r_epi,
        "rv_on": (f_rv > 0.05) + zero,
        "rv_d": rv_d,
        "rv_a": rv_a,
        "rv_b": rv_b,
        "pm_r": pm_r + zero,
    }
    return {k: np.asarray(v, dtype=np.float32)[..., None, None] for k, v in out.items()}


def _heart_shapes(x: np.ndarray, y: np.ndarray, an: _Anatomy, hs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Boolean masks of the heart structures at the given sample points (trigonometry-free, float32).

    Args:
        x: (1, 1, 1, N) sample x coordinates.
        y: (1, 1, N, 1) sample y coordinates.
        an: anatomy.
        hs: output of :func:`_heart_state`, (P, S, 1, 1) each.

    Returns:
        name -> (P, S, N, N) bool: ``cavity`` (LV blood incl. papillary muscles), ``epi`` (LV epicardial disk),
        ``rv_outer``/``rv_inner`` (RV wall/cavity ellipses, outside the LV), ``papillary``, ``envelope`` (heart plus
        epicardial fat).
    """
    dx = x - hs["cx"]
    dy = y - hs["cy"]
    r = np.sqrt(dx * dx + dy * dy)
    inv = 1.0 / np.maximum(r, np.float32(1e-6))
    c, s = dx * inv, dy * inv  # cos, sin of the angle about the LV centre
    del inv
    # boundary modulation 1 + e2 cos 2(theta - phi2) + e3 cos 3(theta - phi3), via multiple-angle formulas
    e2c, e2s = an.ecc2 * float(np.cos(2 * an.ecc2_phase)), an.ecc2 * float(np.sin(2 * an.ecc2_phase))
    e3c, e3s = an.ecc3 * float(np.cos(3 * an.ecc3_phase)), an.ecc3 * float(np.sin(3 * an.ecc3_phase))
    cc, ss = c * c, s * s
    shape = 1.0 + e2c * (cc - ss) + 2.0 * e2s * (c * s) + e3c * c * (4.0 * cc - 3.0) + e3s * s * (3.0 - 4.0 * ss)
    del cc, ss
    r_rel = r / shape
    del r, shape
    cavity = r_rel < hs["r_cav"]
    epi = r_rel < hs["r_epi"]
    ux, uy = float(np.cos(an.rv_angle)), float(np.sin(an.rv_angle))
    along = dx * ux + dy * uy - hs["rv_d"]
    perp = dy * ux - dx * uy
    del dx, dy
    rv_on = hs["rv_on"] > 0.5
    rv_wall = 0.035
    along2, perp2 = along * along, perp * perp
    ell = along2 * hs["rv_b"] ** -2 + perp2 * hs["rv_a"] ** -2
    inner_b, inner_a = np.maximum(hs["rv_b"] - rv_wall, 1e-3), np.maximum(hs["rv_a"] - rv_wall, 1e-3)
    ell_in = along2 * inner_b**-2 + perp2 * inner_a**-2
    outside_lv = ~epi & rv_on
    rv_outer = (ell < 1.0) & outside_lv
    rv_inner = (ell_in < 1.0) & outside_lv & (hs["rv_b"] > rv_wall + 0.01)
    del ell, ell_in, along2, perp2
    papillary = np.zeros_like(cavity)
    for sign in (-1.0, 1.0):
        ang = an.rv_angle + np.pi + sign * an.pm_spread
        dist = hs["r_cav"] - 0.8 * hs["pm_r"]
        px = hs["cx"] + dist * float(np.cos(ang))
        py = hs["cy"] + dist * float(np.sin(ang))
        papillary |= (x - px) ** 2 + (y - py) ** 2 < hs["pm_r"] ** 2
    papillary &= cavity
    cos_fat = np.clip(c * float(np.cos(an.epi_fat_angle)) + s * float(np.sin(an.epi_fat_angle)), 0.0, None)
    fat_t = an.epi_fat * (0.15 + 0.85 * cos_fat * cos_fat)
    del c, s, cos_fat
    envelope = r_rel < hs["r_epi"] + fat_t
    envelope |= ((along / (hs["rv_b"] + fat_t)) ** 2 + (perp / (hs["rv_a"] + fat_t)) ** 2 < 1.0) & rv_on
    return {
        "cavity": cavity,
        "epi": epi,
        "rv_outer": rv_outer,
        "rv_inner": rv_inner,
        "papillary": papillary,
        "envelope": envelope,
    }


def _static_layers(x: np.ndarray, y: np.ndarray, an: _Anatomy, t: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Non-cardiac structures, in painting order (later layers cover earlier ones).

    Args:
        x: (1, 1, 1, N); y: (1, 1, N, 1); t: (1, S) slice positions.

    Returns:
        (tissue name, mask broadcastable to (1, S, N, N)) pairs.
    """
    layers: list[tuple[str, np.ndarray]] = []
    bx, by, ax, ay = an.body_cx, an.body_cy, an.body_ax, an.body_ay
    layers.append(("fat", _ellipse(x, y, bx, by, ax, ay)))
    inner = an.fat_sc
    layers.append(("muscle", _ellipse(x, y, bx, by, ax - inner, ay - inner)))
    inner += an.muscle
    tx, ty = ax - inner, ay - inner
    thorax = _ellipse(x, y, bx, by, tx, ty)
    layers.append(("lung", thorax))
    # liver: basal slices, a dome in one lower corner of the thorax (image left = patient's right)
    g = np.sqrt(np.clip(1.0 - (t / an.liver_extent) ** 2, 0.0, None))[..., None, None]
    ca, sa = float(np.cos(an.liver_angle)), float(np.sin(an.liver_angle))
    lx, ly = bx + (tx + 0.35) * ca, by + (ty + 0.35) * sa
    liver = ((x - lx) ** 2 + (y - ly) ** 2 < (0.35 + an.liver_size * g) ** 2) & thorax
    layers.append(("liver", liver))
    # posterior mediastinum between heart and spine (fat), with the oesophagus
    oes_x, oes_y, oes_r = an.spine_x - 0.03, an.vb_y - an.vb_r - 0.05, 0.035
    depth = max(an.vb_y - an.vb_r - an.heart_y, 0.05)
    layers.append(("fat", _ellipse(x, y, oes_x + 0.03, an.vb_y - an.vb_r, 0.085, 0.5 * depth) & thorax))
    layers.append(("muscle", _ellipse(x, y, oes_x, oes_y, oes_r, oes_r)))
    # paraspinal muscles
    for side in (-1.0, 1.0):
        layers.append(("muscle", _ellipse(x, y, an.spine_x + side * 0.13, an.canal_y + 0.02, 0.11, 0.085)))
    # ribs and sternum in the chest wall
    rax, ray = ax - an.fat_sc - 0.5 * an.muscle, ay - an.fat_sc - 0.5 * an.muscle
    rib_bone = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    rib_marrow = np.zeros_like(rib_bone)
    for a in an.rib_angles:
        px, py = bx + rax * float(np.cos(a)), by + ray * float(np.sin(a))
        d2 = (x - px) ** 2 + (y - py) ** 2
        rib_bone |= d2 < an.rib_r**2
        rib_marrow |= d2 < (0.5 * an.rib_r) ** 2
    sx, sy = bx + 0.3 * (an.heart_x - bx), by - ray
    rib_bone |= _ellipse(x, y, sx, sy, 0.07, 0.035)
    rib_marrow |= _ellipse(x, y, sx, sy, 0.05, 0.018)
    layers.append(("bone", rib_bone))
    layers.append(("marrow", rib_marrow))
    # spine: vertebral body (cortex around marrow), posterior arch with spinous process, canal
    layers.append(("bone", _ellipse(x, y, an.spine_x, an.vb_y, an.vb_r * 1.1, an.vb_r)))
    layers.append(("marrow", _ellipse(x, y, an.spine_x, an.vb_y, an.vb_r * 1.1 - 0.02, an.vb_r - 0.02)))
    arch = _ellipse(x, y, an.spine_x, an.canal_y, an.canal_r + 0.03, an.canal_r + 0.025)
    arch |= _ellipse(x, y, an.spine_x, an.canal_y + an.canal_r + 0.05, 0.025, 0.06)
    layers.append(("bone", arch))
    layers.append(("csf", _ellipse(x, y, an.spine_x, an.canal_y, an.canal_r, an.canal_r)))
    layers.append(("aorta", _ellipse(x, y, an.aorta_x, an.aorta_y, an.aorta_r, an.aorta_r)))
    return layers


def _plausible(an: _Anatomy) -> bool:
    """The heart (with epicardial fat) stays inside the chest and clear of spine, aorta and oesophagus."""
    x, y = _grid(_CHECK_GRID, 1)
    t = np.array([[0.0, 0.5, 1.0]])
    hs = _heart_state(an, t, np.zeros((1, 1)))
    env = _heart_shapes(x, y, an, hs)["envelope"]
    margin = 0.04
    spine = _ellipse(x, y, an.spine_x, an.vb_y, an.vb_r * 1.1 + margin, an.vb_r + margin)
    spine |= _ellipse(x, y, an.aorta_x, an.aorta_y, an.aorta_r + margin, an.aorta_r + margin)
    spine |= _ellipse(x, y, an.spine_x - 0.03, an.vb_y - an.vb_r - 0.05, 0.035 + margin, 0.035 + margin)
    spine |= y > an.vb_y
    inner = an.fat_sc + 0.5 * an.muscle
    body = _ellipse(x, y, an.body_cx, an.body_cy, an.body_ax - inner, an.body_ay - inner)
    inside_image = abs(an.body_cy) + an.body_ay < 0.98 and abs(an.body_cx) + an.body_ax < 0.98
    return bool(inside_image and not np.any(env & spine) and not np.any(env & ~body))


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    """Rejection-sample a plausible anatomy (independent of image size and slice/phase counts)."""
    for _ in range(500):
        an = _draw_anatomy(rng)
        if _plausible(an):
            return an
    raise RuntimeError("could not sample a plausible phantom anatomy")  # pragma: no cover


# ----------------------------------------------------------------------------------------------------------------------
# Tissue maps


def _rng_factory(seed: int, index: int) -> RngFactory:
    def rng_for(stream: str) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([seed, index, zlib.crc32(stream.encode())]))

    return rng_for


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], sigma: float) -> np.ndarray:
    """(S, N, N) Gaussian-smoothed white noise, normalised to zero mean and unit variance per slice."""
    field_ = np.asarray(ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(0.0, sigma, sigma), mode="wrap"))
    field_ -= field_.mean(axis=(1, 2), keepdims=True)
    field_ /= field_.std(axis=(1, 2), keepdims=True) + 1e-12
    return field_


def _fractions(ids: np.ndarray, f: int) -> np.ndarray:
    """Tissue fractions from supersampled tissue ids.

    Args:
        ids: (A, B, h*f, w*f) int8 tissue indices.
        f: supersampling factor.

    Returns:
        (T, A, B, h, w) float32, the share of the f*f sub-samples of each pixel per tissue.
    """
    subs = [ids[:, :, i::f, j::f] for i in range(f) for j in range(f)]
    out = np.zeros((len(TISSUES), *subs[0].shape), dtype=np.float32)
    present = np.flatnonzero(np.bincount(ids.ravel().astype(np.intp), minlength=len(TISSUES)))
    for k in present:
        count = (subs[0] == k).astype(np.uint8)
        for sub in subs[1:]:
            count += sub == k
        np.multiply(count, np.float32(1.0 / (f * f)), out=out[k])
    return out


def _heart_box(hs: dict[str, np.ndarray], n: int) -> tuple[int, int, int, int]:
    """Pixel box ``[r0, r1) x [c0, c1)`` of an ``n x n`` image containing the heart in every phase and slice."""
    reach = np.maximum(hs["r_epi"], hs["rv_d"] + np.maximum(hs["rv_a"], hs["rv_b"])) + _MAX_EPI_FAT + 0.02
    to_px = n / 2

    def span(centre: np.ndarray) -> tuple[int, int]:
        lo = int(np.floor(float(((centre - reach) * to_px + to_px).min())))
        hi = int(np.ceil(float(((centre + reach) * to_px + to_px).max())))
        return max(lo, 0), min(hi, n)

    r0, r1 = span(hs["cy"])
    c0, c1 = span(hs["cx"])
    return r0, r1, c0, c1


def render_tissue_maps(config: PhantomConfig, index: int) -> TissueMaps:
    """Modality-independent tissue fractions and labels of subject ``index``.

    Args:
        config: phantom configuration (``n_subjects`` and ``modalities`` are not used).
        index: subject index (>= 0).

    Returns:
        The subject's :class:`TissueMaps`; fractions (T, P, S, H, W) with H = W = ``config.image_size``.
    """
    if index < 0:
        raise ValueError(f"subject index must be >= 0, got {index}")
    rng_for = _rng_factory(config.seed, index)
    an = _sample_anatomy(rng_for("anatomy"))
    n, f = config.image_size, _SUPERSAMPLE
    n_p, n_s = config.n_phases, config.n_slices
    t = np.linspace(0.0, 1.0, n_s).reshape(1, n_s)
    w = (0.5 - 0.5 * np.cos(np.pi * np.arange(n_p) / (n_p - 1))).reshape(n_p, 1)
    hs = _heart_state(an, t, w)

    # tissue ids on the supersampled grid, painted back to front: static anatomy per slice ...
    xs, ys = _grid(n, f)
    static = np.zeros((1, n_s, n * f, n * f), dtype=np.int8)
    for name, m in _static_layers(xs, ys, an, t):
        static[np.broadcast_to(m, static.shape)] = _T[name]
    vessels = _smooth_noise(rng_for("vessels"), (n_s, n * f, n * f), sigma=0.012 * n * f) > 2.0
    static[(static == _T["lung"]) & vessels[None]] = _T["vessel"]
    fractions = np.repeat(_fractions(static, f), n_p, axis=1)
    # ... then the (moving) heart, only inside the pixel box that contains it in every phase and slice
    r0, r1, c0, c1 = _heart_box(hs, n)
    ids = np.repeat(static[:, :, r0 * f : r1 * f, c0 * f : c1 * f], n_p, axis=0)
    sh = _heart_shapes(xs[..., c0 * f : c1 * f], ys[..., r0 * f : r1 * f, :], an, hs)
    for name in ("envelope", "rv_outer", "rv_inner", "epi", "cavity", "papillary"):
        ids[sh[name]] = _T[_HEART_TISSUE[name]]
    fractions[:, :, :, r0:r1, c0:c1] = _fractions(ids, f)
    del sh, static, ids

    # labels and LV angle at pixel centres
    x1, y1 = _grid(n, 1)
    s1 = _heart_shapes(x1[..., c0:c1], y1[..., r0:r1, :], an, hs)
    labels = np.zeros((n_p, n_s, n, n), dtype=np.uint8)
    box = labels[:, :, r0:r1, c0:c1]
    box[s1["rv_inner"]] = 1
    box[s1["epi"]] = 2
    box[s1["cavity"]] = 3
    lv_angle = np.arctan2(y1 - hs["cy"], x1 - hs["cx"]).astype(np.float32)
    texture = _smooth_noise(rng_for("texture"), (n_s, n, n), sigma=0.012 * n).astype(np.float32)

    half_fov = 0.5 * n * config.pixel_spacing_mm
    voxel_ml = config.pixel_spacing_mm**2 * config.slice_thickness_mm / 1000.0
    lv_ml = (labels == 3).sum(axis=(1, 2, 3)) * voxel_ml
    anatomy = {
        "body_semi_x_mm": an.body_ax * half_fov,
        "body_semi_y_mm": an.body_ay * half_fov,
        "body_ellipticity": an.body_ay / an.body_ax,
        "body_center_x_mm": an.body_cx * half_fov,
        "body_center_y_mm": an.body_cy * half_fov,
        "subcutaneous_fat_mm": an.fat_sc * half_fov,
        "heart_offset_x_mm": an.heart_x * half_fov,
        "heart_offset_y_mm": an.heart_y * half_fov,
        "heart_rotation_deg": float(np.rad2deg(an.rv_angle)) - 200.0,
        "lv_radius_mm": an.lv_r * half_fov,
        "wall_thickness_mm": an.wall * half_fov,
        "ejection_fraction": an.ef,
        "rv_scale": an.rv_scale,
        "rv_ejection_fraction": an.rv_ef,
        "epicardial_fat_mm": an.epi_fat * half_fov,
        "apex_extent": an.apex_extent,
        "rv_extent": an.rv_extent,
        "liver_extent": an.liver_extent,
        "lv_edv_ml": float(lv_ml[0]),
        "lv_esv_ml": float(lv_ml[-1]),
        "lv_ef_labels": float(1.0 - lv_ml[-1] / lv_ml[0]) if lv_ml[0] > 0 else 0.0,
    }
    return TissueMaps(
        fractions=fractions,
        labels=labels,
        lv_angle=lv_angle,
        texture=texture,
        anatomy={k: float(v) for k, v in anatomy.items()},
    )


# ----------------------------------------------------------------------------------------------------------------------
# Modality renderers


def _compose(
    maps: TissueMaps, values: Mapping[str, float | np.ndarray], texture_amp: Mapping[str, float], multiplicative: bool
) -> np.ndarray:
    """Sum of tissue fractions times tissue intensities, with micro-texture.

    Args:
        maps: tissue maps.
        values: tissue -> intensity (scalar or (P, S, H, W)).
        texture_amp: tissue -> texture amplitude (relative if ``multiplicative`` else absolute).
        multiplicative: texture scales the intensity (MR) or is added to it (CT).

    Returns:
        (P, S, H, W) float64 noise-free image.
    """
    image = np.zeros(maps.fractions.shape[1:], dtype=np.float64)
    tex = maps.texture[None]
    for k, name in enumerate(TISSUES):
        frac = maps.fractions[k]
        if not frac.any():
            continue
        value: float | np.ndarray = values[name]
        amp = texture_amp.get(name, 0.0)
        if amp:
            value = value * (1.0 + amp * tex) if multiplicative else value + amp * tex
        image += frac * value
    return image


_MR_MEANS: Mapping[str, float] = MappingProxyType(
    {
        "air": 0.0,
        "fat": 780.0,
        "muscle": 230.0,
        "lung": 35.0,
        "liver": 320.0,
        "bone": 25.0,
        "marrow": 520.0,
        "csf": 650.0,
        "vessel": 600.0,
        "aorta": 780.0,
        "lv_blood": 860.0,
        "rv_blood": 820.0,
        "myocardium": 210.0,
    }
)
_MR_TEXTURE: Mapping[str, float] = MappingProxyType(
    {
        "fat": 0.04,
        "muscle": 0.06,
        "lung": 0.3,
        "liver": 0.06,
        "marrow": 0.08,
        "myocardium": 0.05,
        "rv_wall": 0.05,
        "papillary": 0.05,
        "lv_blood": 0.03,
        "rv_blood": 0.03,
    }
)


def _mr_parameters(maps: TissueMaps, rng: np.random.Generator) -> tuple[dict[str, float], np.ndarray, float]:
    """Per-subject MR intensities, bias field and noise level.

    Returns:
        (parameters incl. ``intensity_<tissue>``, (S, H, W) multiplicative bias field, Rician noise sigma).
    """
    gain = _u(rng, 0.8, 1.2)
    values = {name: mean * gain * _u(rng, 0.85, 1.15) for name, mean in _MR_MEANS.items()}
    values["rv_wall"] = values["papillary"] = values["myocardium"]
    n_s, h = maps.labels.shape[1], maps.labels.shape[2]
    x, y = _grid(h, 1)
    x, y = x[0], y[0]
    z = np.linspace(-1.0, 1.0, n_s).reshape(n_s, 1, 1)
    coef = rng.normal(size=6) * np.array([1.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    poly = coef[0] * x + coef[1] * y + coef[2] * z + coef[3] * x**2 + coef[4] * x * y + coef[5] * y**2
    poly = poly / (np.abs(poly).max() + 1e-12)
    amplitude = _u(rng, 0.1, 0.4)
    bias = np.exp(amplitude * poly)
    sigma = _u(rng, 0.01, 0.035) * values["lv_blood"]
    params = {f"intensity_{k}": float(v) for k, v in values.items()}
    params.update(
        {
            "gain": gain,
            "bias_amplitude": amplitude,
            "bias_direction_deg": float(np.rad2deg(np.arctan2(coef[1], coef[0]))),
            "noise_sigma": sigma,
        }
    )
    return params, bias, sigma


def _mr_image(
    maps: TissueMaps, rng: np.random.Generator, myo_factor: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    params, bias, sigma = _mr_parameters(maps, rng)
    values: dict[str, float | np.ndarray] = {
        k[len("intensity_") :]: v for k, v in params.items() if k.startswith("intensity_")
    }
    if myo_factor is not None:
        values["myocardium"] = values["myocardium"] * myo_factor
    clean = _compose(maps, values, _MR_TEXTURE, multiplicative=True) * bias[None]
    noise = rng.standard_normal(size=(2, *clean.shape), dtype=np.float32) * np.float32(sigma)
    image = np.hypot(clean + noise[0], noise[1])
    return image.astype(np.float32), params


def _render_mr(maps: TissueMaps, rng_for: RngFactory) -> tuple[np.ndarray, dict[str, float]]:
    """Cine-MR (bSSFP)-like rendering: bright blood and fat, dark myocardium and lungs; bias field; Rician noise."""
    return _mr_image(maps, rng_for("MR"))


def _render_bold(maps: TissueMaps, rng_for: RngFactory) -> tuple[np.ndarray, dict[str, float]]:
    """``MR`` (same parameters and noise) with the LV myocardium darkened by a few % in one angular sector."""
    rng = rng_for("BOLD")
    factor = _u(rng, -0.15, -0.05)
    centre = _u(rng, -np.pi, np.pi)
    half_width = float(np.deg2rad(_u(rng, 40.0, 80.0)))
    delta = np.angle(np.exp(1j * (maps.lv_angle.astype(np.float64) - centre)))
    weight = np.where(np.abs(delta) < half_width, 0.5 + 0.5 * np.cos(np.pi * delta / half_width), 0.0)
    image, params = _mr_image(maps, rng_for("MR"), myo_factor=1.0 + factor * weight)
    params.update(
        {
            "bold_factor": factor,
            "bold_sector_center_deg": float(np.rad2deg(centre)),
            "bold_sector_half_width_deg": float(np.rad2deg(half_width)),
        }
    )
    return image, params


def _render_ct(maps: TissueMaps, rng_for: RngFactory) -> tuple[np.ndarray, dict[str, float]]:
    """Contrast-enhanced CT-like rendering in HU: bright blood and bone, negative fat, additive Gaussian noise."""
    rng = rng_for("CT")
    contrast = _u(rng, 250.0, 400.0)
    values = {
        "air": -1000.0,
        "fat": _u(rng, -120.0, -80.0),
        "muscle": _u(rng, 40.0, 60.0),
        "lung": _u(rng, -860.0, -780.0),
        "liver": _u(rng, 50.0, 80.0),
        "bone": _u(rng, 700.0, 1000.0),
        "marrow": _u(rng, 200.0, 350.0),
        "csf": _u(rng, 0.0, 15.0),
        "lv_blood": contrast,
        "rv_blood": contrast * _u(rng, 0.75, 1.05),
        "aorta": contrast * _u(rng, 0.95, 1.05),
        "myocardium": _u(rng, 85.0, 125.0),
    }
    values["vessel"] = 0.8 * values["rv_blood"]
    values["rv_wall"] = values["papillary"] = values["myocardium"]
    texture = {
        "fat": 8.0,
        "muscle": 6.0,
        "lung": 40.0,
        "liver": 6.0,
        "marrow": 40.0,
        "myocardium": 5.0,
        "rv_wall": 5.0,
        "papillary": 5.0,
        "lv_blood": 6.0,
        "rv_blood": 6.0,
        "bone": 60.0,
    }
    sigma = _u(rng, 8.0, 25.0)
    clean = _compose(maps, values, texture, multiplicative=False)
    image = clean + rng.standard_normal(size=clean.shape, dtype=np.float32) * np.float32(sigma)
    params = {f"intensity_{k}": float(v) for k, v in values.items()}
    params.update({"contrast_hu": contrast, "noise_sigma": sigma})
    return image.astype(np.float32), params


MODALITY_RENDERERS: Mapping[str, Renderer] = MappingProxyType(
    {
        "MR": _render_mr,
        "CT": _render_ct,
        "BOLD": _render_bold,
    }
)
"""Modality name -> renderer. A new modality is one function ``(TissueMaps, rng_for) -> (image, params)`` added here;
it must draw its randomness from ``rng_for(<its own stream name>)`` so that every modality is deterministic on its
own, whichever other modalities are rendered."""


# ----------------------------------------------------------------------------------------------------------------------
# Subjects and files


def render_subject(config: PhantomConfig, index: int) -> PhantomSubject:
    """Render subject ``index`` in every modality of ``config``.

    Args:
        config: phantom configuration.
        index: subject index; the result depends on ``(config.seed, index)`` and the rendering settings only.

    Returns:
        The subject: labels (P, S, H, W) uint8, images modality -> (P, S, H, W) float32, true parameters.
    """
    maps = render_tissue_maps(config, index)
    rng_for = _rng_factory(config.seed, index)
    images: dict[str, np.ndarray] = {}
    modality_params: dict[str, dict[str, float]] = {}
    for name in config.modalities:
        images[name], modality_params[name] = MODALITY_RENDERERS[name](maps, rng_for)
    voxel_ml = config.pixel_spacing_mm**2 * config.slice_thickness_mm / 1000.0
    lv_volume = [float(v) * voxel_ml for v in (maps.labels == 3).sum(axis=(1, 2, 3))]
    return PhantomSubject(
        subject_id=f"phantom_{index:03d}",
        labels=maps.labels,
        images=images,
        anatomy=maps.anatomy,
        modality_params=modality_params,
        lv_volume_ml=lv_volume,
        ed_phase=0,
        es_phase=config.n_phases - 1,
    )


def generate_phantom(config: PhantomConfig) -> Iterator[PhantomSubject]:
    """Render subjects ``0 .. n_subjects-1`` one at a time.

    Args:
        config: phantom configuration.

    Yields:
        :class:`PhantomSubject` in index order.
    """
    for index in range(config.n_subjects):
        yield render_subject(config, index)


def _save_volume(path: Path, volume: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """Write a (S, H, W) stack as a NIfTI volume of shape (H, W, S)."""
    save_nifti(path, np.ascontiguousarray(np.moveaxis(volume, 0, 2)), np.diag([*spacing, 1.0]))


def _write_subject(out: Path, config: PhantomConfig, index: int) -> dict[str, object]:
    """Render subject ``index``, write its NIfTI files under ``out`` and return its ``phantom.json`` entry."""
    subject = render_subject(config, index)
    spacing = (float(config.pixel_spacing_mm), float(config.pixel_spacing_mm), float(config.slice_thickness_mm))
    sid = subject.subject_id
    (out / sid).mkdir(exist_ok=True)
    files: dict[str, list[str]] = {"label": []}
    for p in range(config.n_phases):
        rel = f"{sid}/{sid}_label_phase{p:02d}.nii.gz"
        _save_volume(out / rel, subject.labels[p], spacing)
        files["label"].append(rel)
    for name in config.modalities:
        files[name] = []
        for p in range(config.n_phases):
            rel = f"{sid}/{sid}_{name}_phase{p:02d}.nii.gz"
            _save_volume(out / rel, subject.images[name][p], spacing)
            files[name].append(rel)
    return {
        "id": sid,
        "n_phases": config.n_phases,
        "n_slices": config.n_slices,
        "ed_phase": subject.ed_phase,
        "es_phase": subject.es_phase,
        "anatomy": subject.anatomy,
        "modality_params": subject.modality_params,
        "lv_volume_ml": subject.lv_volume_ml,
        "files": files,
    }


def _config_dict(config: PhantomConfig) -> dict[str, object]:
    config_dict = dataclasses.asdict(config)
    config_dict["modalities"] = list(config.modalities)
    return config_dict


def _read_meta(out: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((out / "phantom.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == "sdnet-phantom" else None


def phantom_matches(out_dir: str | Path, config: PhantomConfig) -> bool:
    """Whether ``out_dir`` already holds the phantom ``config`` describes, with every file it lists."""
    out = Path(out_dir)
    meta = _read_meta(out)
    if meta is None or meta.get("config") != json.loads(json.dumps(_config_dict(config))):
        return False
    return all((out / rel).is_file() for subject in meta.get("subjects", [])
               for rels in subject.get("files", {}).values() for rel in rels)


def write_phantom(
    out_dir: str | Path,
    config: PhantomConfig = PhantomConfig(),
    *,
    progress: bool = False,
    force: bool = False,
) -> Path:
    """Generate the phantom and write it as NIfTI files plus ``phantom.json`` (written last, atomically).

    Layout: ``OUT/<id>/<id>_<MODALITY>_phase<PP>.nii.gz`` (float32) and ``OUT/<id>/<id>_label_phase<PP>.nii.gz``
    (uint8), data shape (H, W, S) with ``vol[:, :, k]`` = slice k (base to apex), affine
    ``diag(dx, dy, dz, 1)``. Subjects are rendered and written by a few threads (numpy and zlib release the GIL);
    the output does not depend on the number of threads.

    A folder that already holds this very phantom (same config, every file there) is left as it is. Any other
    non-empty folder is refused unless ``force``: then the subject folders of an earlier phantom there are removed
    first (no stale subjects stay behind); other files are not touched.

    Args:
        out_dir: output folder (created if needed).
        config: phantom configuration.
        progress: show a tqdm progress bar.
        force: replace an earlier phantom (or write into a non-empty folder).

    Returns:
        Path of ``phantom.json``.

    Raises:
        DataError: ``out_dir`` is not empty and does not hold this phantom, and ``force`` is not set.
    """
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()):
        if phantom_matches(out, config):
            return out / "phantom.json"
        old = _read_meta(out)
        if not force:
            what = "a phantom written with other settings" if old else "other files"
            raise DataError(f"{out} already holds {what}; use --force to replace it, or another --out")
        for subject in (old or {}).get("subjects", []):
            sid = str(subject.get("id", ""))
            if sid and (out / sid).is_dir() and (out / sid).resolve().parent == out.resolve():
                shutil.rmtree(out / sid)
        (out / "phantom.json").unlink(missing_ok=True)
    check_writable(out, what="phantom folder")
    workers = max(1, min(4, os.cpu_count() or 1, config.n_subjects))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results: Iterator[dict[str, object]] = pool.map(
            lambda index: _write_subject(out, config, index), range(config.n_subjects)
        )
        if progress:
            from tqdm import tqdm

            results = iter(tqdm(results, total=config.n_subjects, desc="phantom", unit="subject"))
        entries = list(results)
    config_dict = _config_dict(config)
    meta = {
        "format": "sdnet-phantom",
        "version": 1,
        "config": config_dict,
        "labels": {str(k): v for k, v in LABELS.items()},
        "modalities": list(config.modalities),
        "spacing_mm": [float(config.pixel_spacing_mm)] * 2 + [float(config.slice_thickness_mm)],
        "subjects": entries,
    }
    return write_text(out / "phantom.json", json.dumps(meta, indent=1))
