"""Anatomy sampling: per-subject geometry (:class:`_Anatomy`), drawn at random and rejection-sampled for
plausibility, and the vectorised masks of the heart and the static (non-cardiac) structures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MAX_EPI_FAT = 0.06
_CHECK_GRID = 64  # resolution of the (config-independent) anatomical plausibility check


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
