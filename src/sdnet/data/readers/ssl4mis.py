"""Reader for the SSL4MIS HDF5 release of ACDC (``data/*.h5`` volumes and slices) and its fixed split lists."""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

import h5py
import numpy as np

from sdnet.data.orientation import CONVENTION, LEGACY, ssl4mis_to_canonical
from sdnet.data.readers.acdc import ACDC_LABELS
from sdnet.data.readers.common import _check_root, _finish, _spacing_affine
from sdnet.data.volumes import DatasetInfo, Volume
from sdnet.errors import DataError

_SSL4MIS_FILE = re.compile(r"(patient\d+)_frame(\d+)(?:_slice_(\d+))?\.h5")
_SSL4MIS_ENTRY = re.compile(r"(patient\d+)_frame\d+(?:_slice_\d+)?")


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
        orientation: ``legacy`` keeps the arrays as stored; anything else returns them in the convention of
            :mod:`sdnet.data.orientation` (older frames are mapped from it by the pipeline).

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
    if orientation != LEGACY:  # stored (j, i) by SimpleITK from L/P-pointing NIfTI axes: to (i, j) towards R/A
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
