"""``sdnet analyse``: the analyses of a trained checkpoint on its own split, end to end on a tiny MR+CT phantom."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sdnet.analysis.probes import modality_probe
from sdnet.analysis.run_io import encode_mu, load_analysis_input, slice_labels
from sdnet.cli import main
from sdnet.training import Trainer

from ..helpers import tiny_config


@pytest.fixture(scope="module")
def mrct_run(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDNet trained for a few steps on MR and CT renderings of the tiny phantom."""
    cfg = tiny_config(tiny_phantom, max_steps=4, epochs=1)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, modality="MR+CT", target_spacing_mm=0.0))
    run = tmp_path_factory.mktemp("mrct") / "run"
    Trainer(cfg, run, progress=False).fit()
    return run


def test_analyse_commands_write_numbers_and_figures(mrct_run: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "analysis"
    assert main(["analyse", "transfer", "--checkpoint", str(mrct_run), "--out", str(out)]) == 0
    transfer = json.loads((out / "transfer.json").read_text())["directions"]
    assert set(transfer) == {"MR->CT", "CT->MR"}
    assert all(np.isfinite(d["psnr"][0]) and -1 <= d["ssim"][0] <= 1 for d in transfer.values())
    assert (out / "transfer.png").stat().st_size > 1000 and "PSNR transfer" in capsys.readouterr().out

    assert main(["analyse", "modality", "--checkpoint", str(mrct_run), "--out", str(out)]) == 0
    modality = json.loads((out / "modality.json").read_text())
    probe = modality["probe"]
    assert 0 <= probe["accuracy"] <= 1 and len(probe["per_dimension_accuracy"]) == 4
    assert probe["chance"] == pytest.approx(0.5)  # test subjects seen in both modalities
    assert 0 <= modality["distance_correlation_s_z"] <= 1

    assert main(["analyse", "disentanglement", "--checkpoint", str(mrct_run), "--out", str(out)]) == 0
    dis = json.loads((out / "disentanglement.json").read_text())
    assert len(dis["s_invariance"]["same_anatomy_dice"]) == 4  # one Dice per anatomy channel
    hard = dis["s_invariance_partition"]  # the argmax partition: each pixel in one channel
    assert len(hard["same_anatomy_dice"]) == 4 and 0 <= hard["same_anatomy_mean"] <= 1
    assert set(dis["r2_z_to_modality_params"]) == {"MR", "CT"} and len(dis["r2_z_to_anatomy"]) == 8
    assert all(v <= 1 for v in dis["r2_s_to_anatomy"].values() if v == v)

    assert main(["analyse", "arithmetic", "--checkpoint", str(mrct_run), "--out", str(out), "--images", "2"]) == 0
    arithmetic = json.loads((out / "arithmetic.json").read_text())
    assert set(arithmetic["channels"]) == {"RV", "MYO", "LV"} and len(arithmetic["permutation"]) == 4
    assert len(arithmetic["posterior_variance_per_dimension"]) == 4 and all(
        v > 0 for v in arithmetic["posterior_variance_per_dimension"]) and min(arithmetic["kl_per_dimension"]) >= 0
    for name in ("arithmetic.png", "interpolation.png", "arithmetic.md", "modality.md", "transfer.md",
                 "disentanglement.md"):
        assert (out / name).stat().st_size > 0, name


def test_a_modality_encoder_that_ignores_its_input_gives_chance_accuracy(mrct_run: Path):
    """The probe can fail: when μ is the same for every image, the modality cannot be read from it."""
    data = load_analysis_input(mrct_run, modality="MR+CT")
    with torch.no_grad():
        head = data.model.modality_encoder.mu
        head.weight.zero_()
        head.bias.fill_(0.3)
    mu_train, _, _ = encode_mu(data.model, data.train)
    mu_test, _, _ = encode_mu(data.model, data.test)
    probe = modality_probe(mu_train, slice_labels(data.train, "modality"), mu_test,
                           slice_labels(data.test, "modality"))
    assert probe.accuracy == pytest.approx(probe.chance, abs=1e-9)


def test_analyses_refuse_what_they_cannot_do(mrct_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["analyse", "modality", "--checkpoint", str(mrct_run), "--modality", "MR",
                 "--out", str(tmp_path)]) == 2
    assert "two or more modalities" in capsys.readouterr().err
    assert main(["analyse", "transfer", "--checkpoint", str(mrct_run), "--modalities", "MR",
                 "--out", str(tmp_path)]) == 2
    assert main(["analyse", "arithmetic", "--checkpoint", str(tmp_path / "missing")]) == 2


def test_report_runs_every_applicable_analysis_into_one_page(mrct_run: Path, tmp_path: Path):
    out = tmp_path / "report"
    assert main(["analyse", "report", "--checkpoint", str(mrct_run), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    for title in ("Latent arithmetic", "Modality transfer", "Modality estimation, MR vs CT", "Disentanglement"):
        assert title in html, title
    assert "<table>" in html and 'src="transfer.png"' in html and "BOLD" not in html  # the tiny phantom has no BOLD


def test_the_partition_invariance_is_one_for_identical_soft_maps():
    """The soft Dice of identical softmax maps is Σa²/Σa < 1; the partition's Dice is 1 (a fair scale for soft s)."""
    import torch

    from sdnet.analysis.runs import _channel_dice, _partition

    soft = torch.softmax(torch.randn(3, 4, 8, 8), dim=1)
    assert max(_channel_dice(soft, soft)) < 0.9
    assert _channel_dice(_partition(soft), _partition(soft)) == pytest.approx([1.0] * 4)
