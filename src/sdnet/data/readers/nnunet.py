"""Reader for nnU-Net (v2) raw dataset folders: dataset.json, ``imagesTr/``, ``labelsTr/``, ``imagesTs/``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sdnet.data.nifti import check_same_grid
from sdnet.data.readers.common import _NIFTI_ENDINGS, _check_root, _find_nifti, _finish, _load_3d, _slice_first
from sdnet.data.volumes import DatasetInfo, Volume
from sdnet.errors import DataError

_FRAME_IN_CASE = re.compile(r"_frame(\d+)")


def _nnunet_meta(base: Path) -> tuple[dict[str, Any], Path]:
    path = base / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path}: file not found (an nnU-Net raw dataset needs dataset.json)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object")
    missing = [key for key in ("channel_names", "labels", "file_ending") if key not in meta]
    if missing:
        raise DataError(f"{path}: missing key(s) {missing}")
    return meta, path


def _nnunet_labels(raw: Any, path: Path) -> dict[int, str]:
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path}: 'labels' must be a non-empty object of name -> value")
    labels: dict[int, str] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(
                f"{path}: label {name!r} has value {value!r}; only integer labels are supported (no regions)"
            )
        if value in labels:
            raise DataError(f"{path}: labels {labels[value]!r} and {name!r} share the value {value}")
        labels[value] = str(name)
    if 0 not in labels or min(labels) < 0:
        raise DataError(f"{path}: labels must include background 0 and be non-negative, got {sorted(labels)}")
    return dict(sorted(labels.items()))


def _nnunet_cases(folder: Path, ending: str) -> dict[str, Path]:
    suffix = f"_0000{ending}"
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = path.name.lower()  # extensions in any case (.NII.GZ)
        if not name.endswith(ending.lower()) or path.name.startswith("."):
            continue
        if not name.endswith(suffix.lower()):
            raise DataError(f"{path}: not a channel-0000 image; only single-channel datasets are supported")
        cases[path.name[: -len(suffix)]] = path
    return cases


def read_nnunet(
    root: str | Path, *, subject_pattern: str | None = None, reorient: bool = True
) -> tuple[DatasetInfo, list[Volume]]:
    """Read an nnU-Net (v2) raw dataset folder of NIfTI volumes with one input channel.

    Layout: ``root/dataset.json`` (``channel_names`` with exactly one channel, ``labels`` name -> value,
    ``file_ending`` ``.nii.gz`` or ``.nii``), ``imagesTr/{case}_0000{ending}`` with ``labelsTr/{case}{ending}``
    (labelled) and optionally ``imagesTs/{case}_0000{ending}`` (unlabelled).

    Args:
        root: the dataset folder (``DatasetXXX_Name``).
        subject_pattern: regular expression matched (``re.match``) against each case id; its first group (or the
            whole match when it has no group) is the subject id, e.g. ``^(patient\\d+)`` groups
            ``patient001_frame01`` and ``patient001_frame12``. None: subject id = case id.

    Returns:
        (dataset info with labels value -> name and the channel name as modality; volumes sorted by subject and
        phase). Phase = the number in ``_frame(\\d+)`` of the case id minus 1, else 0.

    Raises:
        DataError: a missing or invalid dataset.json (missing keys, not one channel, non-integer labels, an
            unsupported file ending); a training image without label; label values not in dataset.json; shape or
            affine (> 1e-3) mismatch between image and label; a 2D/4D or corrupt volume; non-finite voxels; a case
            id the subject pattern does not match.
    """
    base = _check_root(root)
    meta, meta_path = _nnunet_meta(base)
    channels = meta["channel_names"]
    if not isinstance(channels, dict) or len(channels) != 1:
        raise DataError(f"{meta_path}: exactly one channel is supported, 'channel_names' is {channels!r}")
    modality = str(next(iter(channels.values())))
    labels = _nnunet_labels(meta["labels"], meta_path)
    ending = meta["file_ending"]
    if ending not in _NIFTI_ENDINGS:
        raise DataError(f"{meta_path}: file_ending {ending!r} is not supported (only {list(_NIFTI_ENDINGS)})")
    try:
        pattern = None if subject_pattern is None else re.compile(subject_pattern)
    except re.error as exc:
        raise DataError(f"{base}: invalid subject_pattern {subject_pattern!r} ({exc})") from None
    info = DatasetInfo(name=str(meta.get("name", base.name)), labels=labels, modalities=(modality,))

    images_tr = base / "imagesTr"
    if not images_tr.is_dir():
        raise DataError(f"{images_tr}: folder not found")
    labelled = _nnunet_cases(images_tr, ending)
    unlabelled = _nnunet_cases(base / "imagesTs", ending) if (base / "imagesTs").is_dir() else {}
    if not labelled and not unlabelled:
        raise DataError(f"{images_tr}: no *_0000{ending} images found")

    def subject_and_phase(case: str, path: Path) -> tuple[str, int]:
        sid = case
        if pattern is not None:
            match = pattern.match(case)
            if match is None:
                raise DataError(f"{path}: case id {case!r} does not match subject_pattern {subject_pattern!r}")
            sid = match.group(1) if pattern.groups else match.group(0)
        frame = _FRAME_IN_CASE.search(case)
        return sid, (int(frame.group(1)) - 1 if frame else 0)

    volumes: list[Volume] = []
    for case, image_path in labelled.items():
        sid, phase = subject_and_phase(case, image_path)
        label_path = _find_nifti(base / "labelsTr", case) or base / "labelsTr" / f"{case}{ending}"
        if not label_path.is_file():
            raise DataError(f"{label_path}: file not found (missing label for a listed case {image_path.name})")
        img = _load_3d(image_path, reorient=reorient)
        lab = _load_3d(label_path, as_labels=True, reorient=reorient)  # shapes are checked by check_volume
        check_same_grid(img, lab)
        volumes.append(
            Volume(
                subject_id=sid,
                phase=phase,
                image=_slice_first(img.data),
                label=_slice_first(lab.data),
                spacing=img.spacing,
                affine=img.affine,
                modality=modality,
                source=str(image_path),
                label_source=str(label_path),
            )
        )
    for case, image_path in unlabelled.items():
        sid, phase = subject_and_phase(case, image_path)
        img = _load_3d(image_path, reorient=reorient)
        volumes.append(
            Volume(
                subject_id=sid,
                phase=phase,
                image=_slice_first(img.data),
                label=None,
                spacing=img.spacing,
                affine=img.affine,
                modality=modality,
                source=str(image_path),
            )
        )
    return _finish(info, volumes)
