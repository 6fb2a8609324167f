"""The orientation convention checked against anatomy (issue 23): in world coordinates the RV lies right-anterior of
the LV — in every SSL4MIS label volume after the reader, in every phantom subject, and in the masks ``predict``
writes, whatever the voxel layout of its input.

Self-consistency (re-oriented copies give one world mask) is tested in ``test_orientation.py``; it once let a half
turn through, which these tests catch: they fail when the SSL4MIS map drops its half turn (checked by hand).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from sdnet.config import DataConfig
from sdnet.data.anatomy import rv_lv_check
from sdnet.data.orientation import HALF_TURN, InPlaneMap, model_frame
from sdnet.data.phantom.datatypes import phantom_affine
from sdnet.data.readers import read_ssl4mis
from sdnet.data.scans import read_nifti_scan
from sdnet.data.volumes import read_phantom
from sdnet.inference import predict_scan
from sdnet.predict_report import anatomy_warning, summarise, write_predictions_csv

from ..helpers import ssl4mis_root

LABELS = {0: "background", 1: "RV", 2: "MYO", 3: "LV"}
ACDC_AFFINE = np.diag([-1.5625, -1.5625, 10.0, 1.0])  # the ACDC NIfTI header (docs/orientation.md)


def _two_discs(shape: tuple[int, int, int], rv: tuple[float, float], lv: tuple[float, float]) -> np.ndarray:
    """(X, Y, Z) labels: an LV disc with a MYO ring and an RV disc, centred at fractions of the in-plane axes."""
    x, y = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.uint8)
    r = min(shape[:2]) / 7
    for value, (cx, cy), radius in ((2, lv, 1.5 * r), (3, lv, r), (1, rv, r)):
        disc = np.hypot(x - cx * shape[0], y - cy * shape[1]) < radius
        out[disc] = value
    return out


def test_the_check_follows_world_space_not_voxel_order():
    mask = _two_discs((40, 36, 3), rv=(0.75, 0.6), lv=(0.4, 0.45))  # RV at larger i and j
    ras = np.diag([1.5, 1.5, 8.0, 1.0])
    good = rv_lv_check(mask, ras, LABELS)
    assert good.ok is True and good.problem == ""
    assert good.rv_minus_lv_mm is not None and good.rv_minus_lv_mm[0] > 0 and good.rv_minus_lv_mm[1] > 0
    assert good.angle_deg is not None and 0 < good.angle_deg < 90
    # the same voxels under the ACDC (L, P) header lie left-posterior: a half turn in world space
    bad = rv_lv_check(mask, ACDC_AFFINE, LABELS)
    assert bad.ok is False and "not right-anterior" in bad.problem
    # stored in another voxel order with the affine to match: the same verdict and vector
    flipped, flipped_affine = mask[::-1, ::-1].copy(), ras @ np.array(
        [[-1, 0, 0, 39], [0, -1, 0, 35], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    again = rv_lv_check(flipped, flipped_affine, LABELS)
    assert again.ok is True and np.allclose(again.rv_minus_lv_mm, good.rv_minus_lv_mm)
    # a missing RV, labels without an RV, one 2D slice
    no_rv = np.where(mask == 1, 0, mask)
    assert rv_lv_check(no_rv, ras, LABELS).problem == "RV missing"
    assert rv_lv_check(mask, ras, {0: "background", 1: "liver", 2: "spleen"}).ok is None
    assert rv_lv_check(mask[:, :, 0], ras, LABELS).ok is True


@pytest.mark.realdata
def test_every_ssl4mis_label_volume_has_the_rv_right_anterior_of_the_lv():
    root = ssl4mis_root()
    if not (root / "data").is_dir():
        pytest.skip(f"real SSL4MIS ACDC data not found at {root}")
    info, volumes = read_ssl4mis(root)  # train (slice files), val and test (volume files)
    assert len({v.subject_id for v in volumes}) == 100 and len(volumes) == 200
    # the convention's frame: rows towards +R, columns towards +A, slices towards +S (identity affine)
    checks = [rv_lv_check(np.moveaxis(v.label, 0, 2), np.eye(4), info.labels) for v in volumes if v.label is not None]
    passed = sum(bool(c.ok) for c in checks)
    right = sum(c.rv_minus_lv_mm is not None and c.rv_minus_lv_mm[0] > 0 for c in checks)
    assert passed >= 0.95 * len(checks), f"{passed} of {len(checks)} right-anterior"
    assert right == len(checks)  # the RV lies towards +R in every one
    # the frame of issue 15 (a half turn) fails nearly all of them: the test tells the two apart
    turned = sum(bool(rv_lv_check(np.moveaxis(HALF_TURN.apply(v.label), 0, 2), np.eye(4), info.labels).ok)
                 for v in volumes if v.label is not None)
    assert turned <= 0.05 * len(checks)


@pytest.mark.realdata
def test_an_ssl4mis_volume_written_as_its_acdc_nifti_file_is_read_to_the_same_array(tmp_path: Path):
    """The SSL4MIS map equals what the convention does to the ACDC file (voxel axes towards L, P) it came from."""
    root = ssl4mis_root()
    if not (root / "data").is_dir():
        pytest.skip(f"real SSL4MIS ACDC data not found at {root}")
    _, (vol, *_) = read_ssl4mis(root, patients=["patient001"])
    stored = read_ssl4mis(root, patients=["patient001"], orientation="legacy")[1][0]
    assert stored.label is not None and vol.label is not None
    acdc_file = np.ascontiguousarray(np.transpose(stored.label, (2, 1, 0)))  # SimpleITK (z, j, i) -> (i, j, z)
    nib.save(nib.Nifti1Image(acdc_file.astype(np.uint8), ACDC_AFFINE), str(tmp_path / "gt.nii.gz"))
    assert rv_lv_check(acdc_file, ACDC_AFFINE, LABELS).ok is True  # in world space, from the header
    scan = read_nifti_scan(tmp_path / "gt.nii.gz")
    np.testing.assert_array_equal(np.moveaxis(scan.frame(0), 2, 0), vol.label)


def test_every_phantom_subject_is_anatomical(tiny_phantom: Path, tmp_path: Path):
    meta = json.loads((tiny_phantom / "phantom.json").read_text())
    assert meta["version"] == 2
    labelled = 0
    for subject in meta["subjects"]:
        for rel in subject["files"]["label"]:
            image = nib.load(str(tiny_phantom / rel))
            check = rv_lv_check(np.asarray(image.dataobj), image.affine, LABELS)  # world space, from the file
            assert check.ok is True, (rel, check)
            labelled += 1
    _, volumes = read_phantom(tiny_phantom)
    for v in volumes:  # and in the convention's frame after the reader
        if v.label is not None:
            assert rv_lv_check(np.moveaxis(v.label, 0, 2), v.affine, LABELS).ok is True, v.subject_id
    assert labelled == 8 * 3
    # a version-1 phantom (same arrays, the old diag affine) is read as version 2 is
    old = tmp_path / "v1"
    shutil.copytree(tiny_phantom, old)
    meta["version"] = 1
    (old / "phantom.json").write_text(json.dumps(meta))
    for path in old.rglob("*.nii.gz"):
        image = nib.load(str(path))
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), np.diag([2.0, 2.0, 8.0, 1.0])), str(path))
    for new, was in zip(volumes, read_phantom(old)[1], strict=True):
        np.testing.assert_array_equal(new.image, was.image)
        np.testing.assert_allclose(new.affine, was.affine)
    assert np.allclose(phantom_affine((2.0, 2.0, 8.0))[:3, :3] @ [1, 0, 0], [0, -2.0, 0])  # rows towards -A


class _PositionalSegmenter(nn.Module):
    """A stand-in for a trained model that, in its own frame, always sees the heart as ``frame`` maps the
    convention's: an RV disc right-anterior of an LV disc (larger rows and columns in the convention)."""

    def __init__(self, frame: InPlaneMap) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.frame = frame

    def segment(self, x: torch.Tensor) -> object:
        n, _, h, w = x.shape
        labels = _two_discs((h, w, 1), rv=(0.7, 0.6), lv=(0.4, 0.45))[:, :, 0]
        labels = self.frame.apply(labels)  # what a model trained in that frame predicts for this heart
        one_hot = torch.nn.functional.one_hot(torch.from_numpy(labels.astype(np.int64)), 4).permute(2, 0, 1)
        probabilities = one_hot.float()[None].expand(n, -1, -1, -1) + 0 * self.weight

        class _Out:
            pass

        out = _Out()
        out.probabilities = probabilities  # type: ignore[attr-defined]
        return out


def _layouts(data: np.ndarray, affine: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One volume in the voxel layouts LPS (as given), RAS and PIR, each with the affine that keeps the world."""
    out = {"LPS": (data, affine)}
    ras = InPlaneMap(flip_rows=True, flip_cols=True)
    out["RAS"] = (ras.apply(data, axes=(0, 1)), ras.affine(affine, data.shape[:2]))
    # PIR: axes (P, I, R) = (j, slice reversed, i reversed)
    pir = np.ascontiguousarray(np.transpose(data, (1, 2, 0))[:, ::-1, ::-1])
    m = np.zeros((4, 4))
    m[1, 0] = 1  # file axis 0 (j) -> old axis 1
    m[2, 1], m[2, 3] = -1, data.shape[2] - 1  # file axis 1 -> old slice axis, reversed
    m[0, 2], m[0, 3] = -1, data.shape[0] - 1  # file axis 2 -> old axis 0, reversed
    m[3, 3] = 1
    out["PIR"] = (pir, affine @ m)
    return out


@pytest.mark.parametrize(("orientation", "data_format"), [("ras", "ssl4mis"), ("canonical", "ssl4mis"),
                                                          ("legacy", "ssl4mis"), ("canonical", "phantom")])
def test_predict_writes_right_anterior_masks_in_every_voxel_layout(tmp_path: Path, orientation: str,
                                                                   data_format: str):
    """A model that knows the heart in its training frame (the convention, or an older one) writes, through
    ``predict``, the same world-space mask for LPS, RAS and PIR files of one scan, with the RV right-anterior."""
    frame = model_frame(orientation, data_format)
    assert frame is not None
    model = _PositionalSegmenter(frame)
    config = DataConfig(format=data_format, orientation=orientation, target_spacing_mm=0.0)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    data = rng.random((48, 48, 3)).astype(np.float32)  # stored as ACDC stores it: (i, j, z) towards L, P, S
    world_masks = {}
    summaries = []
    for name, (d, a) in _layouts(data, ACDC_AFFINE).items():
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(d, a), str(path))
        scan = read_nifti_scan(path)
        pred = predict_scan(model, scan, tmp_path / f"{name}_seg.nii.gz", data_config=config, image_size=48,
                            labels=LABELS)
        written = nib.load(str(pred.mask_path))
        assert np.allclose(written.affine, a, atol=1e-5)
        check = rv_lv_check(np.asarray(written.dataobj), written.affine, LABELS)  # from the written file alone
        assert check.ok is True, (name, check)
        world_masks[name] = np.moveaxis(read_nifti_scan(pred.mask_path).frame(0), 2, 0)
        summaries.append(summarise(scan, pred.mask, pred.mask_path, LABELS, None))
    for name, mask in world_masks.items():
        np.testing.assert_array_equal(mask, world_masks["LPS"], err_msg=name)
    assert all(s.anatomy_ok is True and anatomy_warning(s) is None for s in summaries)
    rows = list(csv.DictReader(write_predictions_csv(summaries, [], tmp_path / "predictions.csv").open()))
    assert [r["anatomy_check"] for r in rows] == ["ok"] * 3
    assert float(rows[0]["rv_lv_dR_mm"]) > 0 and rows[0]["classes_present"] == "RV MYO LV"


def test_a_turned_prediction_is_flagged_in_the_log_the_csv_and_the_report(tmp_path: Path):
    from sdnet.predict_report import write_report

    data = np.random.default_rng(1).random((40, 40, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, ACDC_AFFINE), str(tmp_path / "scan.nii.gz"))
    scan = read_nifti_scan(tmp_path / "scan.nii.gz")
    mask = np.stack([_two_discs((40, 40, 2), rv=(0.7, 0.6), lv=(0.4, 0.45))] * 3, axis=-1)  # a 3-frame cine
    mask[..., 2][mask[..., 2] == 1] = 0  # no RV in frame 2
    # ACDC's voxel axes point to L and P: RV at larger i, j is left-posterior in world space
    summary = summarise(scan, mask, tmp_path / "scan_seg.nii.gz", LABELS, None)
    assert summary.anatomy_ok is False
    line = anatomy_warning(summary)
    assert line is not None and "\n" not in line and "scan.nii.gz" in line
    assert "not right-anterior" in line and "2 of 3 frames (0, 1)" in line and "RV missing in 1 of 3" in line
    rows = list(csv.DictReader(write_predictions_csv([summary], [("bad.nii.gz", "not readable")],
                                                     tmp_path / "p.csv").open()))
    assert rows[0]["anatomy_check"] == "FAILED" and rows[0]["frames_failed"] == "3"
    assert rows[0]["classes_present"] == "MYO LV" and rows[0]["classes_missing_in_some_frames"] == "RV"
    assert rows[1]["name"] == "bad.nii.gz" and "not readable" in rows[1]["warnings"]
    page = write_report([summary], [], tmp_path / "r.html", checkpoint="x").read_text()
    assert "Anatomical check failed" in page and "FAILED" in page


def test_qc_figures_show_the_radiological_view():
    """Anterior up, the patient's right on the image's left: a convention slice's RV (large rows = right, large
    columns = anterior) appears in the view's upper left."""
    from sdnet.data.orientation import radiological_view

    labels = _two_discs((40, 40, 1), rv=(0.75, 0.65), lv=(0.4, 0.4))[:, :, 0]
    view = radiological_view(labels)
    rv, lv = np.argwhere(view == 1).mean(axis=0), np.argwhere(view == 3).mean(axis=0)
    assert rv[0] < lv[0] and rv[1] < lv[1]  # above (anterior) and to the left (patient's right)
    assert radiological_view(np.zeros((40, 40, 3))).shape == (40, 40, 3)
