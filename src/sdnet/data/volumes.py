"""One volume abstraction for every dataset reader, and the phantom reader.

A :class:`Volume` is one 3D frame of one subject: its slices, its optional label map, its voxel spacing, subject id,
cardiac phase and modality. Readers return lists of volumes; everything downstream (splits, preprocessing,
sampling, evaluation) works on these and never on a reader's file layout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdnet.data.nifti import check_same_grid, load_nifti
from sdnet.data.phantom.datatypes import phantom_affine
from sdnet.errors import DataError


@dataclass(frozen=True)
class Volume:
    """One 3D frame.

    Attributes:
        subject_id: patient / phantom subject identifier (splits are made over these).
        phase: cardiac phase (frame) index.
        image: (S, H, W) float32 raw intensities (slice-first).
        label: (S, H, W) int64 label map in the dataset's label values, or None for an unlabelled frame.
        spacing: (dy, dx, dz) voxel size in mm of (row, column, slice), or None when unknown.
        affine: (4, 4) voxel-to-world affine of the source file (for writing predictions back).
        modality: ``MR``, ``CT``, ...
        source: the image file it was read from.
        label_source: the label file it was read from ("" when unlabelled).
    """

    subject_id: str
    phase: int
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float] | None
    affine: np.ndarray
    modality: str
    source: str
    label_source: str = ""

    @property
    def n_slices(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset contains. ``labels`` maps label value -> name, background (0) included."""

    name: str
    labels: dict[int, str]
    modalities: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        """Classes after remapping the label values to 0..L (background included): MM-WHS's 0, 205, ..., 850 are
        8 classes."""
        return len(self.labels)


def check_volume(volume: Volume, info: DatasetInfo) -> None:
    """Validate one volume against the dataset description; raise :class:`DataError` naming the file."""
    src = volume.source
    if volume.image.ndim != 3 or min(volume.image.shape) < 1:
        raise DataError(f"{src}: expected a non-empty 3D image, got shape {tuple(volume.image.shape)}")
    if not np.all(np.isfinite(volume.image)):
        raise DataError(f"{src}: image contains non-finite (NaN/Inf) voxels")
    if volume.label is not None:
        lsrc = volume.label_source or src
        if volume.label.shape != volume.image.shape:
            raise DataError(
                f"{lsrc}: label shape {tuple(volume.label.shape)} differs from image {src} shape "
                f"{tuple(volume.image.shape)}"
            )
        present = np.unique(volume.label)
        unknown = sorted(int(v) for v in present if int(v) not in info.labels)
        if unknown:
            raise DataError(f"{lsrc}: label values {unknown} are not in the dataset's labels {sorted(info.labels)}")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def read_phantom(
    root: str | Path, *, modality: str | Sequence[str] = "MR", labelled_phases: str = "ed_es", reorient: bool = True
) -> tuple[DatasetInfo, list[Volume]]:
    """Read a phantom folder written by :func:`sdnet.data.phantom.write_phantom`.

    Args:
        root: folder containing ``phantom.json``.
        modality: which rendering(s) to read (``MR``, ``CT``, ... or several, e.g. ``("MR", "CT")``: every
            subject's volumes in each modality, sharing the subject id).
        labelled_phases: ``ed_es`` keeps masks only for the ED and ES frames (as in ACDC; the other frames are
            returned unlabelled), ``all`` keeps every frame's mask.
        reorient: bring the volumes to the orientation convention (False: the files' voxel order, ``legacy``).

    Returns:
        (dataset info naming the modalities read, volumes sorted by subject, modality (in the order asked) and
        phase).

    Raises:
        DataError: missing folder or files, a corrupt file, mismatching shapes, unknown labels.
    """
    base = Path(root)
    if not base.exists():
        raise DataError(f"{base}: dataset folder not found")
    if not base.is_dir():
        raise DataError(f"{base}: not a folder")
    meta_path = base / "phantom.json"
    if not meta_path.is_file():
        if not any(base.iterdir()):
            raise DataError(f"{base}: dataset folder is empty (no phantom.json); create one with `sdnet phantom`")
        raise DataError(f"{meta_path}: file not found; is {base} a phantom written by `sdnet phantom`?")
    meta = _read_json(meta_path)
    try:
        labels = {int(k): str(v) for k, v in meta["labels"].items()}
        modalities = tuple(str(m) for m in meta["modalities"])
        subjects = list(meta["subjects"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{meta_path}: missing or malformed entry ({exc})") from None
    wanted = (modality,) if isinstance(modality, str) else tuple(modality)
    unknown = [m for m in wanted if m not in modalities]
    if unknown or not wanted:
        raise DataError(f"{meta_path}: modality {unknown or list(wanted)} not in the phantom's modalities "
                        f"{list(modalities)}")
    if not subjects:
        raise DataError(f"{meta_path}: the dataset lists no subjects")
    info = DatasetInfo(name=str(meta.get("format", "sdnet-phantom")), labels=labels, modalities=wanted)
    volumes: list[Volume] = []
    # version-1 phantoms hold the same arrays under an identity-like affine that mirrored their world: read them
    # with the anatomical one (sdnet.data.phantom.datatypes.phantom_affine)
    true_affine = None
    if int(meta.get("version", 1)) < 2:
        spacing = meta.get("spacing_mm", [1.0, 1.0, 1.0])
        true_affine = phantom_affine((float(spacing[0]), float(spacing[1]), float(spacing[2])))
    for entry in subjects:
        for name in wanted:
            volumes.extend(_phantom_subject_volumes(base, meta_path, entry, name, labelled_phases, info, reorient,
                                                    true_affine))
    return info, volumes


def _phantom_subject_volumes(
    base: Path, meta_path: Path, entry: Any, modality: str, labelled_phases: str, info: DatasetInfo,
    reorient: bool = True, true_affine: np.ndarray | None = None,
) -> list[Volume]:
    """The volumes (one per phase) of one phantom subject in one modality (``true_affine`` replaces the files'
    affine of a version-1 phantom)."""
    try:
        sid = str(entry["id"])
        image_files = list(entry["files"][modality])
        label_files = list(entry["files"]["label"])
        keep = {int(entry["ed_phase"]), int(entry["es_phase"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{meta_path}: malformed subject entry ({exc})") from None
    if len(image_files) != len(label_files):
        raise DataError(f"{meta_path}: subject {sid} lists {len(image_files)} images but {len(label_files)} labels")
    volumes = []
    for phase, (image_rel, label_rel) in enumerate(zip(image_files, label_files, strict=True)):
        img = load_nifti(base / image_rel, reorient=reorient, affine=true_affine)
        labelled = labelled_phases == "all" or phase in keep
        label: np.ndarray | None = None
        if labelled:
            lab = load_nifti(base / label_rel, as_labels=True, reorient=reorient, affine=true_affine)
            check_same_grid(img, lab)
            label = np.ascontiguousarray(np.moveaxis(lab.data, 2, 0))
        volume = Volume(
            subject_id=sid,
            phase=phase,
            image=np.ascontiguousarray(np.moveaxis(img.data, 2, 0)),
            label=label,
            spacing=img.spacing,
            affine=img.affine,
            modality=modality,
            source=str(img.path),
            label_source=str(base / label_rel) if labelled else "",
        )
        check_volume(volume, info)
        volumes.append(volume)
    return volumes
