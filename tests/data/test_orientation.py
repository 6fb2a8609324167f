"""One orientation convention from reader to written mask (issues 15, 23): re-oriented and transposed copies of a
scan give the same mask in world space; the SSL4MIS reader brings the release's (j, i) slices to what the ACDC NIfTI
file gives through the convention; checkpoints trained in older frames keep working.

Anatomy (the RV right-anterior of the LV in world space) is tested in ``test_anatomy.py``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from sdnet.checkpoint import load_checkpoint, load_model, save_checkpoint
from sdnet.config import DataConfig, apply_overrides
from sdnet.data.nifti import load_nifti
from sdnet.data.orientation import (
    ANTI_TRANSPOSE,
    HALF_TURN,
    IDENTITY,
    InPlaneMap,
    canonical_ornt,
    from_canonical,
    inverse_ornt,
    model_frame,
    to_canonical,
)
from sdnet.data.pipeline import read_volumes
from sdnet.data.readers import read_ssl4mis
from sdnet.inference import predict_nifti
from sdnet.training import Trainer

from ..helpers import ssl4mis_root, tiny_config


def _rotation(degrees: float, axis: int) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _oblique_affine(spacing: tuple[float, float, float] = (1.4, 1.7, 8.0)) -> np.ndarray:
    """A short-axis-like oblique geometry (rotations well away from 45°, so the closest world axes are clear)."""
    a = np.eye(4)
    a[:3, :3] = _rotation(25, 2) @ _rotation(-20, 0) @ np.diag(spacing)
    a[:3, 3] = (-80.0, 12.0, 35.0)
    return a


def _copies(data: np.ndarray, affine: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The same scan stored in other voxel orders, each with the affine that keeps every voxel's world position."""
    def flip(d: np.ndarray, a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        t = np.eye(4)
        t[axis, axis], t[axis, 3] = -1, d.shape[axis] - 1
        return np.flip(d, axis).copy(), a @ t

    def swap_in_plane(d: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.eye(4)[:, [1, 0, 2, 3]]
        return np.swapaxes(d, 0, 1).copy(), a @ t

    out = {"original": (data, affine), "flip_i": flip(data, affine, 0), "flip_j": flip(data, affine, 1),
           "flip_slices": flip(data, affine, 2), "transposed": swap_in_plane(data, affine)}
    out["transposed_flipped"] = flip(*swap_in_plane(*flip(data, affine, 1)), 0)
    return out


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, 1)
    image.set_sform(affine, 2)
    nib.save(image, str(path))
    return path


def test_every_voxel_order_reaches_the_library_as_one_array(tmp_path: Path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(12, 9, 4)).astype(np.float32)
    affine = _oblique_affine()
    ref = None
    for name, (d, a) in _copies(data, affine).items():
        vol = load_nifti(_save(tmp_path / f"{name}.nii.gz", d, a))
        if ref is None:
            ref = vol
            continue
        np.testing.assert_array_equal(vol.data, ref.data, err_msg=name)
        np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-5, err_msg=name)
        assert vol.spacing == pytest.approx(ref.spacing, abs=1e-5), name
        # and back onto the file's own grid, exactly
        np.testing.assert_array_equal(from_canonical(vol.data, vol.ornt), d, err_msg=name)
    assert ref is not None
    # the convention: slice axis kept; in-plane axes ordered by world axis and pointing to + along it
    io = nib.orientations.io_orientation(ref.affine)
    assert io[0, 0] < io[1, 0] and (io[:, 1] == 1).all()


def test_inverse_orientation_transform_undoes_it():
    for ornt in (canonical_ornt(_oblique_affine()), np.array([[1, -1], [0, 1], [2, -1]], dtype=float)):
        data = np.arange(3 * 4 * 5).reshape(3, 4, 5)
        moved = nib.orientations.apply_orientation(data, ornt)
        np.testing.assert_array_equal(nib.orientations.apply_orientation(moved, inverse_ornt(ornt)), data)
    # a 4D cine keeps its time axis
    cine = np.zeros((5, 6, 3, 7))
    out, _, _ = to_canonical(cine, _copies(cine[..., 0], _oblique_affine())["transposed"][1])
    assert out.shape == (6, 5, 3, 7)


def _ssl4mis_release(root: Path, nifti_volume: np.ndarray, label: np.ndarray) -> Path:
    """An SSL4MIS-like release of one NIfTI volume (X, Y, Z) as SimpleITK writes it: arrays (Z, Y, X)."""
    (root / "data").mkdir(parents=True)
    with h5py.File(root / "data" / "patient001_frame01.h5", "w") as f:
        f["image"] = np.transpose(nifti_volume, (2, 1, 0))
        f["label"] = np.transpose(label, (2, 1, 0)).astype(np.uint8)
    return root


ACDC_AFFINE = np.diag([-1.5625, -1.5625, 10.0, 1.0])
"""The ACDC NIfTI files' geometry: axis-aligned, both in-plane voxel axes towards -x/-y (L, P; docs/orientation.md)."""


def test_ssl4mis_slices_arrive_as_the_acdc_nifti_file_does(tmp_path: Path):
    rng = np.random.default_rng(1)
    volume = rng.random((10, 7, 3)).astype(np.float32)  # (i, j, slice) of the original NIfTI file
    label = rng.integers(0, 4, volume.shape)
    root = _ssl4mis_release(tmp_path / "rel", volume, label)
    _, (vol,) = read_ssl4mis(root)
    nifti = load_nifti(_save(tmp_path / "acdc.nii.gz", volume, ACDC_AFFINE))  # the file, through the convention
    np.testing.assert_array_equal(vol.image, np.moveaxis(nifti.data, 2, 0))
    np.testing.assert_array_equal(vol.image, np.moveaxis(volume[::-1, ::-1], 2, 0))  # (S, i, j), both flipped
    assert vol.label is not None
    np.testing.assert_array_equal(vol.label, np.moveaxis(label[::-1, ::-1], 2, 0))
    _, (old,) = read_ssl4mis(root, orientation="legacy")
    np.testing.assert_array_equal(old.image, np.swapaxes(np.moveaxis(volume, 2, 0), 1, 2))  # as stored (S, j, i)


def test_in_plane_maps_invert_and_keep_world_positions():
    rng = np.random.default_rng(2)
    data = rng.random((5, 7, 3))
    affine = _oblique_affine()
    for transpose in (False, True):
        for flip_rows in (False, True):
            for flip_cols in (False, True):
                m = InPlaneMap(transpose, flip_rows, flip_cols)
                moved = m.apply(data, axes=(0, 1))
                np.testing.assert_array_equal(m.inverse().apply(moved, axes=(0, 1)), data)
                new_affine = m.affine(affine, (5, 7))
                # the voxel holding the maximum keeps its world position
                old_index = np.unravel_index(np.argmax(data), data.shape)
                new_index = np.unravel_index(np.argmax(moved), moved.shape)
                np.testing.assert_allclose(new_affine @ [*new_index, 1], affine @ [*old_index, 1], atol=1e-9)
    assert model_frame("ras", "ssl4mis") == IDENTITY
    assert model_frame("canonical", "ssl4mis") == HALF_TURN and model_frame("canonical", "acdc") == IDENTITY
    assert model_frame("canonical", "phantom") == ANTI_TRANSPOSE
    assert model_frame("legacy", "ssl4mis") == ANTI_TRANSPOSE and model_frame("legacy", "nnunet") is None


@pytest.fixture(scope="module")
def tiny_run(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32-px model trained for a few steps; its predictions vary over the image, which is all the test needs."""
    cfg = apply_overrides(tiny_config(tiny_phantom), ["train.epochs=1", "train.steps_per_epoch=3",
                                                     "data.resize=32"])
    run = tmp_path_factory.mktemp("orient") / "run"
    Trainer(cfg, run).fit()
    return run


def _source_volume() -> tuple[np.ndarray, np.ndarray]:
    """An SSL4MIS test volume written back to NIfTI as the ACDC file stores it ((X, Y, Z) towards L, P, S, with
    ACDC's header), or a synthetic heart-like volume when the real data are not here."""
    root = ssl4mis_root()
    if (root / "data" / "patient001_frame01.h5").is_file():
        vol = read_ssl4mis(root, patients=["patient001"])[1][0]  # (S, H, W) towards R, A
        return np.ascontiguousarray(np.moveaxis(vol.image, 0, 2)[::-1, ::-1]), ACDC_AFFINE
    yy, xx = np.mgrid[:60, :52]
    r = np.hypot(yy - 27.0, (xx - 30.0) * 1.3)
    image = np.stack([np.where(r < 9 + k, 0.9, 0.25) + 0.05 * np.sin(xx / 3.0 + k) for k in range(3)], axis=-1)
    return image.astype(np.float32), ACDC_AFFINE


def test_reoriented_copies_get_the_same_mask_in_world_space(tiny_run: Path, tmp_path: Path):
    model, config, state = load_model(tiny_run)
    labels = {int(k): v for k, v in state["labels"].items()}
    data, acdc_affine = _source_volume()
    for geometry, affine in (("acdc", acdc_affine), ("oblique", _oblique_affine((1.5625, 1.5625, 10.0)))):
        masks = {}
        for name, (d, a) in _copies(data, affine).items():
            src = _save(tmp_path / f"{geometry}_{name}.nii.gz", d, a)
            out = predict_nifti(model, src, tmp_path / f"{geometry}_{name}_seg.nii.gz", data_config=config.data,
                                image_size=config.model.image_size, labels=labels)
            written = nib.load(str(out))
            assert written.shape == d.shape  # on the input's own grid ...
            np.testing.assert_allclose(written.get_qform(), nib.load(str(src)).get_qform(), atol=1e-6)
            np.testing.assert_allclose(written.get_sform(), a, atol=1e-6)  # ... with the input's header
            assert int(written.header["sform_code"]) == 2 and int(written.header["qform_code"]) == 1
            masks[name] = load_nifti(out, as_labels=True)  # in the convention: comparable voxel for voxel
        ref = masks["original"]
        assert len(np.unique(ref.data)) >= 2, "the model predicts one class only: the test would be vacuous"
        for name, mask in masks.items():
            np.testing.assert_allclose(mask.affine, ref.affine, atol=1e-4)  # float32 header storage
            assert np.array_equal(mask.data, ref.data), f"{geometry}/{name}: mask differs in world space"


@pytest.mark.parametrize(("orientation", "data_format"), [(None, "ssl4mis"), ("canonical", "ssl4mis"),
                                                          ("canonical", "phantom"), ("canonical", "acdc")])
def test_checkpoints_of_older_frames_predict_as_they_were_trained(
    tiny_run: Path, tmp_path: Path, orientation: str | None, data_format: str
):
    """A checkpoint of an older frame (no data.orientation = legacy; issue 15's ``canonical``) is fed the slices
    it was trained on: its mask equals that of the same network fed, in raw voxel order, a copy of the file stored in
    the model's frame (the map of sdnet.data.orientation.model_frame), mapped back to world space."""
    state = load_checkpoint(tiny_run / "best.pt")
    assert state["config"]["data"]["orientation"] == "ras"
    if orientation is None:
        del state["config"]["data"]["orientation"]  # as written before the convention existed
    else:
        state["config"]["data"]["orientation"] = orientation
    state["config"]["data"]["format"] = data_format
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, tmp_path / "old.pt")
    model, config, _ = load_model(tmp_path / "old.pt")
    assert config.data.orientation == (orientation or "legacy")
    labels = {int(k): v for k, v in state["labels"].items()}
    data, affine = _source_volume()
    src = _save(tmp_path / "scan.nii.gz", data, affine)
    old_out = load_nifti(predict_nifti(model, src, tmp_path / "old_seg.nii.gz", data_config=config.data,
                                       image_size=config.model.image_size, labels=labels), as_labels=True)
    frame = model_frame(config.data.orientation, data_format)
    assert frame is not None
    canonical = load_nifti(src)
    stored = frame.apply(canonical.data, axes=(0, 1))  # the scan as the model saw its training slices
    src_t = _save(tmp_path / "scan_t.nii.gz", stored, frame.affine(canonical.affine, canonical.data.shape[:2]))
    raw = dataclasses.replace(config.data, format="phantom", orientation="legacy")  # raw voxel order
    direct = load_nifti(predict_nifti(model, src_t, tmp_path / "t_seg.nii.gz", data_config=raw,
                                      image_size=config.model.image_size, labels=labels), as_labels=True,
                        reorient=False)
    assert len(np.unique(old_out.data)) >= 2
    np.testing.assert_array_equal(old_out.data, frame.inverse().apply(direct.data, axes=(0, 1)))


def test_the_pipeline_reads_each_frame_as_its_checkpoints_saw_it(tmp_path: Path):
    """evaluate reads the data through the pipeline in the checkpoint's frame: SSL4MIS as stored for ``legacy``,
    transposed only for issue 15's ``canonical``, the ACDC file's convention for ``ras``."""
    rng = np.random.default_rng(3)
    volume = rng.random((10, 7, 3)).astype(np.float32)  # (i, j, slice) of the ACDC NIfTI file
    root = _ssl4mis_release(tmp_path / "rel", volume, rng.integers(0, 4, volume.shape))
    stored = np.transpose(volume, (2, 1, 0))  # (S, j, i) as the release holds it
    for orientation, expected in (("legacy", stored), ("canonical", np.swapaxes(stored, 1, 2)),
                                  ("ras", np.moveaxis(volume[::-1, ::-1], 2, 0))):
        config = DataConfig(root=str(root), format="ssl4mis", orientation=orientation)  # type: ignore[arg-type]
        (vol,) = read_volumes(config)[1]
        np.testing.assert_array_equal(vol.image, expected, err_msg=orientation)
