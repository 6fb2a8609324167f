"""Subjects and files: render whole subjects in every configured modality and write the phantom as NIfTI files
plus ``phantom.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from sdnet.data.nifti import save_nifti
from sdnet.data.phantom.config import PhantomConfig
from sdnet.data.phantom.datatypes import LABELS, PHANTOM_VERSION, PhantomSubject, phantom_affine
from sdnet.data.phantom.render import MODALITY_RENDERERS
from sdnet.data.phantom.tissues import _rng_factory, render_tissue_maps
from sdnet.errors import DataError
from sdnet.outputs import check_writable, write_text


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
    """Write a (S, H, W) stack as a NIfTI volume of shape (H, W, S) with its anatomical affine."""
    save_nifti(path, np.ascontiguousarray(np.moveaxis(volume, 0, 2)), phantom_affine(spacing))


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
    if meta.get("version") != PHANTOM_VERSION:
        return False
    return all((out / rel).is_file() for subject in meta.get("subjects", [])
               for rels in subject.get("files", {}).values() for rel in rels)


def write_phantom(
    out_dir: str | Path,
    config: PhantomConfig = PhantomConfig(),  # noqa: B008 (a frozen dataclass, immutable)
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
            what = ("a phantom written with other settings" if old and old.get("version") == PHANTOM_VERSION
                    else f"a phantom of version {old.get('version')} (this sdnet writes {PHANTOM_VERSION})" if old
                    else "other files")
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
        "version": PHANTOM_VERSION,
        "config": config_dict,
        "labels": {str(k): v for k, v in LABELS.items()},
        "modalities": list(config.modalities),
        "spacing_mm": [float(config.pixel_spacing_mm)] * 2 + [float(config.slice_thickness_mm)],
        "subjects": entries,
    }
    return write_text(out / "phantom.json", json.dumps(meta, indent=1))
