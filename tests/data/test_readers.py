"""Tests of the real-dataset readers (sdnet.data.readers): ACDC NIfTI layout, SSL4MIS HDF5 release, nnU-Net raw."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from sdnet.data.readers import (
    ACDC_LABELS,
    MMWHS_LABELS,
    read_acdc,
    read_mmwhs,
    read_nnunet,
    read_ssl4mis,
    ssl4mis_split_lists,
)
from sdnet.errors import DataError

from ..helpers import ssl4mis_root

SHAPE = (16, 16, 3)  # (H, W, S) as stored in NIfTI
SPACING = (1.5, 1.25, 8.0)
N_CINE = 4


def _affine(spacing: tuple[float, float, float] = SPACING) -> np.ndarray:
    return np.diag([*spacing, 1.0])


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    image = nib.Nifti1Image(np.asarray(data), _affine() if affine is None else affine)
    image.header.set_zooms(SPACING[: data.ndim] + (1.0,) * max(0, data.ndim - 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def _image(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 500, size=shape).astype(np.float32)


def _label(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, size=shape).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------- ACDC
def _write_acdc_patient(parent: Path, number: int, ed: int = 1, es: int = 3) -> Path:
    sid = f"patient{number:03d}"
    folder = parent / sid
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text(
        f"ED: {ed}\nES: {es}\nGroup: DCM\nHeight: 180.0\nNbFrame: {N_CINE}\nWeight: 80.0\n"
    )
    cine = np.stack([_image(number * 10 + t) for t in range(N_CINE)], axis=-1)
    _save(folder / f"{sid}_4d.nii.gz", cine)
    for frame in (ed, es):
        _save(folder / f"{sid}_frame{frame:02d}.nii.gz", cine[..., frame - 1])
        _save(folder / f"{sid}_frame{frame:02d}_gt.nii.gz", _label(number * 10 + frame))
    return folder


@pytest.fixture
def acdc(tmp_path: Path) -> Path:
    root = tmp_path / "acdc"
    _write_acdc_patient(root / "training", 1, ed=1, es=3)
    _write_acdc_patient(root / "training", 2, ed=2, es=4)
    return root


def test_acdc_reads_labelled_and_unlabelled_frames(acdc: Path) -> None:
    info, volumes = read_acdc(acdc)
    assert info.labels == ACDC_LABELS and info.modalities == ("MR",)
    assert [(v.subject_id, v.phase, v.label is not None) for v in volumes] == [
        ("patient001", 0, True),
        ("patient001", 1, False),
        ("patient001", 2, True),
        ("patient001", 3, False),
        ("patient002", 0, False),
        ("patient002", 1, True),
        ("patient002", 2, False),
        ("patient002", 3, True),
    ]
    for v in volumes:
        assert v.image.shape == (3, 16, 16) and v.image.dtype == np.float32
        assert v.spacing == pytest.approx(SPACING)
        np.testing.assert_allclose(v.affine, _affine())
        assert v.image.flags["C_CONTIGUOUS"]
    ed = volumes[0]
    assert ed.label is not None and ed.label.dtype == np.int64
    assert set(np.unique(ed.label)) <= {0, 1, 2, 3}
    assert ed.source.endswith("patient001_frame01.nii.gz") and ed.label_source.endswith("patient001_frame01_gt.nii.gz")
    # slice-first: slice k of the volume is data[:, :, k] of the file
    np.testing.assert_array_equal(ed.image[2], _image(10)[:, :, 2])
    np.testing.assert_array_equal(volumes[1].image[1], _image(11)[:, :, 1])
    assert volumes[1].source.endswith("patient001_4d.nii.gz") and volumes[1].label_source == ""


def test_acdc_unlabelled_frames_are_capped_per_patient(tmp_path: Path) -> None:
    root = tmp_path / "acdc"
    folder = root / "patient001"
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text("ED: 1\nES: 5\n")
    cine = np.stack([_image(t) for t in range(10)], axis=-1)
    _save(folder / "patient001_4d.nii.gz", cine)
    for frame in (1, 5):
        _save(folder / f"patient001_frame{frame:02d}.nii.gz", cine[..., frame - 1])
        _save(folder / f"patient001_frame{frame:02d}_gt.nii.gz", _label(frame))
    _, all_frames = read_acdc(root)
    assert sum(v.label is None for v in all_frames) == 8
    _, capped = read_acdc(root, unlabelled_frames=3)
    phases = [v.phase for v in capped if v.label is None]
    assert phases == [1, 6, 9]  # evenly spaced over the non-ED/ES phases 1, 2, 3, 5, 6, 7, 8, 9
    np.testing.assert_array_equal(capped[-1].image[0], _image(9)[:, :, 0])


def test_acdc_labelled_only_and_flat_layout(tmp_path: Path) -> None:
    _write_acdc_patient(tmp_path, 7)
    _, volumes = read_acdc(tmp_path, include_unlabelled=False)
    assert [(v.subject_id, v.phase) for v in volumes] == [("patient007", 0), ("patient007", 2)]
    assert all(v.label is not None for v in volumes)


def test_acdc_missing_label(acdc: Path) -> None:
    (acdc / "training/patient002/patient002_frame04_gt.nii.gz").unlink()
    with pytest.raises(DataError, match=r"patient002_frame04_gt\.nii\.gz.*missing label for a listed case"):
        read_acdc(acdc)


def test_acdc_label_off_the_image_grid(acdc: Path) -> None:
    """One check for every reader: a label whose affine puts it elsewhere in space (here mirrored) is refused."""
    gt = acdc / "training/patient002/patient002_frame04_gt.nii.gz"
    mirrored = _affine() @ np.diag([1.0, -1.0, 1.0, 1.0])
    mirrored[1, 3] = 5.0
    _save(gt, _label(24), mirrored)
    with pytest.raises(DataError, match=r"patient002_frame04_gt\.nii\.gz: affine differs from that of"):
        read_acdc(acdc)


def test_phantom_label_off_the_image_grid(tiny_phantom: Path, tmp_path: Path) -> None:
    import shutil

    from sdnet.data.volumes import read_phantom

    copy = tmp_path / "ph"
    shutil.copytree(tiny_phantom, copy)
    label = next(copy.glob("phantom_000/phantom_000_label_phase00.nii.gz"))
    image = nib.load(str(label))
    shifted = image.affine.copy()
    shifted[0, 3] += 10.0
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), shifted), str(label))
    with pytest.raises(DataError, match=r"phantom_000_label_phase00\.nii\.gz: affine differs"):
        read_phantom(copy)


def test_acdc_missing_info_cfg(acdc: Path) -> None:
    (acdc / "training/patient001/Info.cfg").unlink()
    with pytest.raises(DataError, match=r"patient001/Info\.cfg: file not found"):
        read_acdc(acdc)


def test_acdc_info_cfg_without_es(acdc: Path) -> None:
    (acdc / "training/patient001/Info.cfg").write_text("ED: 1\nGroup: NOR\n")
    with pytest.raises(DataError, match=r"Info\.cfg: no 'ES' entry"):
        read_acdc(acdc)


def test_acdc_4d_frame_rejected(acdc: Path) -> None:
    _save(acdc / "training/patient001/patient001_frame03.nii.gz", np.stack([_image(0)] * 2, axis=-1))
    with pytest.raises(DataError, match=r"patient001_frame03\.nii\.gz: expected a 3D"):
        read_acdc(acdc)


def test_acdc_2d_frame_rejected(acdc: Path) -> None:
    _save(acdc / "training/patient001/patient001_frame03.nii.gz", _image(0, (16, 16)))
    with pytest.raises(DataError, match=r"patient001_frame03\.nii\.gz: expected a 3D"):
        read_acdc(acdc)


def test_acdc_non_finite_voxel(acdc: Path) -> None:
    data = _image(0)
    data[3, 4, 1] = np.nan
    _save(acdc / "training/patient002/patient002_frame02.nii.gz", data)
    with pytest.raises(DataError, match=r"patient002_frame02\.nii\.gz: .*non-finite"):
        read_acdc(acdc)


def test_acdc_label_out_of_range(acdc: Path) -> None:
    label = _label(0)
    label[0, 0, 0] = 5
    _save(acdc / "training/patient001/patient001_frame01_gt.nii.gz", label)
    with pytest.raises(DataError, match=r"patient001_frame01_gt\.nii\.gz: label values \[5\]"):
        read_acdc(acdc)


def test_acdc_shape_mismatch(acdc: Path) -> None:
    _save(acdc / "training/patient001/patient001_frame01_gt.nii.gz", _label(0, (16, 16, 2)))
    with pytest.raises(DataError, match=r"patient001_frame01_gt\.nii\.gz: label shape"):
        read_acdc(acdc)


def test_acdc_cine_must_be_4d(acdc: Path) -> None:
    _save(acdc / "training/patient002/patient002_4d.nii.gz", _image(0))
    with pytest.raises(DataError, match=r"patient002_4d\.nii\.gz: expected a 4D cine"):
        read_acdc(acdc)
    _, volumes = read_acdc(acdc, include_unlabelled=False)
    assert len(volumes) == 4


def test_acdc_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no patientXXX folders"):
        read_acdc(tmp_path)


# ------------------------------------------------------------------------------------------------------------ nnU-Net
def _write_nnunet(root: Path, **meta_overrides: object) -> Path:
    meta: dict[str, object] = {
        "channel_names": {"0": "cineMRI"},
        "labels": {"background": 0, "RV": 1, "MLV": 2, "LVC": 3},
        "numTraining": 3,
        "file_ending": ".nii.gz",
        "name": "Dataset027_ACDC",
    }
    meta.update(meta_overrides)
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for k, case in enumerate(["patient001_frame01", "patient001_frame12", "patient002_frame01"]):
        _save(root / "imagesTr" / f"{case}_0000.nii.gz", _image(k))
        _save(root / "labelsTr" / f"{case}.nii.gz", _label(k))
    _save(root / "imagesTs" / "patient101_frame01_0000.nii.gz", _image(9))
    return root


@pytest.fixture
def nnunet(tmp_path: Path) -> Path:
    return _write_nnunet(tmp_path / "Dataset027_ACDC")


def test_nnunet_reads_cases(nnunet: Path) -> None:
    info, volumes = read_nnunet(nnunet)
    assert info.labels == {0: "background", 1: "RV", 2: "MLV", 3: "LVC"}
    assert info.modalities == ("cineMRI",) and info.name == "Dataset027_ACDC"
    assert [(v.subject_id, v.phase, v.label is not None) for v in volumes] == [
        ("patient001_frame01", 0, True),
        ("patient001_frame12", 11, True),
        ("patient002_frame01", 0, True),
        ("patient101_frame01", 0, False),
    ]
    assert all(v.image.shape == (3, 16, 16) and v.modality == "cineMRI" for v in volumes)
    assert volumes[0].spacing == pytest.approx(SPACING)
    assert volumes[1].label_source.endswith("labelsTr/patient001_frame12.nii.gz")


def test_nnunet_subject_pattern(nnunet: Path) -> None:
    _, volumes = read_nnunet(nnunet, subject_pattern=r"^(patient\d+)")
    assert [(v.subject_id, v.phase) for v in volumes] == [
        ("patient001", 0),
        ("patient001", 11),
        ("patient002", 0),
        ("patient101", 0),
    ]
    with pytest.raises(DataError, match="does not match subject_pattern"):
        read_nnunet(nnunet, subject_pattern=r"^case_(\d+)")


def test_nnunet_label_not_in_dataset_json(nnunet: Path) -> None:
    label = _label(1)
    label[2, 2, 2] = 7
    _save(nnunet / "labelsTr/patient001_frame12.nii.gz", label)
    with pytest.raises(DataError, match=r"patient001_frame12\.nii\.gz: label values \[7\]"):
        read_nnunet(nnunet)


def test_nnunet_affine_mismatch(nnunet: Path) -> None:
    shifted = _affine()
    shifted[0, 3] = 2.0
    _save(nnunet / "labelsTr/patient002_frame01.nii.gz", _label(2), affine=shifted)
    with pytest.raises(DataError, match=r"labelsTr/patient002_frame01\.nii\.gz: affine differs"):
        read_nnunet(nnunet)


def test_nnunet_missing_label(nnunet: Path) -> None:
    (nnunet / "labelsTr/patient001_frame01.nii.gz").unlink()
    with pytest.raises(DataError, match=r"patient001_frame01\.nii\.gz: .*missing label for a listed case"):
        read_nnunet(nnunet)


def test_nnunet_two_channels(tmp_path: Path) -> None:
    root = _write_nnunet(tmp_path / "ds", channel_names={"0": "T1", "1": "T2"})
    with pytest.raises(DataError, match=r"dataset\.json: exactly one channel"):
        read_nnunet(root)


def test_nnunet_missing_or_invalid_dataset_json(nnunet: Path) -> None:
    (nnunet / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match=r"dataset\.json: not valid JSON"):
        read_nnunet(nnunet)
    (nnunet / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}}))
    with pytest.raises(DataError, match=r"dataset\.json: missing key"):
        read_nnunet(nnunet)
    (nnunet / "dataset.json").unlink()
    with pytest.raises(DataError, match=r"dataset\.json: file not found"):
        read_nnunet(nnunet)


# ------------------------------------------------------------------------------------------------------------ SSL4MIS
def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    with h5py.File(path, "w") as handle:
        handle.create_dataset("image", data=image, compression="gzip")
        handle.create_dataset("label", data=label, compression="gzip")


@pytest.fixture
def ssl4mis(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    _write_h5(data / "patient001_frame01.h5", np.full((4, 12, 10), 0.5, np.float32), np.ones((4, 12, 10), np.uint8))
    for n in (1, 2, 10):
        image = np.full((12, 10), n / 10, np.float32)
        _write_h5(data / f"patient003_frame02_slice_{n}.h5", image, np.full((12, 10), n % 4, np.uint8))
    return tmp_path


def test_ssl4mis_volume_and_slice_ordering(ssl4mis: Path) -> None:
    info, volumes = read_ssl4mis(ssl4mis)
    assert info.labels == ACDC_LABELS
    assert [(v.subject_id, v.phase, v.image.shape) for v in volumes] == [
        ("patient001", 0, (4, 10, 12)),  # the release's (j, i) slices transposed back to (i, j)
        ("patient003", 1, (3, 10, 12)),
    ]
    sliced = volumes[1]
    np.testing.assert_allclose(sliced.image[:, 0, 0], [0.1, 0.2, 1.0])  # slice_10 after slice_2
    assert sliced.label is not None and sliced.label.dtype == np.int64
    np.testing.assert_array_equal(sliced.label[:, 0, 0], [1, 2, 2])
    assert all(v.spacing is None for v in volumes)
    np.testing.assert_array_equal(sliced.affine, np.eye(4))
    _, only = read_ssl4mis(ssl4mis, patients=["patient003"])
    assert [v.subject_id for v in only] == ["patient003"]


def test_ssl4mis_corrupt_file(ssl4mis: Path) -> None:
    (ssl4mis / "data/patient003_frame02_slice_2.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(DataError, match=r"patient003_frame02_slice_2\.h5: not a readable HDF5"):
        read_ssl4mis(ssl4mis)


def test_ssl4mis_bad_contents(ssl4mis: Path) -> None:
    path = ssl4mis / "data/patient003_frame02_slice_10.h5"
    _write_h5(path, np.zeros((12, 11), np.float32), np.zeros((12, 11), np.uint8))
    with pytest.raises(DataError, match=r"slice_10\.h5: slice shape"):
        read_ssl4mis(ssl4mis)
    _write_h5(path, np.zeros((12, 10), np.float32), np.full((12, 10), 4, np.uint8))
    with pytest.raises(DataError, match=r"slice_10\.h5: label values \[4\]"):
        read_ssl4mis(ssl4mis)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("image", data=np.zeros((12, 10), np.float32))
    with pytest.raises(DataError, match=r"slice_10\.h5: missing dataset"):
        read_ssl4mis(ssl4mis)
    with pytest.raises(DataError, match=r"data: folder not found"):
        read_ssl4mis(ssl4mis / "data")


def test_ssl4mis_split_lists_tiny(tmp_path: Path) -> None:
    (tmp_path / "train_slices.list").write_text("patient003_frame01_slice_1\npatient003_frame02_slice_10\n")
    (tmp_path / "val.list").write_text("patient001_frame01\npatient001_frame02\n")
    (tmp_path / "test.list").write_text("patient002_frame01\n")
    assert ssl4mis_split_lists(tmp_path) == {"train": ["patient003"], "val": ["patient001"], "test": ["patient002"]}
    (tmp_path / "test.list").write_text("patient001_frame01\n")
    with pytest.raises(DataError, match=r"test\.list: patients \['patient001'\] are also in the val split"):
        ssl4mis_split_lists(tmp_path)


# ----------------------------------------------------------------------------------------------------------- real data
def _real_ssl4mis() -> Path:
    root = ssl4mis_root()
    if not (root / "data").is_dir():
        pytest.skip(f"real SSL4MIS ACDC data not found at {root}")
    return root


@pytest.mark.realdata
def test_real_ssl4mis_two_patients() -> None:
    root = _real_ssl4mis()
    splits = ssl4mis_split_lists(root)
    volume_patient, slice_patient = splits["val"][0], splits["train"][0]
    info, volumes = read_ssl4mis(root, patients=[volume_patient, slice_patient])
    assert [(v.subject_id, v.phase) for v in volumes] == sorted(
        (p, phase) for p in (volume_patient, slice_patient) for phase in (0, 1)
    )
    for v in volumes:
        assert v.label is not None and v.label.shape == v.image.shape and v.image.ndim == 3
        assert float(v.image.min()) >= 0.0 and float(v.image.max()) <= 1.0
        assert set(np.unique(v.label).tolist()) <= set(info.labels)
        assert 6 <= v.n_slices <= 20
    assert any(v.source.endswith("_slice_*.h5") for v in volumes)


@pytest.mark.realdata
def test_real_ssl4mis_split_lists() -> None:
    splits = ssl4mis_split_lists(_real_ssl4mis())
    assert {k: len(v) for k, v in splits.items()} == {"train": 70, "val": 10, "test": 20}
    assert len(set(splits["train"]) | set(splits["val"]) | set(splits["test"])) == 100


# ------------------------------------------------------------------------------------------------------------- MM-WHS
def _mmwhs_label(seed: int) -> np.ndarray:
    values = np.array(sorted(MMWHS_LABELS), dtype=np.int16)
    return values[np.random.default_rng(seed).integers(0, len(values), size=SHAPE)]


@pytest.fixture
def mmwhs(tmp_path: Path) -> Path:
    root = tmp_path / "mmwhs"
    for k, modality in enumerate(("mr", "ct")):
        for number in (1001, 1002):
            stem = root / f"{modality}_train" / f"{modality}_train_{number}"
            _save(stem.with_name(stem.name + "_image.nii.gz"), _image(number + k))
            _save(stem.with_name(stem.name + "_label.nii.gz"), _mmwhs_label(number + k))
    _save(root / "ct_test" / "ct_test_2001_image.nii.gz", _image(7))
    return root


def test_mmwhs_reads_both_modalities(mmwhs: Path) -> None:
    info, volumes = read_mmwhs(mmwhs)
    assert info.n_classes == 8 and info.labels[500] == "LV" and info.modalities == ("MR", "CT")
    assert [v.subject_id for v in volumes] == ["ct_1001", "ct_1002", "ct_2001", "mr_1001", "mr_1002"]
    assert {v.modality for v in volumes if v.subject_id.startswith("mr")} == {"MR"}
    first = volumes[0]
    assert first.image.shape == (3, 16, 16) and first.spacing == pytest.approx(SPACING)
    assert first.label is not None and set(np.unique(first.label)) <= set(MMWHS_LABELS)
    assert volumes[2].label is None  # test volumes are unlabelled
    _, only_mr = read_mmwhs(mmwhs, modalities=("MR",))
    assert {v.modality for v in only_mr} == {"MR"} and len(only_mr) == 2


def test_mmwhs_trains_through_the_pipeline(mmwhs: Path) -> None:
    from sdnet.config import DataConfig
    from sdnet.data.pipeline import prepare_data

    config = DataConfig(root=str(mmwhs), format="mmwhs", modality="MR+CT", target_spacing_mm=0, cache_dir="none",
                        val_fraction=0.2, test_fraction=0.2)
    data = prepare_data(config, image_size=16, n_classes=8)
    assert data.labelled.masks is not None and int(data.labelled.masks.max()) <= 7


def test_mmwhs_errors(mmwhs: Path, tmp_path: Path) -> None:
    (mmwhs / "mr_train" / "mr_train_1002_label.nii.gz").unlink()
    with pytest.raises(DataError, match=r"mr_train_1002_label\.nii\.gz: file not found"):
        read_mmwhs(mmwhs)
    bad = tmp_path / "bad"
    _save(bad / "ct_train_1003_image.nii.gz", _image(1))
    _save(bad / "ct_train_1003_label.nii.gz", np.full(SHAPE, 421, dtype=np.int16))
    with pytest.raises(DataError, match=r"label values \[421\]"):
        read_mmwhs(bad)
    with pytest.raises(DataError, match="no MM-WHS volumes"):
        read_mmwhs(tmp_path / "bad", modalities=("MR",))
    with pytest.raises(DataError, match="not found"):
        read_mmwhs(tmp_path / "nowhere")
