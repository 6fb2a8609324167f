"""``sdnet analyse gradients``: per-term gradients of a trained SDNet, from the training code's own loss terms."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from sdnet.analysis.gradients import NETWORKS, analyse_gradients, gradient_statistics, term_gradients
from sdnet.checkpoint import load_checkpoint
from sdnet.cli import main
from sdnet.config import LossWeights, apply_overrides
from sdnet.errors import SDNetError
from sdnet.models import build_sdnet
from sdnet.training import Trainer
from sdnet.training.steps import supervised_terms
from sdnet.training.teacher import AnatomyTeacher

from ..helpers import tiny_config


def test_term_gradients_reach_only_the_networks_a_term_depends_on():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_sdnet(cfg.model)
    model.train()
    weights = LossWeights(segm=10.0, rec=1.0, kl=0.01, ce=2.0)
    x, masks = torch.rand(3, 1, 32, 32) * 2 - 1, torch.randint(0, 4, (3, 32, 32))
    terms, _ = supervised_terms(model, x, masks, weights, n_classes=4)
    networks = {n: getattr(model, n) for n in NETWORKS}
    grads = term_gradients(terms, weights, networks)
    assert set(grads) == {"segm", "rec", "kl", "ce"}
    norm = {t: {n: float(g.norm()) for n, g in by.items()} for t, by in grads.items()}
    # segmentation terms: f_anatomy and h, never g or f_modality; reconstruction: all but h; KL: f_anatomy
    # (through s, an input of f_modality) and f_modality only
    for t in ("segm", "ce"):
        assert norm[t]["anatomy_encoder"] > 0 and norm[t]["segmentor"] > 0
        assert norm[t]["decoder"] == 0 and norm[t]["modality_encoder"] == 0
    assert norm["rec"]["decoder"] > 0 and norm["rec"]["modality_encoder"] > 0 and norm["rec"]["segmentor"] == 0
    assert norm["kl"]["modality_encoder"] > 0 and norm["kl"]["decoder"] == 0 and norm["kl"]["segmentor"] == 0
    # the gradient of λ·L, as autograd gives it directly
    params = list(model.decoder.parameters())
    direct = torch.autograd.grad(weights.rec * terms["rec"], params, retain_graph=True)
    assert torch.allclose(grads["rec"]["decoder"], torch.cat([g.flatten() for g in direct]))
    stats = gradient_statistics(grads)
    for n in NETWORKS:  # a step's shares, and the parameters each term dominates, add up to 1 on every network
        assert sum(stats["share"][t][n] for t in grads) == pytest.approx(1.0, abs=1e-5)
        assert sum(stats["dominant"][t][n] for t in grads) == pytest.approx(1.0)
    assert stats["dominant"]["rec"]["decoder"] == 1.0 and stats["dominant"]["segm"]["decoder"] == 0.0
    assert math.isnan(stats["cosine"]["decoder"]["segm|ce"])  # neither reaches g
    assert -1 <= stats["cosine"]["anatomy_encoder"]["segm|rec"] <= 1


@pytest.fixture(scope="module")
def plus_run(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDNet+ (mix) trained for a few iterations on the tiny phantom."""
    cfg = apply_overrides(tiny_config(tiny_phantom, max_steps=4, epochs=1), ["loss.mix=10"])
    run = tmp_path_factory.mktemp("plus") / "run"
    Trainer(cfg, run, progress=False).fit()
    return run


def test_analyse_gradients_writes_every_step_and_leaves_the_model_and_rng_alone(
        plus_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    before = {k: v.clone() for k, v in load_checkpoint(plus_run)["model"].items()}
    rng = torch.get_rng_state()
    out = tmp_path / "analysis"
    assert main(["analyse", "gradients", "--checkpoint", str(plus_run), "--out", str(out), "--batches", "2"]) == 0
    assert torch.equal(rng, torch.get_rng_state())
    numbers = json.loads((out / "gradients.json").read_text())
    assert numbers["discriminator"] and numbers["batches"] == 2 and numbers["batch_size"] == 2
    steps = numbers["steps"]
    assert set(steps["supervised"]["terms"]) == {"segm", "rec", "kl"}
    assert set(steps["unsupervised"]["terms"]) == {"rec", "kl", "adv"}
    assert set(steps["factor"]["terms"]) == {"mix"}
    adv = steps["unsupervised"]["terms"]["adv"]
    assert adv["lambda"] == 10 and adv["norm"]["anatomy_encoder"] > 0 and adv["norm"]["decoder"] == 0
    assert steps["factor"]["terms"]["mix"]["share"]["anatomy_encoder"] == pytest.approx(1.0)
    assert "## supervised step" in capsys.readouterr().out
    # the same numbers again: the draw is seeded, and the analysis changed no weight or BatchNorm statistic
    again = analyse_gradients(plus_run, batches=2)
    assert again["steps"]["supervised"]["terms"]["segm"]["norm"] == steps["supervised"]["terms"]["segm"]["norm"]
    after = load_checkpoint(plus_run)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_analyse_gradients_refuses_a_baseline_and_bad_batches(tiny_phantom: Path, plus_run: Path, tmp_path: Path):
    with pytest.raises(SDNetError, match="at least 1"):
        analyse_gradients(plus_run, batches=0)
    cfg = tiny_config(tiny_phantom, max_steps=2, epochs=1)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, method="unet"))
    Trainer(cfg, tmp_path / "unet", progress=False).fit()
    with pytest.raises(SDNetError, match="no anatomy and modality factors"):
        analyse_gradients(tmp_path / "unet")


def test_analyse_gradients_gives_the_input_control_its_images(tiny_phantom: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    """``train.plus_z=input``: the factor step of the analysis segments the rows' input images, as training does."""
    import sdnet.training.methods as module

    cfg = apply_overrides(tiny_config(tiny_phantom, max_steps=2, epochs=1), ["loss.mix=10", "train.plus_z=input"])
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    seen: list[int] = []
    real = module.plus_images

    def spy(labelled: torch.Tensor, unlabelled: torch.Tensor | None, *, rows: int) -> torch.Tensor:
        images = real(labelled, unlabelled, rows=rows)
        seen.append(images.shape[0])
        return images

    monkeypatch.setattr(module, "plus_images", spy)
    mix = analyse_gradients(tmp_path / "run", batches=1)["steps"]["factor"]["terms"]["mix"]
    assert seen == [2 * cfg.train.batch_size]  # the labelled and the unlabelled batch
    assert mix["norm"]["anatomy_encoder"] > 0 and mix["norm"]["decoder"] == 0


def test_analyse_gradients_takes_the_factor_steps_targets_from_a_saved_teacher(tiny_phantom: Path, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    """``train.plus_teacher`` > 0: the analysis rebuilds the EMA teacher from the checkpoint and its factor step
    uses the teacher's targets, as training does."""
    import sdnet.training.methods as module

    cfg = apply_overrides(tiny_config(tiny_phantom, max_steps=2, epochs=1),
                          ["loss.mix=10", "loss.acons=1", "train.plus_teacher=0.9"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.fit()
    assert trainer.teacher is not None
    saved = trainer.teacher.state_dict()
    seen: list[torch.Tensor] = []
    real = module.teacher_targets

    def spy(teacher: AnatomyTeacher, images: torch.Tensor, masks: torch.Tensor,
            n_labelled: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert all(torch.equal(v, saved[k]) for k, v in teacher.state_dict().items())  # the saved teacher
        seen.append(images)
        return real(teacher, images, masks, n_labelled)

    monkeypatch.setattr(module, "teacher_targets", spy)
    terms = analyse_gradients(tmp_path / "run", batches=2)["steps"]["factor"]["terms"]
    assert len(seen) == 2 and seen[0].shape[0] == 2 * cfg.train.batch_size
    assert terms["acons"]["norm"]["anatomy_encoder"] > 0
