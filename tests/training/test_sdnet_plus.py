"""SDNet+ (issue 24): the factor step re-renders anatomies with other modality factors and trains f_anatomy and h on
them — and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sdnet.config import ConfigError, LossWeights, RunConfig, apply_overrides
from sdnet.models import SDNet, build_sdnet
from sdnet.study.grid import METHODS
from sdnet.training import Trainer
from sdnet.training.methods import plus_images, plus_inputs, plus_pairs, teacher_targets
from sdnet.training.optim import KerasAdam
from sdnet.training.steps import StepResult, factor_parameters, factor_step, factor_terms
from sdnet.training.teacher import AnatomyTeacher

from ..helpers import tiny_config


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _model_and_batch() -> tuple[RunConfig, SDNet, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A tiny SDNet in training mode, a batch of 4 images, their detached anatomy factors and random masks."""
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_sdnet(cfg.model)
    model.train()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        out = model(x)
    return cfg, model, x, out.anatomy.detach(), torch.randint(0, 4, (4, 32, 32))


@pytest.mark.parametrize("weights", [LossWeights(mix=10.0), LossWeights(acons=10.0), LossWeights(mix=1.0, acons=1.0)])
def test_factor_step_changes_exactly_the_anatomy_encoder_and_segmentor(weights: LossWeights):
    cfg, model, _, anatomy, masks = _model_and_batch()
    codes = torch.randn(4, cfg.model.n_z)
    before = {name: _snapshot(getattr(model, name)) for name in
              ("anatomy_encoder", "segmentor", "decoder", "modality_encoder")}
    optimizer = KerasAdam(factor_parameters(model), cfg.optim)
    result = factor_step(model, anatomy, masks, codes, optimizer, weights, n_classes=4)
    assert set(result.losses) == {k for k in ("mix", "acons") if getattr(weights, k) > 0} | {"total"}
    after = {name: _snapshot(getattr(model, name)) for name in before}
    for name in ("decoder", "modality_encoder"):  # parameters and BatchNorm statistics untouched
        for key, value in before[name].items():
            assert torch.equal(value, after[name][key]), (name, key)
    changed = [key for key, value in before["anatomy_encoder"].items()
               if value.is_floating_point() and not torch.equal(value, after["anatomy_encoder"][key])]
    assert changed, "the anatomy encoder did not move"
    if weights.mix > 0:  # the segmentor only receives gradient from the mix term
        assert any(not torch.equal(v, after["segmentor"][k]) for k, v in before["segmentor"].items()
                   if v.is_floating_point())
    else:
        assert all(torch.equal(v, after["segmentor"][k]) for k, v in before["segmentor"].items()
                   if "running" not in k and "num_batches" not in k)


def test_plus_pairs_render_each_anatomy_with_another_images_code():
    n_z = 3
    sup = StepResult(losses={}, anatomy=torch.zeros(4, 2, 8, 8), modality=torch.arange(4.0)[:, None].repeat(1, n_z))
    uns = StepResult(losses={}, anatomy=torch.ones(4, 2, 8, 8), modality=10 + torch.arange(4.0)[:, None].repeat(1, n_z),
                     fake_masks=torch.zeros(4, 3, 8, 8))
    uns.fake_masks[:, 2] = 0.9  # the unlabelled images are segmented as class 3 everywhere
    masks = torch.ones(4, 8, 8, dtype=torch.long)
    s, m, codes = plus_pairs(sup, masks, uns, source="batch", unlabelled=True, n_z=n_z)
    assert s.shape[0] == m.shape[0] == codes.shape[0] == 8
    assert torch.equal(m[:4], masks) and (m[4:] == 3).all()  # own segmentation as the unlabelled targets
    assert (codes[:4, 0] >= 10).all() and (codes[4:, 0] < 10).all()  # codes from the other batch
    assert not torch.equal(codes[4:, 0], torch.arange(4.0))  # not each image's own code
    s, m, codes = plus_pairs(sup, masks, uns, source="both", unlabelled=False, n_z=n_z)
    assert s.shape[0] == 4 and (codes[:2, 0] >= 10).all()  # half batch codes, half prior draws
    s, m, codes = plus_pairs(sup, masks, None, source="batch", unlabelled=True, n_z=n_z)
    assert torch.equal(codes[:, 0], torch.tensor([3.0, 0.0, 1.0, 2.0]))  # no unlabelled batch: rolled
    s, m, codes = plus_pairs(sup, masks, uns, source="own", unlabelled=True, n_z=n_z)
    assert torch.equal(codes, torch.cat([sup.modality, uns.modality]))  # the control: each image's own code


def test_the_input_control_segments_the_images_themselves_and_never_decodes():
    """train.plus_z=input: the factor step's x̃ is x_i itself — the decoder is not run, the codes do not matter, the
    terms are those of segmenting x_i, and the step changes f_anatomy and h only, like the re-rendering."""
    cfg, model, x, anatomy, masks = _model_and_batch()
    weights = LossWeights(mix=10.0)

    def no_decoder(*args: object, **kwargs: object) -> None:
        raise AssertionError("the input control ran the decoder")

    decode = model.decode
    model.decode = no_decoder  # type: ignore[method-assign,assignment]
    a = factor_terms(model, anatomy, masks, torch.randn(4, cfg.model.n_z), weights, n_classes=4, images=x)
    b = factor_terms(model, anatomy, masks, torch.zeros(4, cfg.model.n_z), weights, n_classes=4, images=x)
    assert torch.equal(a["mix"], b["mix"])  # the codes are unused
    model.decode = decode  # type: ignore[method-assign]
    rendered = factor_terms(model, anatomy, masks, torch.zeros(4, cfg.model.n_z), weights, n_classes=4)
    assert not torch.equal(a["mix"], rendered["mix"])  # and it is not the re-rendering
    before = {name: _snapshot(getattr(model, name)) for name in
              ("anatomy_encoder", "segmentor", "decoder", "modality_encoder")}
    optimizer = KerasAdam(factor_parameters(model), cfg.optim)
    factor_step(model, anatomy, masks, torch.zeros(4, cfg.model.n_z), optimizer, weights, n_classes=4, images=x)
    after = {name: _snapshot(getattr(model, name)) for name in before}
    for name in ("decoder", "modality_encoder"):
        assert all(torch.equal(v, after[name][k]) for k, v in before[name].items()), name
    for name in ("anatomy_encoder", "segmentor"):
        assert any(not torch.equal(v, after[name][k]) for k, v in before[name].items() if v.is_floating_point()), name


def test_plus_images_are_the_inputs_of_the_rows():
    lab, unl = torch.zeros(4, 1, 8, 8), torch.ones(3, 1, 8, 8)
    assert plus_images(lab, unl, rows=4) is lab  # train.plus_unlabelled=false: the labelled batch only
    both = plus_images(lab, unl, rows=7)
    assert torch.equal(both[:4], lab) and torch.equal(both[4:], unl)  # the rows' order of plus_pairs
    with pytest.raises(ValueError, match="rows"):
        plus_images(lab, None, rows=7)


def test_sdnet_plus_trains_in_the_trainer_and_resumes(tiny_phantom: Path, tmp_path: Path):
    cfg = apply_overrides(tiny_config(tiny_phantom, epochs=1, steps_per_epoch=3, checkpoint_every=2),
                          [*METHODS["sdnetplus"], "train.plus_z=both"])
    trainer = Trainer(cfg, tmp_path / "run")
    assert "factors" in trainer.optimisers
    logs = trainer.train_iteration()
    assert {"plus_mix", "plus_acons", "sup_segm", "unsup_adv", "disc"} <= set(logs)
    trainer.fit()
    resumed = Trainer.resume(tmp_path / "run", overrides=["train.epochs=2"])
    assert resumed.config.loss.mix == 10 and resumed.optimisers["factors"].state_dict()["updates"] > 0
    control = Trainer(apply_overrides(cfg, list(METHODS["sdnetplus-input"])), tmp_path / "input")
    assert control.config.train.plus_z == "input" and "plus_mix" in control.train_iteration()
    # SDNet+ needs SDNet's decoder and the authors' schedule
    for bad in (["train.method=gan"], ["train.schedule=joint"]):
        with pytest.raises(ConfigError, match="SDNet"):
            apply_overrides(cfg, bad)


def test_the_hand_made_appearance_baseline_reaches_the_training_streams(tiny_phantom: Path, tmp_path: Path):
    cfg = apply_overrides(tiny_config(tiny_phantom, epochs=1, steps_per_epoch=2), list(METHODS["gan-intensity"]))
    trainer = Trainer(cfg, tmp_path / "run")
    assert cfg.train.method == "gan" and trainer.labelled_stream.intensity_strength == 0.5
    plain = Trainer(apply_overrides(cfg, ["data.augment_intensity=0"]), tmp_path / "plain")
    x, m = trainer.labelled_stream.batch(0)
    x0, m0 = plain.labelled_stream.batch(0)
    assert not torch.equal(x, x0) and m is not None and m0 is not None and torch.equal(m, m0)
    with pytest.raises(ConfigError, match="augment_intensity"):
        apply_overrides(cfg, ["data.augment_intensity=3"])


# ---------------------------------------------------------------------------------------- the EMA teacher


def test_the_teacher_is_an_exponential_moving_average_of_the_segmentation_path():
    cfg, model, x, anatomy, masks = _model_and_batch()
    teacher = AnatomyTeacher(model, decay=0.9)
    start = {name: _snapshot(getattr(teacher, name)) for name in ("anatomy_encoder", "segmentor")}
    assert all(torch.equal(v, getattr(model, name).state_dict()[k]) for name in start for k, v in start[name].items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    teacher.train()  # stays in eval mode (BatchNorm on running statistics)
    assert not teacher.training and not teacher.anatomy_encoder.training
    optimizer = KerasAdam(factor_parameters(model), cfg.optim)
    factor_step(model, anatomy, masks, torch.zeros(4, cfg.model.n_z), optimizer, LossWeights(mix=10.0), n_classes=4)
    teacher.update(model)
    for name in ("anatomy_encoder", "segmentor"):
        student = getattr(model, name)
        params = dict(student.named_parameters())
        buffers = dict(student.named_buffers())
        for key, value in getattr(teacher, name).state_dict().items():
            if key in params:  # θ_t = 0.9 θ_t + 0.1 θ_s
                expected = 0.9 * start[name][key] + 0.1 * params[key].detach()
                assert torch.allclose(value, expected, atol=1e-6), (name, key)
                if not torch.equal(start[name][key], params[key]):
                    assert not torch.equal(value, params[key]), (name, key)  # not the student's weights
            else:  # BatchNorm statistics: the student's
                assert torch.equal(value, buffers[key]), (name, key)
    anatomy_t, labels = teacher(x)
    assert anatomy_t.shape == anatomy.shape and labels.shape == masks.shape and labels.dtype == torch.long
    assert not anatomy_t.requires_grad
    with pytest.raises(ValueError, match="decay"):
        AnatomyTeacher(model, decay=1.0)


def test_teacher_targets_replace_the_unlabelled_rows_and_the_anatomy_target_only():
    cfg, model, x, anatomy, masks = _model_and_batch()
    teacher = AnatomyTeacher(model, decay=0.99)
    images = torch.cat([x, x.flip(-1)])
    rows = torch.cat([masks, torch.zeros_like(masks)])
    targets, target_anatomy = teacher_targets(teacher, images, rows, n_labelled=4)
    anatomy_t, labels = teacher(images)
    assert torch.equal(targets[:4], masks)  # labelled rows: the true masks
    assert torch.equal(targets[4:], labels[4:])  # unlabelled rows: the teacher's segmentation
    assert torch.equal(target_anatomy, anatomy_t)
    # without a teacher (and not the input control) nothing changes and no image batch is built
    same, inputs, none = plus_inputs(rows, x, x, n_labelled=4, source="both", teacher=None)
    assert same is rows and inputs is None and none is None
    m, inputs, target = plus_inputs(rows, x, x.flip(-1), n_labelled=4, source="own", teacher=teacher)
    assert inputs is None and torch.equal(m, targets) and target is not None and torch.equal(target, anatomy_t)
    m, inputs, _ = plus_inputs(rows, x, x.flip(-1), n_labelled=4, source="input", teacher=teacher)
    assert inputs is not None and torch.equal(inputs, images)
    # acons asks f_anatomy(x̃) for the teacher's anatomy when it is given
    w = LossWeights(acons=1.0)
    codes = torch.zeros(4, cfg.model.n_z)
    own = factor_terms(model, anatomy, masks, codes, w, n_classes=4)["acons"]
    other = factor_terms(model, anatomy, masks, codes, w, n_classes=4, anatomy_target=torch.zeros_like(anatomy))
    assert not torch.equal(own, other["acons"])


def test_sdnet_plus_with_a_teacher_trains_moves_the_teacher_and_resumes_exactly(tiny_phantom: Path, tmp_path: Path):
    base = tiny_config(tiny_phantom, epochs=2, steps_per_epoch=3, checkpoint_every=1)
    cfg = apply_overrides(base, [*METHODS["sdnetplus-teacher"], "train.max_steps=4"])
    assert cfg.train.plus_teacher == 0.99
    straight = Trainer(cfg, tmp_path / "straight")
    assert straight.teacher is not None
    start = _snapshot(straight.teacher)
    straight.fit()
    after = _snapshot(straight.teacher)
    moved = [k for k, v in start.items() if v.is_floating_point() and not torch.equal(v, after[k])]
    assert moved, "the teacher did not follow the student"
    student = {**{f"anatomy_encoder.{k}": v for k, v in straight.model.anatomy_encoder.state_dict().items()},
               **{f"segmentor.{k}": v for k, v in straight.model.segmentor.state_dict().items()}}
    assert any(not torch.equal(after[k], student[k]) for k in moved)  # an average, not a copy
    first = Trainer(apply_overrides(cfg, ["train.max_steps=2"]), tmp_path / "resumed")
    first.fit()
    del first
    resumed = Trainer.resume(tmp_path / "resumed", overrides=["train.max_steps=4"])
    assert resumed.teacher is not None and resumed.step == 2
    resumed.fit()
    assert all(torch.equal(v, _snapshot(resumed.teacher)[k]) for k, v in after.items())
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in straight.model.state_dict().items())
    # no teacher: the checkpoint's teacher entry is empty, and a teacher needs an SDNet+ term
    plain = Trainer(apply_overrides(base, list(METHODS["sdnetplus-mix"])), tmp_path / "plain")
    assert plain.teacher is None and plain.state_dict()["teacher"] == {}
    for bad in (["train.plus_teacher=1.0"], ["train.plus_teacher=-0.1"]):
        with pytest.raises(ConfigError, match="plus_teacher"):
            apply_overrides(cfg, bad)
    with pytest.raises(ConfigError, match="plus_teacher"):
        apply_overrides(base, ["train.plus_teacher=0.99"])


# --------------------------------------------------------------- the same self-training step on the GAN baseline


def test_the_gan_control_takes_sdnetplus_input_step_on_its_u_net(tiny_phantom: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    """``ganplus-input``: after the adversarial update the U-Net segments the labelled batch against its masks and
    the unlabelled batch against the argmax of its own adversarial-step prediction, with an Adam of its own; D is
    not touched by it."""
    import sdnet.training.methods as module

    cfg = apply_overrides(tiny_config(tiny_phantom, epochs=1, steps_per_epoch=2), list(METHODS["ganplus-input"]))
    trainer = Trainer(cfg, tmp_path / "run")
    assert cfg.train.method == "gan" and "factors" in trainer.optimisers
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_step = module.unet_factor_step
    real_gen = module.gan_generator_step
    fakes: list[torch.Tensor] = []

    def spy_step(model: torch.nn.Module, image: torch.Tensor, masks: torch.Tensor, *args: object,
                 **kwargs: object) -> StepResult:
        seen.append((image.clone(), masks.clone()))
        assert trainer.discriminator is not None
        before = _snapshot(trainer.discriminator)
        net = _snapshot(trainer.model)
        result = real_step(model, image, masks, *args, **kwargs)  # type: ignore[arg-type]
        assert all(torch.equal(v, trainer.discriminator.state_dict()[k]) for k, v in before.items())
        assert any(not torch.equal(v, trainer.model.state_dict()[k]) for k, v in net.items() if v.is_floating_point())
        return result

    def spy_gen(*args: object, **kwargs: object) -> StepResult:
        result = real_gen(*args, **kwargs)  # type: ignore[arg-type]
        assert result.fake_masks is not None
        fakes.append(result.fake_masks)
        return result

    monkeypatch.setattr(module, "unet_factor_step", spy_step)
    monkeypatch.setattr(module, "gan_generator_step", spy_gen)
    logs = trainer.train_iteration()
    assert {"plus_mix", "sup_segm", "unsup_adv", "disc"} <= set(logs)
    (image, masks), fake = seen[0], fakes[0]
    b = cfg.train.batch_size
    x, m = trainer.labelled_stream.batch(0)
    xu, _ = trainer.unlabelled_stream.batch(0) if trainer.unlabelled_stream is not None else (None, None)
    assert m is not None and xu is not None
    assert image.shape[0] == 2 * b and torch.equal(image[:b], x) and torch.equal(image[b:], xu)
    assert torch.equal(masks[:b], m)  # labelled rows: the true masks
    own = torch.cat([1 - fake.sum(dim=1, keepdim=True), fake], dim=1).argmax(dim=1)
    assert torch.equal(masks[b:], own)  # unlabelled rows: the U-Net's own segmentation of them
    monkeypatch.undo()
    trainer.fit()  # trains, checkpoints and resumes with the step's own Adam state
    resumed = Trainer.resume(tmp_path / "run", overrides=["train.epochs=2"])
    assert resumed.optimisers["factors"].state_dict()["updates"] > 0
    # the plain GAN has no such step; the GAN takes only the input variant, without a teacher
    assert "factors" not in Trainer(apply_overrides(cfg, ["loss.mix=0"]), tmp_path / "plain").optimisers
    for bad in (["train.plus_z=own"], ["loss.acons=1"], ["train.plus_teacher=0.9"], ["train.method=unet"]):
        with pytest.raises(ConfigError, match="SDNet"):
            apply_overrides(cfg, bad)
