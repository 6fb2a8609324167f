"""Tests of the synthetic cardiac phantom (sdnet.data.phantom): determinism, anatomy, modalities, files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sdnet.data.phantom import (
    LABELS,
    MODALITY_RENDERERS,
    TISSUES,
    PhantomConfig,
    PhantomSubject,
    generate_phantom,
    render_subject,
    render_tissue_maps,
    write_phantom,
)
from sdnet.data.phantom.datatypes import phantom_affine

TINY = PhantomConfig(n_subjects=3, image_size=48, n_slices=4, n_phases=3, seed=7)
SMALL = PhantomConfig(n_subjects=2, image_size=64, n_slices=4, n_phases=3, seed=3)


@pytest.fixture(scope="module")
def tiny_subjects() -> list[PhantomSubject]:
    return list(generate_phantom(TINY))


def _assert_same(a: PhantomSubject, b: PhantomSubject) -> None:
    assert a.subject_id == b.subject_id
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.images.keys() == b.images.keys()
    for name in a.images:
        np.testing.assert_array_equal(a.images[name], b.images[name])
    assert a.anatomy == b.anatomy
    assert a.modality_params == b.modality_params
    assert a.lv_volume_ml == b.lv_volume_ml


# ---------------------------------------------------------------------------------------------------------------------
# determinism


def test_same_config_gives_identical_subjects(tiny_subjects: list[PhantomSubject]) -> None:
    _assert_same(render_subject(TINY, 1), tiny_subjects[1])


def test_subject_does_not_depend_on_n_subjects() -> None:
    two = list(generate_phantom(dataclasses.replace(TINY, n_subjects=2)))
    five = list(generate_phantom(dataclasses.replace(TINY, n_subjects=5)))
    assert [s.subject_id for s in five] == [f"phantom_{i:03d}" for i in range(5)]
    _assert_same(two[0], five[0])
    _assert_same(two[1], five[1])


def test_modality_does_not_depend_on_other_modalities(tiny_subjects: list[PhantomSubject]) -> None:
    ct_only = render_subject(dataclasses.replace(TINY, modalities=("CT",)), 0)
    np.testing.assert_array_equal(ct_only.images["CT"], tiny_subjects[0].images["CT"])
    np.testing.assert_array_equal(ct_only.labels, tiny_subjects[0].labels)


def test_different_seed_or_index_differs(tiny_subjects: list[PhantomSubject]) -> None:
    other = render_subject(dataclasses.replace(TINY, seed=TINY.seed + 1), 0)
    assert not np.array_equal(other.labels, tiny_subjects[0].labels)
    assert not np.array_equal(other.images["MR"], tiny_subjects[0].images["MR"])
    assert not np.array_equal(tiny_subjects[0].labels, tiny_subjects[1].labels)


# ---------------------------------------------------------------------------------------------------------------------
# content


def test_shapes_dtypes_and_values(tiny_subjects: list[PhantomSubject]) -> None:
    shape = (TINY.n_phases, TINY.n_slices, TINY.image_size, TINY.image_size)
    for s in tiny_subjects:
        assert s.labels.shape == shape and s.labels.dtype == np.uint8
        assert set(np.unique(s.labels)) <= set(LABELS)
        assert set(s.images) == set(TINY.modalities)
        for image in s.images.values():
            assert image.shape == shape and image.dtype == np.float32
            assert np.isfinite(image).all()
        assert s.images["MR"].min() >= 0.0
        assert -1200.0 < float(np.median(s.images["CT"][:, :, :3, :3])) < -800.0  # air corner in HU
        assert (s.ed_phase, s.es_phase) == (0, TINY.n_phases - 1)
        json.dumps({"anatomy": s.anatomy, "modality_params": s.modality_params, "lv": s.lv_volume_ml})
        assert all(type(v) is float for v in s.anatomy.values())


def test_all_structures_in_mid_slices(tiny_subjects: list[PhantomSubject]) -> None:
    mid = (TINY.n_slices - 1) // 2
    for s in tiny_subjects:
        for p in range(TINY.n_phases):
            assert set(np.unique(s.labels[p, mid])) == {0, 1, 2, 3}, (s.subject_id, p)


def test_rv_absent_at_apex_lv_present_everywhere(tiny_subjects: list[PhantomSubject]) -> None:
    for s in tiny_subjects:
        assert not (s.labels[:, -1] == 1).any()
        assert (s.labels[:, 0] == 1).any()
        assert ((s.labels == 3).sum(axis=(2, 3)) > 0).all()
        rv_area = (s.labels[0] == 1).sum(axis=(1, 2))
        assert rv_area[0] > rv_area[-1]


def test_lv_volume_from_labels_and_contraction(tiny_subjects: list[PhantomSubject]) -> None:
    voxel_ml = TINY.pixel_spacing_mm**2 * TINY.slice_thickness_mm / 1000.0
    for s in tiny_subjects:
        expected = [(s.labels[p] == 3).sum() * voxel_ml for p in range(TINY.n_phases)]
        np.testing.assert_allclose(s.lv_volume_ml, expected)
        assert s.lv_volume_ml[s.ed_phase] > s.lv_volume_ml[s.es_phase]
        assert all(a >= b for a, b in zip(s.lv_volume_ml, s.lv_volume_ml[1:], strict=False))
        ef = 1.0 - s.lv_volume_ml[-1] / s.lv_volume_ml[0]
        assert ef == pytest.approx(s.anatomy["ejection_fraction"], abs=0.12)
        assert s.anatomy["lv_edv_ml"] == pytest.approx(s.lv_volume_ml[0])


def test_myocardium_thickens_and_keeps_its_area() -> None:
    maps = render_tissue_maps(SMALL, 0)
    slice_ = 1
    myo = maps.fraction("myocardium")[:, slice_].sum(axis=(1, 2))
    cavity = (maps.labels[:, slice_] == 3).sum(axis=(1, 2))
    assert cavity[0] > cavity[-1]
    assert myo[-1] == pytest.approx(myo[0], rel=0.15)


def test_tissue_fractions_partition_and_anti_alias() -> None:
    maps = render_tissue_maps(SMALL, 1)
    assert maps.fractions.shape == (len(TISSUES), SMALL.n_phases, SMALL.n_slices, 64, 64)
    np.testing.assert_allclose(maps.fractions.sum(axis=0), 1.0, atol=1e-5)
    partial = (maps.fractions > 0.0) & (maps.fractions < 1.0)
    assert partial.any(axis=0).mean() > 0.02  # edges are anti-aliased
    # labels are consistent with the tissues they come from
    assert (maps.fraction("lv_blood") + maps.fraction("papillary"))[maps.labels == 3].mean() > 0.9
    assert maps.fraction("myocardium")[maps.labels == 2].mean() > 0.8
    assert maps.fraction("rv_blood")[maps.labels == 1].mean() > 0.8
    # unlabelled structures exist: liver in a basal slice only, lungs, bone, aorta, fat
    assert maps.mask("liver")[:, 0].any() and not maps.mask("liver")[:, -1].any()
    for tissue in ("lung", "bone", "marrow", "aorta", "fat", "muscle", "air"):
        assert maps.mask(tissue).any(), tissue


def test_mr_and_ct_share_labels_with_different_tissue_ordering() -> None:
    maps = render_tissue_maps(SMALL, 0)
    subject = render_subject(SMALL, 0)
    np.testing.assert_array_equal(subject.labels, maps.labels)
    fat, myo, blood, lung = (maps.mask(t) for t in ("fat", "myocardium", "lv_blood", "lung"))
    mr, ct = subject.images["MR"], subject.images["CT"]
    assert mr[fat].mean() > 2.0 * mr[myo].mean()  # MR: fat bright, myocardium dark
    assert ct[fat].mean() < ct[myo].mean() - 100.0  # CT: fat negative HU, myocardium ~100 HU
    assert mr[blood].mean() > mr[myo].mean() and ct[blood].mean() > ct[myo].mean() + 100.0
    assert mr[lung].mean() < mr[myo].mean() and ct[lung].mean() < -600.0
    assert subject.modality_params["CT"]["intensity_fat"] < 0 < subject.modality_params["MR"]["intensity_fat"]


def test_background_label_has_image_content(tiny_subjects: list[PhantomSubject]) -> None:
    for s in tiny_subjects:
        maps = render_tissue_maps(TINY, int(s.subject_id[-3:]))
        body_background = (s.labels == 0) & (maps.fraction("air") < 0.01)
        assert body_background.mean() > 0.2
        for name in ("MR", "CT"):
            sigma = s.modality_params[name]["noise_sigma"]
            assert s.images[name][body_background].std() > 5.0 * sigma, (s.subject_id, name)


def test_bold_is_mr_with_a_subtle_local_myocardial_change() -> None:
    cfg = dataclasses.replace(SMALL, modalities=("MR", "BOLD"))
    subject = render_subject(cfg, 0)
    maps = render_tissue_maps(cfg, 0)
    mr, bold = subject.images["MR"], subject.images["BOLD"]
    changed = np.abs(bold - mr) > 1e-3
    assert changed.any()
    assert (maps.fraction("myocardium")[changed] > 0).all()  # only myocardial pixels change
    assert changed.sum() < 0.7 * (maps.fraction("myocardium") > 0).sum()  # ... within a sector
    params = subject.modality_params["BOLD"]
    assert -0.15 <= params["bold_factor"] <= -0.05
    assert bold[changed].mean() < mr[changed].mean()
    mr_params = {k: v for k, v in params.items() if not k.startswith("bold_")}
    assert mr_params == subject.modality_params["MR"]


def test_anatomy_varies_between_subjects() -> None:
    anatomies = [render_tissue_maps(TINY, i).anatomy for i in range(6)]
    for key in (
        "heart_rotation_deg",
        "lv_radius_mm",
        "wall_thickness_mm",
        "ejection_fraction",
        "body_semi_x_mm",
        "heart_offset_x_mm",
        "rv_scale",
    ):
        assert len({a[key] for a in anatomies}) == 6, key


# ---------------------------------------------------------------------------------------------------------------------
# files


def test_write_phantom_round_trip(tmp_path: Path, tiny_subjects: list[PhantomSubject]) -> None:
    cfg = dataclasses.replace(TINY, n_subjects=2)
    meta_path = write_phantom(tmp_path / "ph", cfg)
    assert meta_path == tmp_path / "ph" / "phantom.json"
    assert not (tmp_path / "ph" / "phantom.json.tmp").exists()
    meta = json.loads(meta_path.read_text())
    assert meta["format"] == "sdnet-phantom" and meta["version"] == 2
    assert meta["labels"] == {"0": "background", "1": "RV", "2": "MYO", "3": "LV"}
    assert meta["modalities"] == ["MR", "CT"]
    assert meta["spacing_mm"] == [2.0, 2.0, 8.0]
    assert PhantomConfig(**meta["config"]) == cfg
    assert [e["id"] for e in meta["subjects"]] == ["phantom_000", "phantom_001"]
    spacing = (cfg.pixel_spacing_mm, cfg.pixel_spacing_mm, cfg.slice_thickness_mm)
    for entry, subject in zip(meta["subjects"], tiny_subjects, strict=False):
        assert entry["n_phases"] == 3 and entry["n_slices"] == 4
        assert (entry["ed_phase"], entry["es_phase"]) == (0, 2)
        assert entry["lv_volume_ml"] == subject.lv_volume_ml
        assert entry["anatomy"] == subject.anatomy
        assert set(entry["files"]) == {"label", "MR", "CT"}
        for key, files in entry["files"].items():
            assert files == [f"{entry['id']}/{entry['id']}_{key}_phase{p:02d}.nii.gz" for p in range(3)]
            for p, rel in enumerate(files):
                img = nib.load(str(tmp_path / "ph" / rel))
                data = np.asanyarray(img.dataobj)
                assert data.shape == (48, 48, 4)
                assert img.header.get_zooms() == pytest.approx(spacing)
                np.testing.assert_allclose(img.affine, phantom_affine(spacing))  # rows -A, columns -R, slices -S
                expected = subject.labels[p] if key == "label" else subject.images[key][p]
                assert data.dtype == (np.uint8 if key == "label" else np.float32)
                np.testing.assert_array_equal(np.moveaxis(data, 2, 0), expected)


def test_write_phantom_with_progress(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, n_subjects=1, image_size=32, n_slices=3, n_phases=2, modalities=("CT",))
    meta = json.loads(write_phantom(tmp_path, cfg, progress=True).read_text())
    assert meta["modalities"] == ["CT"] and len(meta["subjects"]) == 1
    assert all((tmp_path / f).is_file() for f in meta["subjects"][0]["files"]["CT"])


# ---------------------------------------------------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize(
    "changes",
    [
        {"image_size": 16},
        {"n_phases": 1},
        {"n_slices": 2},
        {"n_subjects": 0},
        {"pixel_spacing_mm": 0.0},
        {"slice_thickness_mm": -1.0},
        {"modalities": ("MR", "PET")},
        {"modalities": ()},
        {"modalities": ("MR", "MR")},
        {"seed": -1},
    ],
)
def test_bad_config_raises(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="PhantomConfig"):
        PhantomConfig(**changes)  # type: ignore[arg-type]


def test_config_accepts_list_modalities_and_known_renderers() -> None:
    assert PhantomConfig(modalities=["CT", "BOLD"]).modalities == ("CT", "BOLD")  # type: ignore[arg-type]
    assert {"MR", "CT", "BOLD"} <= set(MODALITY_RENDERERS)
    assert PhantomConfig().modalities == ("MR", "CT")
