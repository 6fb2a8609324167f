"""Reader for the ACDC challenge release: ``patientXXX/`` folders with Info.cfg, ED/ES frames, ``_gt`` labels and
the 4D cine."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sdnet.data.nifti import check_finite, check_same_grid, decode_nifti
from sdnet.data.orientation import to_canonical
from sdnet.data.readers.common import _check_root, _find_nifti, _finish, _load_3d, _slice_first
from sdnet.data.volumes import DatasetInfo, Volume
from sdnet.errors import DataError

#: ACDC label values (also those of the SSL4MIS release, which keeps ACDC's labels).
ACDC_LABELS: dict[int, str] = {0: "background", 1: "RV", 2: "MYO", 3: "LV"}

_PATIENT_DIR = re.compile(r"patient\d+")


def _parse_info_cfg(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"{path}: file not found (every ACDC patient folder needs an Info.cfg with ED and ES)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not readable ({exc})") from None
    entries: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            entries[key.strip()] = value.strip()
    return entries


def _acdc_frame_index(cfg: dict[str, str], key: str, path: Path) -> int:
    if key not in cfg:
        raise DataError(f"{path}: no {key!r} entry (expected a line like '{key}: 1')")
    try:
        value = int(float(cfg[key]))
    except ValueError:
        raise DataError(f"{path}: {key} entry {cfg[key]!r} is not a frame number") from None
    if value < 1:
        raise DataError(f"{path}: {key} entry {value} is not a 1-based frame number")
    return value


def _acdc_patient_dirs(base: Path) -> list[Path]:
    parents = [base] + [base / sub for sub in ("training", "testing") if (base / sub).is_dir()]
    found: dict[str, Path] = {}
    for parent in parents:
        for child in sorted(parent.iterdir()):
            if child.is_dir() and _PATIENT_DIR.fullmatch(child.name):
                if child.name in found:
                    raise DataError(f"{child}: patient {child.name} also found in {found[child.name]}")
                found[child.name] = child
    if not found:
        raise DataError(f"{base}: no patientXXX folders found (directly or under training/ or testing/)")
    return [found[name] for name in sorted(found)]


def _read_acdc_cine(
    path: Path, frame_shape: tuple[int, ...], *, reorient: bool = True
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read a (X, Y, Z, T) cine file; return (float32 data (H, W, S, T) in the orientation convention unless
    ``reorient`` is False, its affine, the (dy, dx, dz) spacing of its axes)."""
    data, affine, zooms = decode_nifti(path, dtype=np.float32)
    if data.ndim != 4:
        raise DataError(f"{path}: expected a 4D cine (H, W, S, T), got shape {tuple(data.shape)}")
    check_finite(data, path)
    ornt = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)
    if reorient:
        data, affine, ornt = to_canonical(data, affine)
    spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(ornt):
        spacing[int(target)] = float(zooms[axis])
    if data.shape[:3] != frame_shape:
        raise DataError(
            f"{path}: cine frame shape {tuple(data.shape[:3])} differs from the ED/ES frames' {frame_shape}"
        )
    return data, affine, (spacing[0], spacing[1], spacing[2])


def _read_acdc_patient(
    folder: Path, include_unlabelled: bool, unlabelled_frames: int = 0, *, reorient: bool = True
) -> list[Volume]:
    sid = folder.name
    cfg_path = folder / "Info.cfg"
    cfg = _parse_info_cfg(cfg_path)
    frames = sorted({_acdc_frame_index(cfg, "ED", cfg_path), _acdc_frame_index(cfg, "ES", cfg_path)})
    volumes: list[Volume] = []
    frame_shape: tuple[int, ...] | None = None
    for frame in frames:
        stem = f"{sid}_frame{frame:02d}"
        image_path = _find_nifti(folder, stem)
        if image_path is None:
            raise DataError(f"{folder / (stem + '.nii.gz')}: file not found (frame {frame} is listed in {cfg_path})")
        label_path = _find_nifti(folder, f"{stem}_gt")
        if label_path is None:
            raise DataError(f"{folder / (stem + '_gt.nii.gz')}: file not found (missing label for a listed case)")
        img = _load_3d(image_path, reorient=reorient)
        lab = _load_3d(label_path, as_labels=True, reorient=reorient)
        check_same_grid(img, lab)
        frame_shape = frame_shape or img.data.shape
        volumes.append(
            Volume(
                subject_id=sid,
                phase=frame - 1,
                image=_slice_first(img.data),
                label=_slice_first(lab.data),
                spacing=img.spacing,
                affine=img.affine,
                modality="MR",
                source=str(image_path),
                label_source=str(label_path),
            )
        )
    if include_unlabelled:
        cine_path = _find_nifti(folder, f"{sid}_4d")
        if cine_path is None:
            raise DataError(
                f"{folder / (sid + '_4d.nii.gz')}: file not found (needed for the unlabelled cine frames; "
                "pass include_unlabelled=False to read only the ED/ES frames)"
            )
        assert frame_shape is not None
        data, affine, spacing = _read_acdc_cine(cine_path, frame_shape, reorient=reorient)
        n_frames = data.shape[3]
        if frames[-1] > n_frames:
            raise DataError(f"{cfg_path}: frame {frames[-1]} listed but {cine_path} has only {n_frames} frames")
        candidates = [t for t in range(n_frames) if t + 1 not in frames]
        if 0 < unlabelled_frames < len(candidates):  # evenly spaced over the cycle; copies free the 4D array
            picks = np.unique(np.linspace(0, len(candidates) - 1, unlabelled_frames).round().astype(int))
            candidates = [candidates[i] for i in picks]
        for t in candidates:
            volumes.append(
                Volume(
                    subject_id=sid,
                    phase=t,
                    image=np.ascontiguousarray(_slice_first(data[..., t])),
                    label=None,
                    spacing=spacing,
                    affine=affine,
                    modality="MR",
                    source=str(cine_path),
                )
            )
    return volumes


def read_acdc(
    root: str | Path, *, include_unlabelled: bool = True, unlabelled_frames: int = 0, reorient: bool = True
) -> tuple[DatasetInfo, list[Volume]]:
    """Read the ACDC challenge release (NIfTI files per patient folder).

    Layout: ``root/patientXXX/`` (or ``root/training/patientXXX/`` and ``root/testing/patientXXX/``) holding
    ``Info.cfg`` (``ED: 1``, ``ES: 12``, ...), ``patientXXX_frameYY.nii.gz`` with ``patientXXX_frameYY_gt.nii.gz``
    for the ED and ES frames, and the cine ``patientXXX_4d.nii.gz`` (H, W, S, T).

    Args:
        root: the dataset folder.
        include_unlabelled: also return the other cine phases of the 4D file, as unlabelled volumes.
        unlabelled_frames: keep at most this many of those phases per patient, evenly spaced over the cycle
            (0 = all); bounds memory for the full release (100 patients × ~30 phases).
        reorient: bring every volume to the orientation convention (:mod:`sdnet.data.orientation`); False keeps
            the files' voxel order (``data.orientation=legacy``).

    Returns:
        (dataset info with labels 0 background, 1 RV, 2 MYO, 3 LV; volumes sorted by subject and phase). The ED/ES
        frames are labelled volumes with phase = frame number - 1; the other cine phases (phase = 0-based time
        index) have ``label=None``. Spacing comes from the NIfTI header zooms.

    Raises:
        DataError: a missing folder, Info.cfg (or one without ED/ES), frame image or label; a corrupt file; a 2D/4D
            frame; a cine that is not 4D or whose frame shape differs; shape mismatches; labels outside {0..3};
            non-finite voxels.
    """
    base = _check_root(root)
    info = DatasetInfo(name="acdc", labels=dict(ACDC_LABELS), modalities=("MR",))
    volumes: list[Volume] = []
    for folder in _acdc_patient_dirs(base):
        volumes.extend(_read_acdc_patient(folder, include_unlabelled, unlabelled_frames, reorient=reorient))
    return _finish(info, volumes)
