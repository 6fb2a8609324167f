"""One orientation convention from reader to written mask (issue 15): re-oriented and transposed copies of a scan
give the same mask in world space; the SSL4MIS reader brings the release's (j, i) slices back to the NIfTI order;
checkpoints from before the convention keep working."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from sdnet.checkpoint import load_checkpoint, load_model, save_checkpoint
from sdnet.config import apply_overrides
from sdnet.data.nifti import load_nifti
from sdnet.data.orientation import canonical_ornt, from_canonical, inverse_ornt, to_canonical
from sdnet.data.readers import read_ssl4mis
from sdnet.inference import predict_nifti
from sdnet.training import Trainer

from ..helpers import tiny_config


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


def test_ssl4mis_slices_arrive_in_the_nifti_voxel_order(tmp_path: Path):
    rng = np.random.default_rng(1)
    volume = rng.random((10, 7, 3)).astype(np.float32)  # (i, j, slice) of the original NIfTI file
    label = rng.integers(0, 4, volume.shape)
    root = _ssl4mis_release(tmp_path / "rel", volume, label)
    _, (vol,) = read_ssl4mis(root)
    np.testing.assert_array_equal(vol.image, np.moveaxis(volume, 2, 0))  # (S, i, j)
    assert vol.label is not None
    np.testing.assert_array_equal(vol.label, np.moveaxis(label, 2, 0))
    _, (old,) = read_ssl4mis(root, orientation="legacy")
    np.testing.assert_array_equal(old.image, np.swapaxes(np.moveaxis(volume, 2, 0), 1, 2))  # as stored (S, j, i)


@pytest.fixture(scope="module")
def tiny_run(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32-px model trained for a few steps; its predictions vary over the image, which is all the test needs."""
    cfg = apply_overrides(tiny_config(tiny_phantom), ["train.epochs=1", "train.steps_per_epoch=3",
                                                     "data.resize=32"])
    run = tmp_path_factory.mktemp("orient") / "run"
    Trainer(cfg, run).fit()
    return run


def _source_volume() -> tuple[np.ndarray, np.ndarray]:
    """An SSL4MIS test volume written back to NIfTI in ACDC's orientation (X, Y, Z), or a synthetic heart-like
    volume when the real data are not here."""
    override = os.environ.get("SDNET_ACDC_SSL4MIS")
    root = Path(override) if override else Path(__file__).resolve().parents[3] / "shared" / "data" / "acdc_ssl4mis"
    if (root / "data" / "patient001_frame01.h5").is_file():
        vol = read_ssl4mis(root, patients=["patient001"])[1][0]
        return np.moveaxis(vol.image, 0, 2), np.diag([1.5625, 1.5625, 10.0, 1.0])
    yy, xx = np.mgrid[:60, :52]
    r = np.hypot(yy - 27.0, (xx - 30.0) * 1.3)
    image = np.stack([np.where(r < 9 + k, 0.9, 0.25) + 0.05 * np.sin(xx / 3.0 + k) for k in range(3)], axis=-1)
    return image.astype(np.float32), np.diag([1.5625, 1.5625, 10.0, 1.0])


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


def test_checkpoint_without_orientation_is_legacy_and_predicts_as_it_was_trained(tiny_run: Path, tmp_path: Path):
    state = load_checkpoint(tiny_run / "best.pt")
    assert state["config"]["data"]["orientation"] == "canonical"
    del state["config"]["data"]["orientation"]  # as written before the convention existed
    state["config"]["data"]["format"] = "ssl4mis"
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, tmp_path / "old.pt")
    model, config, _ = load_model(tmp_path / "old.pt")
    assert config.data.orientation == "legacy"
    labels = {int(k): v for k, v in state["labels"].items()}
    data, affine = _source_volume()
    src = _save(tmp_path / "scan.nii.gz", data, affine)
    legacy_out = load_nifti(predict_nifti(model, src, tmp_path / "legacy_seg.nii.gz", data_config=config.data,
                                          image_size=config.model.image_size, labels=labels), as_labels=True)
    # the same network fed the transposed file in its raw voxel order (legacy, not SSL4MIS), mapped back
    raw = dataclasses.replace(config.data, format="phantom")
    src_t = _save(tmp_path / "scan_t.nii.gz", np.swapaxes(data, 0, 1).copy(), affine @ np.eye(4)[:, [1, 0, 2, 3]])
    direct = load_nifti(predict_nifti(model, src_t, tmp_path / "t_seg.nii.gz", data_config=raw,
                                      image_size=config.model.image_size, labels=labels), as_labels=True,
                        reorient=False)
    assert len(np.unique(legacy_out.data)) >= 2
    np.testing.assert_array_equal(legacy_out.data, np.swapaxes(direct.data, 0, 1))
