"""`sdnet predict` on what scanners produce: DICOM series, 4D cine NIfTI, nnU-Net naming, bad inputs (issue 15)."""

from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from sdnet.cli import main
from sdnet.config import apply_overrides
from sdnet.data.nifti import load_nifti
from sdnet.data.scans import find_scan_inputs, is_nnunet_layout, read_dicom_folder, read_nifti_scan
from sdnet.errors import DataError
from sdnet.training import Trainer

from ..helpers import tiny_config

ROW = np.array([0.9, 0.3, -0.3163]) / np.linalg.norm([0.9, 0.3, -0.3163])  # oblique, short-axis-like cosines


def _column() -> np.ndarray:
    c = np.cross(np.array([0.1, 0.2, 0.97]), ROW)
    c = c - (c @ ROW) * ROW
    return c / np.linalg.norm(c)


def _volume(shape: tuple[int, int, int] = (40, 36, 5), seed: int = 0) -> np.ndarray:
    """(X = columns, Y = rows, Z) uint16 heart-like image."""
    x, y = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(x - shape[0] * 0.45, (y - shape[1] * 0.55) * 1.2)
    rng = np.random.default_rng(seed)
    out = np.stack([np.where(r < 7 + k, 900, 300) + 80 * np.sin(x / 3.0 + k) for k in range(shape[2])], axis=-1)
    return (out + rng.integers(0, 40, out.shape)).astype(np.uint16)


def write_dicom_series(folder: Path, volume: np.ndarray, *, spacing=(1.4, 1.6), step=8.0, series_number=3,
                       origin=(-60.0, 40.0, 10.0), frames: int = 1, gaps: tuple[float, ...] = ()) -> np.ndarray:
    """Write (X, Y, Z[, T]) as a shuffled classic DICOM series; returns the RAS affine of its (X, Y, Z) order."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    row, col = ROW, _column()
    normal = np.cross(row, col)
    vols = volume if volume.ndim == 4 else volume[..., None]
    files = []
    for k in range(vols.shape[2]):
        position = np.asarray(origin) + normal * (step * k + sum(gaps[:k]))
        for t in range(frames):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR image storage
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
            ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "MR", series_uid, series_number
            ds.StudyInstanceUID = "1.2.3"
            ds.InstanceNumber = k * frames + t + 1
            ds.ImagePositionPatient = [float(v) for v in position]
            ds.ImageOrientationPatient = [float(v) for v in (*row, *col)]
            ds.PixelSpacing = [spacing[0], spacing[1]]  # between rows, between columns
            ds.SliceThickness = step
            ds.TriggerTime = 40.0 * t
            ds.Rows, ds.Columns = vols.shape[1], vols.shape[0]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.RescaleSlope, ds.RescaleIntercept = 1.0, 0.0
            ds.PixelData = np.ascontiguousarray(vols[:, :, k, t % vols.shape[3]].T).astype(np.uint16).tobytes()
            files.append(ds)
    random.Random(0).shuffle(files)  # on disk in no particular order
    for n, ds in enumerate(files):
        ds.save_as(str(folder / f"IM{n:04d}.dcm"), enforce_file_format=True)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * spacing[1], col * spacing[0], normal * step, origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.fixture(scope="module")
def run(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = apply_overrides(tiny_config(tiny_phantom), ["train.epochs=1", "train.steps_per_epoch=3", "data.resize=32"])
    out = tmp_path_factory.mktemp("scans") / "run"
    Trainer(cfg, out).fit()
    return out


def test_dicom_series_geometry(tmp_path: Path):
    volume = _volume()
    affine = write_dicom_series(tmp_path / "series", volume)
    (scan,) = read_dicom_folder(tmp_path / "series")
    assert scan.file_shape == volume.shape and scan.n_frames == 1
    np.testing.assert_allclose(scan.file_affine, affine, atol=1e-6)
    nii = tmp_path / "same.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), str(nii))
    np.testing.assert_array_equal(scan.frame(0), read_nifti_scan(nii).frame(0))  # same canonical array


def test_dicom_prediction_matches_nifti_prediction_voxel_for_voxel(run: Path, tmp_path: Path):
    """Acceptance: an oblique DICOM series, shuffled on disk, gives the same mask as the volume saved as NIfTI."""
    volume = _volume()
    affine = write_dicom_series(tmp_path / "dicom" / "study", volume)
    nii_dir = tmp_path / "nifti"
    nii_dir.mkdir()
    # the same scan as NIfTI, stored in another voxel order (transposed, flipped) with the matching affine
    t = np.eye(4)[:, [1, 0, 2, 3]]
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1, volume.shape[2] - 1
    stored = np.flip(np.swapaxes(volume, 0, 1), 2).astype(np.float32)
    nib.save(nib.Nifti1Image(stored, affine @ t @ flip), str(nii_dir / "study.nii.gz"))
    assert main(["predict", "--checkpoint", str(run), "--input", str(tmp_path / "dicom" / "study"),
                 str(nii_dir / "study.nii.gz"), "--out", str(tmp_path / "a")]) == 2  # same output name: refused
    assert main(["predict", "--checkpoint", str(run), "--input", str(tmp_path / "dicom" / "study"),
                 "--out", str(tmp_path / "from_dicom")]) == 0
    assert main(["predict", "--checkpoint", str(run), "--input", str(nii_dir / "study.nii.gz"),
                 "--out", str(tmp_path / "from_nifti")]) == 0
    a = load_nifti(tmp_path / "from_dicom" / "study_seg.nii.gz", as_labels=True)
    b = load_nifti(tmp_path / "from_nifti" / "study_seg.nii.gz", as_labels=True)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    assert len(np.unique(a.data)) >= 2
    np.testing.assert_array_equal(a.data, b.data)


def test_cine_nifti_every_phase_and_nnunet_naming(run: Path, tmp_path: Path):
    rng = np.random.default_rng(2)
    cine = np.stack([_volume(seed=t) for t in range(3)], axis=-1).astype(np.float32)
    cine += rng.normal(0, 5, cine.shape).astype(np.float32)
    src = tmp_path / "in"
    src.mkdir()
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    nib.save(nib.Nifti1Image(cine, affine), str(src / "case7_0000.nii.gz"))
    nib.save(nib.Nifti1Image(cine[..., 1], affine), str(src / "case8_0000.nii.gz"))
    assert main(["predict", "--checkpoint", str(run), "--input", str(src), "--out", str(tmp_path / "out"),
                 "--probabilities"]) == 0
    mask4d = nib.load(str(tmp_path / "out" / "case7.nii.gz"))
    assert mask4d.shape == cine.shape and mask4d.get_data_dtype() == np.uint8
    mask3d = np.asarray(nib.load(str(tmp_path / "out" / "case8.nii.gz")).dataobj)
    np.testing.assert_array_equal(np.asarray(mask4d.dataobj)[..., 1], mask3d)  # phase 1 = the 3D copy of it
    prob = nib.load(str(tmp_path / "out" / "case8_prob.nii.gz")).get_fdata()
    assert prob.shape == (*cine.shape[:3], 4)
    np.testing.assert_allclose(prob.sum(axis=-1), 1.0, atol=1e-4)
    assert len(list((tmp_path / "out").glob("case7_prob_t*.nii.gz"))) == 3
    # the look at the result: a QC figure per scan, one HTML page with volumes (mL) and the cine's indices
    for name in ("case7_0000", "case8_0000"):
        assert (tmp_path / "out" / "qc" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "case7_0000" in page
    mask = np.asarray(mask4d.dataobj)
    lv_ml = np.count_nonzero(mask[..., 0] == 3) * 1.5 * 1.5 * 8.0 / 1000
    assert f"<td>{lv_ml:.1f}</td>" in page  # the LV volume of frame 0, from the voxel size
    assert ("Cardiac indices (cines)" in page) == bool((mask == 3).any())  # a cine with an LV gets its indices


def test_report_of_a_cine_shows_its_indices(tmp_path: Path):
    from sdnet.predict_report import qc_figure, summarise, write_report

    cine = np.stack([_volume(seed=t) for t in range(3)], axis=-1).astype(np.float32)
    nib.save(nib.Nifti1Image(cine, np.diag([1.5, 1.5, 8.0, 1.0])), str(tmp_path / "cine.nii.gz"))
    scan = read_nifti_scan(tmp_path / "cine.nii.gz")
    mask = np.zeros(cine.shape, np.uint8)
    for t, lv in enumerate((400, 150, 300)):  # LV voxels per frame: ED = frame 0, ES = frame 1
        mask[..., t].reshape(-1)[:lv] = 3
        mask[..., t].reshape(-1)[lv:lv + 200] = 2
    labels = {0: "background", 1: "RV", 2: "MYO", 3: "LV"}
    summary = summarise(scan, mask, tmp_path / "m.nii.gz", labels, qc_figure(scan, mask, labels, tmp_path / "q.png"))
    voxel = 1.5 * 1.5 * 8.0 / 1000
    assert summary.unit == "mL" and summary.volumes[1]["LV"] == pytest.approx(150 * voxel)
    assert summary.indices["LV_EF"] == pytest.approx(100 * 250 / 400)
    assert summary.indices["LV_mass"] == pytest.approx(1.05 * 200 * voxel)
    page = write_report([summary], [("bad.nii.gz", "not readable")], tmp_path / "r.html", checkpoint="x").read_text()
    assert "Cardiac indices (cines)" in page and "<td>62.5</td>" in page and "bad.nii.gz" in page


def test_bad_inputs_are_reported_by_name_and_the_rest_is_written(run: Path, tmp_path: Path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    nib.save(nib.Nifti1Image(_volume().astype(np.float32), np.eye(4)), str(src / "good.nii.gz"))
    (src / "broken.nii.gz").write_bytes(b"not a nifti")
    (src / "._good.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # a macOS resource fork: not a scan
    rgb = np.zeros((8, 8, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(src / "rgb.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((8, 8, 2), np.complex64), np.eye(4)), str(src / "complex.nii.gz"))
    assert main(["predict", "--checkpoint", str(run), "--input", str(src), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "broken.nii.gz: not a readable NIfTI file" in err
    assert "rgb.nii.gz: voxels of type" in err and "RGB" in err
    assert "complex.nii.gz: complex-valued voxels" in err
    assert "3 of 4 input(s) failed" in err
    assert (tmp_path / "out" / "good_seg.nii.gz").is_file()
    assert main(["predict", "--checkpoint", str(run), "--input", str(src), "--out", str(src)]) == 2
    assert "is the input folder" in capsys.readouterr().err


def test_dicom_bad_inputs(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DICOM images found"):
        find_scan_inputs([tmp_path / "empty"])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match="no DICOM images found"):
        find_scan_inputs([tmp_path / "junk"])
    write_dicom_series(tmp_path / "gap", _volume(), gaps=(0.0, 0.0, 4.0))  # one slice position missing
    with pytest.raises(DataError, match="inconsistent spacing between slice positions"):
        read_dicom_folder(tmp_path / "gap")
    # two series in one folder: told apart (never stacked into one volume), each its own scan
    write_dicom_series(tmp_path / "two", _volume(), series_number=3)
    write_dicom_series(tmp_path / "two" / "other", _volume((30, 30, 3), seed=4), series_number=7, step=6.0)
    inputs = find_scan_inputs([tmp_path / "two"])
    assert [(i.name, i.output) for i in inputs] == [("two_s3", "two_s3_seg.nii.gz"), ("two_s7", "two_s7_seg.nii.gz")]
    shapes = sorted(i.read().file_shape for i in inputs)
    assert shapes == [(30, 30, 3), (40, 36, 5)]


def test_dicom_cine_frames_by_trigger_time(tmp_path: Path):
    cine = np.stack([_volume(seed=t) for t in range(2)], axis=-1)
    write_dicom_series(tmp_path / "cine", cine, frames=2)
    (scan,) = read_dicom_folder(tmp_path / "cine")
    assert scan.file_shape == (*cine.shape[:3], 2)
    for t in range(2):
        np.testing.assert_array_equal(scan.frame_in_file_order(t), cine[..., t].astype(np.float32))


def test_nifti_dimensions_are_checked(tmp_path: Path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(DataError, match="a 2D image"):
        read_nifti_scan(tmp_path / "flat.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2, 2, 2), np.float32), np.eye(4)), str(tmp_path / "5d.nii.gz"))
    with pytest.raises(DataError, match="a 5D image"):
        read_nifti_scan(tmp_path / "5d.nii.gz")
    with pytest.raises(DataError, match="nnU-Net channel 0001"):
        for name in ("c_0000.nii.gz", "c_0001.nii.gz"):
            nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), str(tmp_path / name))
        find_scan_inputs([tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz"])


def test_four_digit_endings_are_channels_only_in_an_nnunet_folder(tmp_path: Path):
    """``SCD0000101_0048.nii.gz`` (a case and a slice number) is a case name, not nnU-Net channel 0048 (issue 23)."""
    scd = tmp_path / "scd"
    scd.mkdir()
    for name in ("SCD0000101_0048", "SCD0000101_0049", "SCD0000201_0020"):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), str(scd / f"{name}.nii.gz"))
    found = find_scan_inputs([scd])
    assert [f.output for f in found] == ["SCD0000101_0048_seg.nii.gz", "SCD0000101_0049_seg.nii.gz",
                                         "SCD0000201_0020_seg.nii.gz"]
    assert not is_nnunet_layout(["SCD0000101_0048", "SCD0000201_0020"])  # no channel 0000
    assert not is_nnunet_layout(["a_0000", "a_0001", "b_0000"])  # not the same channels per case
    assert is_nnunet_layout(["a_0000", "b_0000"]) and not is_nnunet_layout(["a_0000", "b"])
    # a real nnU-Net folder keeps its naming (case_0000 -> case.nii.gz)
    nn = tmp_path / "nn"
    nn.mkdir()
    for name in ("case1_0000", "case2_0000"):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), str(nn / f"{name}.nii.gz"))
    assert [f.output for f in find_scan_inputs([nn])] == ["case1.nii.gz", "case2.nii.gz"]


def test_pydicom_warnings_are_one_line_per_series_not_per_file(tmp_path: Path, capsys, caplog):
    """A series whose every file carries a malformed UID made pydicom warn (and log) once per file: 240 lines for a
    cine. Now one line names the folder and the first message (issue 23)."""
    import logging

    import pydicom

    write_dicom_series(tmp_path / "cine", _volume((20, 20, 4)), frames=3)  # 12 files
    with pydicom.config.disable_value_validation():
        for path in (tmp_path / "cine").iterdir():
            ds = pydicom.dcmread(str(path))
            ds.SeriesInstanceUID = "1.2.03.77"  # a leading zero: invalid for VR UI
            ds.save_as(str(path))
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        (found,) = find_scan_inputs([tmp_path / "cine"])
        found.read()
    pydicom_lines = [r for r in caplog.records if "Invalid value for VR UI" in r.getMessage()]
    assert len(pydicom_lines) == 1 and str(tmp_path / "cine") in pydicom_lines[0].getMessage()
    assert "Invalid value for VR UI" not in capsys.readouterr().err  # nor as 12 Python warnings
