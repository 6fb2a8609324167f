"""`sdnet indices`: volumes, EDV/ESV/SV/EF, LV mass, ED/ES choice, unknown spacing, Bland–Altman, bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sdnet.analysis.indices import bland_altman, read_mask_series, subject_indices
from sdnet.cli import main
from sdnet.errors import DataError

LABELS = {"RV": 1, "MYO": 2, "LV": 3}


def _mask(lv: int, rv: int, myo: int, shape=(10, 10, 4)) -> np.ndarray:
    m = np.zeros(int(np.prod(shape)), np.uint8)
    m[:lv] = 3
    m[lv:lv + rv] = 1
    m[lv + rv:lv + rv + myo] = 2
    return m.reshape(shape)


def _save(path: Path, data: np.ndarray, zooms=(1.5, 1.25, 8.0), units: str | None = "mm") -> Path:
    image = nib.Nifti1Image(data, np.diag([*(*zooms, 1.0, 1.0)[:3], 1.0]))
    if units is None:
        image.header.set_xyzt_units(0, 0)
    else:
        image.header.set_xyzt_units(units)
    nib.save(image, str(path))
    return path


def test_indices_from_known_voxel_counts(tmp_path: Path):
    voxel_ml = 1.5 * 1.25 * 8.0 / 1000
    _save(tmp_path / "p1_frame01.nii.gz", _mask(lv=100, rv=80, myo=60))  # ED (frame 1 -> phase 0)
    _save(tmp_path / "p1_frame05.nii.gz", _mask(lv=40, rv=50, myo=70))  # ES
    _save(tmp_path / "p1_frame09.nii.gz", _mask(lv=70, rv=60, myo=65))
    (series,) = read_mask_series([tmp_path], LABELS)
    assert [p.phase for p in series.phases] == [0, 4, 8]
    r = subject_indices(series)
    assert (r.ed, r.es, r.ed_es_from) == (0, 4, "volume curve")
    assert r.values["LV_EDV"] == pytest.approx(100 * voxel_ml)
    assert r.values["LV_ESV"] == pytest.approx(40 * voxel_ml)
    assert r.values["LV_SV"] == pytest.approx(60 * voxel_ml)
    assert r.values["LV_EF"] == pytest.approx(60.0)
    assert r.values["RV_EF"] == pytest.approx(100 * (80 - 50) / 80)
    assert r.values["LV_mass"] == pytest.approx(1.05 * 60 * voxel_ml)
    # ED/ES from an ACDC Info.cfg instead of the volume curve
    (tmp_path / "info" / "p1").mkdir(parents=True)
    (tmp_path / "info" / "p1" / "Info.cfg").write_text("ED: 1\nES: 9\nGroup: NOR\n")
    (series,) = read_mask_series([tmp_path], LABELS, info_root=tmp_path / "info")
    r = subject_indices(series)
    assert (r.ed, r.es, r.ed_es_from) == (0, 8, "Info.cfg")
    assert r.values["LV_EF"] == pytest.approx(30.0)
    (series,) = read_mask_series([tmp_path], LABELS, ed_es=(8, 4))  # given phases (SSL4MIS: 0,1)
    r = subject_indices(series)
    assert (r.ed, r.es, r.ed_es_from) == (8, 4, "given") and r.values["LV_EF"] == pytest.approx(100 * 30 / 70)


def test_unknown_spacing_gives_ef_but_no_millilitres(tmp_path: Path, capsys):
    cine = np.stack([_mask(90, 50, 40), _mask(30, 20, 45)], axis=-1)
    _save(tmp_path / "case.nii.gz", cine, zooms=(1.0, 1.0, 1.0), units=None)
    (series,) = read_mask_series([tmp_path / "case.nii.gz"], LABELS)
    r = subject_indices(series)
    assert r.volume_unit == "voxels" and math.isnan(r.values["LV_EDV"]) and math.isnan(r.values["LV_mass"])
    assert r.values["LV_EF"] == pytest.approx(100 * 60 / 90)
    assert main(["indices", "--masks", str(tmp_path / "case.nii.gz"), "--out", str(tmp_path / "o")]) == 0
    assert "no voxel size" in capsys.readouterr().out
    # given by the user, the spacing makes millilitres again
    (series,) = read_mask_series([tmp_path / "case.nii.gz"], LABELS, spacing=(2.0, 2.0, 10.0))
    assert subject_indices(series).values["LV_EDV"] == pytest.approx(90 * 0.04)


def test_phantom_truth_is_reproduced_from_its_label_maps(tiny_phantom: Path):
    meta = json.loads((tiny_phantom / "phantom.json").read_text())
    pattern = r"(?P<subject>phantom_\d+)_label_phase(?P<phase>\d+)"
    files = [tiny_phantom / rel for s in meta["subjects"] for rel in s["files"]["label"]]
    series = read_mask_series(files, LABELS, pattern=pattern)
    truth = {s["id"]: s for s in meta["subjects"]}
    for s in series:
        np.testing.assert_allclose([p.volumes["LV"] for p in s.phases], truth[s.subject]["lv_volume_ml"], rtol=1e-6)
        r = subject_indices(s)
        lv = truth[s.subject]["lv_volume_ml"]
        assert r.values["LV_EF"] == pytest.approx(100 * (max(lv) - min(lv)) / max(lv))


def test_bland_altman_numbers():
    ref = np.array([50.0, 60.0, 55.0, 70.0, 65.0])
    test = ref + np.array([1.0, -1.0, 2.0, 0.0, 3.0])
    a = bland_altman("LV_EF", test, ref)
    d = test - ref
    assert a.n == 5 and a.bias == pytest.approx(d.mean())
    assert a.loa_high - a.loa_low == pytest.approx(2 * 1.96 * d.std(ddof=1))
    assert a.mean_absolute_difference == pytest.approx(np.abs(d).mean())
    assert a.pearson_r == pytest.approx(np.corrcoef(test, ref)[0, 1])


def test_cli_agreement_against_a_reference(tmp_path: Path, capsys):
    for folder, shift in (("truth", 0), ("pred", 5)):
        (tmp_path / folder).mkdir()
        for k, (ed, es) in enumerate([(100, 40), (120, 70), (90, 45)]):
            _save(tmp_path / folder / f"s{k}_frame01.nii.gz", _mask(ed + shift, 30, 50))
            _save(tmp_path / folder / f"s{k}_frame02.nii.gz", _mask(es, 20, 50))
    assert main(["indices", "--masks", str(tmp_path / "pred"), "--reference", str(tmp_path / "truth"),
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| LV_EDV (mL) | 3 |" in out
    assert "| LV_volume_all_phases (mL) | 6 |" in out  # every (subject, phase) pair
    for name in ("indices.csv", "volumes.csv", "indices.md", "volume_curves.png", "agreement.csv", "agreement.md",
                 "bland_altman.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name


def test_bad_inputs(tmp_path: Path, capsys):
    _save(tmp_path / "flat.nii.gz", np.zeros((8, 8), np.uint8), zooms=(1.0, 1.0))
    with pytest.raises(DataError, match="a 2D label map"):
        read_mask_series([tmp_path / "flat.nii.gz"], LABELS)
    (tmp_path / "nolv").mkdir()
    for k in (1, 2):
        _save(tmp_path / "nolv" / f"p_frame0{k}.nii.gz", _mask(0, 30, 20))
    with pytest.raises(DataError, match="no voxel has the LV label 3"):
        read_mask_series([tmp_path / "nolv"], LABELS)
    with pytest.raises(DataError, match="name no LV"):
        read_mask_series([tmp_path / "nolv"], {"RV": 1})
    assert main(["indices", "--masks", str(tmp_path / "flat.nii.gz"), "--out", str(tmp_path / "o")]) == 2
    assert "sdnet: error:" in capsys.readouterr().err
    _save(tmp_path / "single.nii.gz", _mask(10, 5, 5))
    with pytest.raises(DataError, match="one phase only"):
        subject_indices(read_mask_series([tmp_path / "single.nii.gz"], LABELS)[0])
