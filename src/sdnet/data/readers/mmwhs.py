"""Reader for the MM-WHS 2017 challenge release: 3D CT and MR NIfTI volumes of the whole heart, seven structures."""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

from sdnet.data.nifti import check_same_grid
from sdnet.data.readers.common import _check_root, _finish, _load_3d, _slice_first
from sdnet.data.volumes import DatasetInfo, Volume
from sdnet.errors import DataError

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
