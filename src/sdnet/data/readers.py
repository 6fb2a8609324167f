"""Readers for real cardiac MR datasets: the ACDC challenge layout, the SSL4MIS HDF5 release, nnU-Net raw folders.

Each reader returns ``(DatasetInfo, list[Volume])`` like :func:`sdnet.data.volumes.read_phantom`: images slice-first
(S, H, W) float32 raw intensities in the orientation convention of :mod:`sdnet.data.orientation` (NIfTI readers
reorient with the file's affine, the SSL4MIS reader transposes the release's slices back to the NIfTI order; a
``reorient=False`` / ``orientation="legacy"`` argument keeps the voxel order of releases before that), labels (S, H,
W) int64 in the dataset's own label values (None for an unlabelled frame), volumes sorted by (subject id, phase).
Every problem with the data raises :class:`~sdnet.errors.DataError` with a message that starts with the offending
file's (or folder's) path.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np

from sdnet.data.nifti import NiftiVolume, check_finite, check_same_grid, decode_nifti, load_nifti
from sdnet.data.orientation import CONVENTION, ssl4mis_to_canonical, to_canonical
from sdnet.data.volumes import DatasetInfo, Volume, check_volume
from sdnet.errors import DataError

#: ACDC label values (also those of the SSL4MIS release, which keeps ACDC's labels).
ACDC_LABELS: dict[int, str] = {0: "background", 1: "RV", 2: "MYO", 3: "LV"}

_PATIENT_DIR = re.compile(r"patient\d+")
_SSL4MIS_FILE = re.compile(r"(patient\d+)_frame(\d+)(?:_slice_(\d+))?\.h5")
_SSL4MIS_ENTRY = re.compile(r"(patient\d+)_frame\d+(?:_slice_\d+)?")
_FRAME_IN_CASE = re.compile(r"_frame(\d+)")
_NIFTI_ENDINGS = (".nii.gz", ".nii")


# ----------------------------------------------------------------------------------------------------------- helpers
def _check_root(root: str | Path) -> Path:
    base = Path(root)
    if not base.exists():
        raise DataError(f"{base}: dataset folder not found")
    if not base.is_dir():
        raise DataError(f"{base}: not a folder")
    return base


def _header_ndim(path: Path) -> int:
    """Number of dimensions stored in a NIfTI header, trailing singleton dimensions beyond the third ignored."""
    try:
        shape = tuple(nib.load(str(path)).shape)  # type: ignore[attr-defined]
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return len(shape)


def _load_3d(path: Path, *, as_labels: bool = False, reorient: bool = True) -> NiftiVolume:
    """:func:`load_nifti` that also rejects a 2D file (``load_nifti`` would promote it to one slice)."""
    vol = load_nifti(path, as_labels=as_labels, expect_3d=True, reorient=reorient)
    ndim = _header_ndim(path)
    if ndim != 3:
        raise DataError(f"{path}: expected a 3D volume (H, W, S), got a {ndim}D image")
    return vol


def _slice_first(data: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(data, 2, 0))


def _spacing_affine(spacing: tuple[float, float, float] | None) -> np.ndarray:
    affine = np.eye(4)
    if spacing is not None:
        affine[[0, 1, 2], [0, 1, 2]] = spacing
    return affine


def _finish(info: DatasetInfo, volumes: Iterable[Volume]) -> tuple[DatasetInfo, list[Volume]]:
    out = sorted(volumes, key=lambda v: (v.subject_id, v.phase, v.source))
    for volume in out:
        check_volume(volume, info)
    return info, out


# ---------------------------------------------------------------------------------------------------------------- ACDC
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


def _find_nifti(folder: Path, stem: str) -> Path | None:
    """``folder/<stem>.nii.gz`` or ``.nii``, the extension matched in any case (``.NII.GZ`` from some exporters)."""
    for ending in _NIFTI_ENDINGS:
        candidate = folder / f"{stem}{ending}"
        if candidate.is_file():
            return candidate
    wanted = {f"{stem}{ending}".lower() for ending in _NIFTI_ENDINGS}
    for candidate in sorted(folder.iterdir()) if folder.is_dir() else ():
        if candidate.name.lower() in wanted and candidate.is_file():
            return candidate
    return None


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


# ------------------------------------------------------------------------------------------------------------ SSL4MIS
def _read_h5(path: Path, ndim: int, out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``image`` and ``label`` from one SSL4MIS file, checking dimensionality, shape, dtype and finiteness.

    Args:
        path: the ``.h5`` file.
        ndim: expected dimensionality (3 for a volume file, 2 for a slice file).
        out: optional preallocated (float32 image, int64 label) arrays to read into (avoids a copy when stacking
            slices); their shape must match the file's, else a DataError naming the file is raised.

    Returns:
        (float32 image, int64 label), the ``out`` arrays when given.
    """
    try:
        with h5py.File(path, "r") as handle:
            missing = [key for key in ("image", "label") if key not in handle]
            if missing:
                raise DataError(f"{path}: missing dataset(s) {missing} (expected 'image' and 'label')")
            image_ds, label_ds = handle["image"], handle["label"]
            shape = tuple(image_ds.shape)
            if len(shape) != ndim:
                raise DataError(f"{path}: expected a {ndim}D image, got shape {shape}")
            if tuple(label_ds.shape) != shape:
                raise DataError(f"{path}: image shape {shape} and label shape {tuple(label_ds.shape)} differ")
            if out is not None and out[0].shape != shape:
                raise DataError(f"{path}: slice shape {shape} differs from the other slices' {tuple(out[0].shape)}")
            image, label = out if out is not None else (np.empty(shape, np.float32), np.empty(shape, np.int64))
            if min(shape, default=0) > 0:
                image_ds.read_direct(image)
                if np.issubdtype(label_ds.dtype, np.integer):
                    label_ds.read_direct(label)
                else:
                    as_float = np.asarray(label_ds[()], dtype=np.float64)
                    if not (np.isfinite(as_float).all() and (as_float == np.round(as_float)).all()):
                        raise DataError(f"{path}: label contains non-integer or non-finite values")
                    label[...] = as_float
    except DataError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({type(exc).__name__}: {exc})") from None
    if not np.isfinite(image).all():
        raise DataError(f"{path}: image contains non-finite (NaN/Inf) voxels")
    if label.size and (label.min() < 0 or label.max() > max(ACDC_LABELS)):
        unknown = sorted(int(v) for v in np.unique(label) if int(v) not in ACDC_LABELS)
        raise DataError(f"{path}: label values {unknown} are not in the dataset's labels {sorted(ACDC_LABELS)}")
    return image, label


def read_ssl4mis(
    root: str | Path, *, patients: Collection[str] | None = None, orientation: str = CONVENTION
) -> tuple[DatasetInfo, list[Volume]]:
    """Read the SSL4MIS HDF5 release of ACDC (ED/ES frames only, intensities already min-max scaled to [0, 1]).

    Layout: ``root/data/patientXXX_frameYY.h5`` (3D, datasets ``image`` (Z, H, W) and ``label`` (Z, H, W); the
    val/test patients) and ``root/data/patientXXX_frameYY_slice_N.h5`` (2D (H, W); the training patients), which
    are reassembled into one volume per patient-frame ordered numerically by N. ``frame01`` is ED (phase 0),
    ``frame02`` is ES (phase 1). The release stores no spacing: ``spacing`` is None and the affine is the identity.

    Args:
        root: the release folder (containing ``data/``).
        patients: read only these patient ids (e.g. ``{"patient001"}``); None reads all.

    Returns:
        (dataset info with ACDC's labels, labelled volumes sorted by subject and phase). The ``source`` of a
        reassembled volume is the slice files' pattern ``.../patientXXX_frameYY_slice_*.h5``.

    Raises:
        DataError: a missing ``data/`` folder, an unreadable HDF5 file, a missing ``image``/``label`` dataset, a
            wrong dimensionality, shape mismatches (also between slices of one frame), a patient-frame stored both
            as a volume and as slices, labels outside {0..3}, non-finite voxels, requested patients not found.
    """
    base = _check_root(root)
    data_dir = base / "data"
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: folder not found (expected the SSL4MIS layout root/data/*.h5)")
    wanted = None if patients is None else set(patients)
    whole: dict[tuple[str, int], Path] = {}
    slices: dict[tuple[str, int], dict[int, Path]] = {}
    for path in sorted(data_dir.iterdir()):
        match = _SSL4MIS_FILE.fullmatch(path.name)
        if match is None or (wanted is not None and match.group(1) not in wanted):
            continue
        key = (match.group(1), int(match.group(2)))
        if match.group(3) is None:
            whole[key] = path
        else:
            index = int(match.group(3))
            frame_slices = slices.setdefault(key, {})
            if index in frame_slices:
                raise DataError(f"{path}: slice number {index} also stored in {frame_slices[index]}")
            frame_slices[index] = path
    both = sorted(set(whole) & set(slices))
    if both:
        raise DataError(f"{whole[both[0]]}: patient-frame stored both as a volume and as slice files")
    if wanted is not None:
        found = {sid for sid, _ in whole} | {sid for sid, _ in slices}
        absent = sorted(wanted - found)
        if absent:
            raise DataError(f"{data_dir}: no files for patient(s) {absent}")
    if not whole and not slices:
        raise DataError(f"{data_dir}: no patientXXX_frameYY[_slice_N].h5 files found")
    info = DatasetInfo(name="acdc-ssl4mis", labels=dict(ACDC_LABELS), modalities=("MR",))
    volumes: list[Volume] = []
    for (sid, frame), path in whole.items():
        image, label = _read_h5(path, ndim=3)
        volumes.append(_ssl4mis_volume(sid, frame, image, label, str(path), orientation))
    for (sid, frame), frame_slices in slices.items():
        order = [frame_slices[index] for index in sorted(frame_slices)]
        first_image, first_label = _read_h5(order[0], ndim=2)
        image = np.empty((len(order), *first_image.shape), np.float32)
        label = np.empty((len(order), *first_image.shape), np.int64)
        image[0], label[0] = first_image, first_label
        for k, path in enumerate(order[1:], start=1):
            _read_h5(path, ndim=2, out=(image[k], label[k]))
        pattern = str(data_dir / f"{sid}_frame{frame:02d}_slice_*.h5")
        volumes.append(_ssl4mis_volume(sid, frame, image, label, pattern, orientation))
    return _finish(info, volumes)


def _ssl4mis_volume(
    sid: str, frame: int, image: np.ndarray, label: np.ndarray, source: str, orientation: str
) -> Volume:
    if orientation == CONVENTION:  # stored (j, i) by SimpleITK: back to the NIfTI files' (i, j)
        image, label = ssl4mis_to_canonical(image), ssl4mis_to_canonical(label)
    return Volume(
        subject_id=sid,
        phase=frame - 1,
        image=image,
        label=label,
        spacing=None,
        affine=_spacing_affine(None),
        modality="MR",
        source=source,
        label_source=source,
    )


def ssl4mis_split_lists(root: str | Path) -> dict[str, list[str]]:
    """The fixed SSL4MIS split of the ACDC patients, from the release's list files.

    Args:
        root: the release folder holding ``train.list`` and/or ``train_slices.list``, ``val.list``, ``test.list``
            (entries like ``patient012_frame01`` or ``patient003_frame01_slice_1``).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``: sorted, unique patient ids per split.

    Raises:
        DataError: a missing list file, an entry that is not a patient-frame name, train lists that disagree, or a
            patient in two splits.
    """
    base = _check_root(root)
    splits: dict[str, list[str]] = {}
    train_files = [base / name for name in ("train.list", "train_slices.list") if (base / name).is_file()]
    if not train_files:
        raise DataError(f"{base / 'train.list'}: file not found (nor train_slices.list)")
    train_sets = [(path, _read_list(path)) for path in train_files]
    for path, ids in train_sets[1:]:
        if ids != train_sets[0][1]:
            raise DataError(f"{path}: its patients differ from those of {train_sets[0][0]}")
    splits["train"] = sorted(train_sets[0][1])
    for name in ("val", "test"):
        path = base / f"{name}.list"
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        splits[name] = sorted(_read_list(path))
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(set(splits[a]) & set(splits[b]))
        if shared:
            raise DataError(f"{base / (b + '.list')}: patients {shared[:5]} are also in the {a} split")
    return splits


def _read_list(path: Path) -> set[str]:
    ids: set[str] = set()
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not readable ({exc})") from None
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry:
            continue
        match = _SSL4MIS_ENTRY.fullmatch(entry)
        if match is None:
            raise DataError(f"{path}: line {number} {entry!r} is not a patientXXX_frameYY[_slice_N] entry")
        ids.add(match.group(1))
    if not ids:
        raise DataError(f"{path}: lists no patients")
    return ids


# ------------------------------------------------------------------------------------------------------------ nnU-Net
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


# ------------------------------------------------------------------------------------------------------------- MM-WHS
#: MM-WHS 2017 label values (Zhuang & Shen 2016): the seven substructures of the whole heart.
MMWHS_LABELS: dict[int, str] = {0: "background", 205: "MYO", 420: "LA", 500: "LV", 550: "RA", 600: "RV", 820: "AA",
                                850: "PA"}
_MMWHS_FILE = re.compile(r"(ct|mr)_(train|test)_(\d+)_image\.nii(?:\.gz)?", re.IGNORECASE)


def read_mmwhs(
    root: str | Path, *, modalities: Collection[str] = ("MR", "CT"), reorient: bool = True
) -> tuple[DatasetInfo, list[Volume]]:
    """Read the MM-WHS 2017 challenge release (3D NIfTI volumes; paper §4.1(c), §5.3).

    Layout: ``root/{ct,mr}_train/{ct,mr}_train_NNNN_image.nii.gz`` with ``..._label.nii.gz`` beside it (labelled),
    and optionally ``root/{ct,mr}_test/{ct,mr}_test_NNNN_image.nii.gz`` (unlabelled). Files may also sit directly in
    ``root``. Each volume is one subject (``ct_1001``, ``mr_1001``: MR and CT come from different patients) with
    phase 0; slices are taken along the volume's third axis as stored (CT: axial; the MR volumes of the release are
    not all stored in the same orientation — reorient them beforehand if that matters to you). The 2D slice exports
    of later papers are not read: they lose the voxel size that the preprocessing needs.

    Args:
        root: the release folder.
        modalities: which modalities to read (``MR``, ``CT``).

    Returns:
        (dataset info with the seven MM-WHS labels 205 MYO, 420 LA, 500 LV, 550 RA, 600 RV, 820 AA, 850 PA and
        modalities MR, CT; volumes sorted by subject).

    Raises:
        DataError: no volume found; a training image without label; label values outside the seven structures;
            shape or affine mismatch between image and label; a 2D/4D or corrupt volume; non-finite voxels.
    """
    base = _check_root(root)
    wanted = {m.upper() for m in modalities}
    unknown = sorted(wanted - {"MR", "CT"})
    if unknown:
        raise DataError(f"{base}: MM-WHS has MR and CT volumes, not {unknown}")
    info = DatasetInfo(name="mmwhs", labels=dict(MMWHS_LABELS), modalities=tuple(m for m in ("MR", "CT")
                                                                                 if m in wanted))
    candidates = [p for folder in (base, *sorted(d for d in base.iterdir() if d.is_dir())) for p in sorted(
        folder.iterdir()) if p.is_file() and _MMWHS_FILE.fullmatch(p.name)]
    volumes: list[Volume] = []
    for image_path in candidates:
        match = _MMWHS_FILE.fullmatch(image_path.name)
        assert match is not None
        modality, part, number = match.group(1).upper(), match.group(2).lower(), match.group(3)
        if modality not in wanted:
            continue
        img = _load_3d(image_path, reorient=reorient)
        label_path: Path | None = None
        label = None
        if part == "train":
            label_path = image_path.with_name(image_path.name.replace("_image.nii", "_label.nii"))
            if not label_path.is_file():
                raise DataError(f"{label_path}: file not found (label of training volume {image_path.name})")
            lab = _load_3d(label_path, as_labels=True, reorient=reorient)
            check_same_grid(img, lab)
            label = _slice_first(lab.data)
        volumes.append(Volume(subject_id=f"{modality.lower()}_{number}", phase=0, image=_slice_first(img.data),
                              label=label, spacing=img.spacing, affine=img.affine, modality=modality,
                              source=str(image_path), label_source=str(label_path or "")))
    if not volumes:
        raise DataError(f"{base}: no MM-WHS volumes ({'/'.join(sorted(wanted))}) found: expected files like "
                        "mr_train/mr_train_1001_image.nii.gz")
    return _finish(info, volumes)
