"""train.schedule=joint: the paper's single objective as one generator update (issue 14)."""

from pathlib import Path

import pytest
import torch

from sdnet.config import ConfigError, LossWeights, apply_overrides
from sdnet.models import build_discriminator, build_segmenter
from sdnet.training import Trainer
from sdnet.training.optim import KerasAdam
from sdnet.training.steps import generator_parameters, joint_generator_step

from ..helpers import tiny_config


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, v in module.named_parameters() if not torch.equal(v.detach(), before[k])}


def test_bad_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train\.schedule"):
        apply_overrides(tiny_config(), ["train.schedule=both"])


def test_joint_step_updates_the_generator_and_never_the_discriminator():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_segmenter(cfg.model, "sdnet")
    disc = build_discriminator(cfg.model)
    model.train()
    opt = KerasAdam(generator_parameters(model), cfg.optim)
    x, xu = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    m = torch.randint(0, 4, (2, 32, 32))
    before_g, before_d = _snapshot(model), _snapshot(disc)
    d_state = {k: v.clone() for k, v in disc.state_dict().items()}  # spectral norm's vectors included (default)
    assert any("parametrizations" in k for k in d_state)
    res = joint_generator_step(model, disc, x, m, xu, opt, LossWeights(), n_classes=4)
    assert all(torch.equal(v, disc.state_dict()[k]) for k, v in d_state.items())  # nothing of D changed
    assert disc.training
    assert set(res.losses) == {"segm", "rec", "kl", "adv", "total"}
    assert _changed(disc, before_d) == set()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in disc.parameters())
    assert all(p.requires_grad for p in disc.parameters())  # D is unfrozen again after the step
    changed = _changed(model, before_g)
    for part in ("anatomy_encoder", "modality_encoder", "decoder", "segmentor"):
        assert any(k.startswith(part + ".") for k in changed), part
    # anatomy of both batches for the z-reconstruction step; fakes of the unlabelled batch only
    assert res.anatomy is not None and res.anatomy.shape[0] == 4 and not res.anatomy.requires_grad
    assert res.fake_masks is not None and res.fake_masks.shape == (2, 3, 32, 32)


def test_joint_step_weights_every_term_in_one_objective():
    """The λ act within one update: the total is the λ-weighted sum of the logged terms, and scaling λ3 changes
    the update (in the per-step schedule it could not, Adam being scale-invariant)."""
    cfg = tiny_config()
    x, xu = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    m = torch.randint(0, 4, (2, 32, 32))
    updates = []
    for adv in (1.0, 100.0):
        torch.manual_seed(0)
        model, disc = build_segmenter(cfg.model, "sdnet"), build_discriminator(cfg.model)
        model.train()
        w = LossWeights(adv=adv)
        before = _snapshot(model)
        res = joint_generator_step(model, disc, x, m, xu, KerasAdam(generator_parameters(model), cfg.optim), w,
                                   n_classes=4)
        expected = sum(getattr(w, k) * v for k, v in res.losses.items() if k != "total")
        assert res.losses["total"] == pytest.approx(expected, rel=1e-5)
        updates.append(torch.cat([(p.detach() - before[k]).flatten() for k, p in model.named_parameters()]))
    assert not torch.allclose(updates[0], updates[1], atol=1e-7)


def test_joint_trainer_runs_with_one_generator_optimiser(tiny_phantom: Path, tmp_path: Path):
    cfg = apply_overrides(tiny_config(tiny_phantom), ["train.schedule=joint", "train.epochs=1"])
    trainer = Trainer(cfg, tmp_path / "run")
    assert set(trainer.optimisers) == {"generator", "zrec", "discriminator"}
    assert trainer.discriminator is not None
    d_before = _snapshot(trainer.discriminator)
    logs = trainer.train_iteration()
    assert {"sup_segm", "sup_rec", "sup_kl", "sup_adv", "sup_zrec", "disc"} <= set(logs)
    assert _changed(trainer.discriminator, d_before)  # the discriminator step ran
    result = trainer.fit()
    assert result.steps == cfg.train.steps_per_epoch
    resumed = Trainer.resume(tmp_path / "run")
    assert resumed.step == result.steps and set(resumed.optimisers) == set(trainer.optimisers)
