"""Modality renderers: :data:`MODALITY_RENDERERS` turns :class:`TissueMaps` into ``MR``, ``CT`` and ``BOLD``
images with their true, per-subject rendering parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from sdnet.data.phantom.anatomy import _grid, _u
from sdnet.data.phantom.datatypes import TISSUES, Renderer, RngFactory, TissueMaps


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
