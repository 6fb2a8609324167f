"""Tissue maps: the modality-independent tissue fractions, labels, LV angle and texture of one subject, and the
per-subject deterministic random streams.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
from scipy import ndimage

from sdnet.data.phantom.anatomy import _MAX_EPI_FAT, _grid, _heart_shapes, _heart_state, _sample_anatomy, _static_layers
from sdnet.data.phantom.config import PhantomConfig
from sdnet.data.phantom.datatypes import _T, TISSUES, RngFactory, TissueMaps

_SUPERSAMPLE = 2
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
