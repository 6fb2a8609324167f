"""LV volume from s (paper §5.2): volumes in mL against a direct count, statistics against scipy, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from sdnet.analysis.volume import VolumeEstimate, compare_volumes, lv_volumes, paired_difference
from sdnet.cli import main
from sdnet.config import apply_overrides, save_config
from sdnet.data.pipeline import PreparedVolume
from sdnet.models import build_sdnet
from sdnet.training import Trainer

from ..helpers import tiny_config


def _volume(spacing: tuple[float, float, float] | None, seed: int = 0) -> PreparedVolume:
    gen = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 4, (3, 32, 32), generator=gen)
    image = torch.rand(3, 1, 32, 32, generator=gen) * 2 - 1
    return PreparedVolume(subject_id=f"s{seed}", phase=0, image=image, label=label, spacing=spacing, source="toy")


def test_lv_volumes_match_a_direct_count():
    torch.manual_seed(0)
    model = build_sdnet(apply_overrides(tiny_config(), ["model.area_regressor=true"]).model)
    volumes = [_volume((1.5, 1.5, 8.0)), _volume(None, seed=1)]
    est = lv_volumes(model, volumes, class_index=3)
    count = int((volumes[0].label.numpy() == 3).sum())
    assert est[0].true == pytest.approx(count * 1.5 * 1.5 * 8.0 / 1000.0) and est[0].unit == "mL"
    assert est[1].true == pytest.approx(float((volumes[1].label.numpy() == 3).sum())) and est[1].unit == "voxels"
    model.train()
    est = lv_volumes(model, volumes, class_index=3)
    assert model.training  # mode restored
    labels = model.eval().segment(volumes[0].image).labels
    assert est[0].segmented == pytest.approx(float((labels == 3).sum()) * 1.5 * 1.5 * 8.0 / 1000.0)
    assert all(np.isfinite(e.regressed) and e.regressed >= 0 for e in est)
    plain = lv_volumes(build_sdnet(tiny_config().model), volumes[:1], class_index=3)
    assert np.isnan(plain[0].regressed)


def test_statistics_match_scipy():
    true = [120.0, 135.0, 150.0, 142.0, 128.0]
    estimate = [118.0, 140.0, 149.0, 150.0, 131.0]
    estimates = [VolumeEstimate(subject_id=str(i), phase=0, modality="", true=t, regressed=e, segmented=t,
                                unit="mL") for i, (t, e) in enumerate(zip(true, estimate, strict=True))]
    c = compare_volumes(estimates, "regressed")
    ref = stats.ttest_rel(estimate, true)
    assert c.t == pytest.approx(ref.statistic) and c.p == pytest.approx(ref.pvalue)
    assert c.mean_error == pytest.approx(np.mean(np.subtract(estimate, true)))
    assert c.mean_abs_error == pytest.approx(np.mean(np.abs(np.subtract(estimate, true))))
    assert c.estimate_std == pytest.approx(np.std(estimate, ddof=1)) and c.n == 5
    same = compare_volumes(estimates, "segmented")
    assert same.mean_abs_error == 0 and np.isnan(same.p)  # identical values: no test
    diff, _, p = paired_difference([0.5, 0.6, 0.7], [0.6, 0.6, 0.9])
    assert diff == pytest.approx(0.1) and p == pytest.approx(stats.ttest_rel([0.6, 0.6, 0.9], [0.5, 0.6, 0.7]).pvalue)
    with pytest.raises(ValueError, match="units"):
        compare_volumes([estimates[0], VolumeEstimate("x", 0, "", 1.0, 1.0, 1.0, "voxels")])


def test_analyse_volume_command(tiny_phantom: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    base = tmp_path / "base"
    Trainer(tiny_config(tiny_phantom, max_steps=3, epochs=1), base).fit()
    cfg_path = tmp_path / "tiny.yaml"
    save_config(tiny_config(tiny_phantom, max_steps=3, epochs=1), cfg_path)
    assert main(["train", "--config", str(cfg_path), "--init-from", str(base), "--out", str(tmp_path / "tuned"),
                 "--no-progress", "--set", "model.area_regressor=true", "--set", "loss.vol=1",
                 "--set", "data.volume_subjects=1"]) == 0
    assert "subjects with volume labels" in capsys.readouterr().out
    out = tmp_path / "analysis"
    assert main(["analyse", "volume", "--checkpoint", str(tmp_path / "tuned"), "--baseline", str(base),
                 "--out", str(out)]) == 0
    numbers = json.loads((out / "volume.json").read_text())
    assert numbers["unit"] == "mL" and numbers["has_regressor"]  # the phantom knows its voxel size
    assert numbers["regressed"]["n"] == numbers["segmented"]["n"] > 0
    assert numbers["regressed"]["true_mean"] > 0
    change = numbers["dice_change"]
    assert set(change["per_class"]) == {"RV", "MYO", "LV"}
    assert -1 <= change["mean_change"] <= 1 and 0 <= change["before"] <= 1 and 0 <= change["after"] <= 1
    assert (out / "volume.png").stat().st_size > 1000
    assert len((out / "volumes.csv").read_text().splitlines()) == numbers["regressed"]["n"] + 1
    assert "area regressor on s" in capsys.readouterr().out
