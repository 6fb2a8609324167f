"""Iterations read only their explicit context: run one without a trainer and get the trainer's update."""

from pathlib import Path

import torch

from sdnet.config import apply_overrides
from sdnet.models import SDNet, UNetSegmenter
from sdnet.training import Trainer
from sdnet.training.methods import (
    IterationContext,
    Streams,
    gan_iteration,
    sdnet_iteration,
    sdnet_joint_iteration,
    selftrain_stage_over,
)

from ..helpers import tiny_config


def _by_hand(t: Trainer) -> IterationContext:
    """The context assembled from the trainer's parts one by one (not through ``Trainer.context``)."""
    return IterationContext(model=t.model, discriminator=t.discriminator,
                            streams=Streams(labelled=t.labelled_stream, unlabelled=t.unlabelled_stream,
                                            real=t.real_stream, volume=t.volume_stream),
                            optimisers=dict(t.optimisers), pool=t.pool, weights=t.config.loss,
                            n_classes=t.config.model.n_classes, volume_class=t.data.volume_class, device=t.device)


def _same_after_two_steps(cfg, tmp_path: Path, iteration) -> dict[str, float]:
    a = Trainer(cfg, tmp_path / "a")  # each trainer seeds the global RNG (VAE sampling) when built
    for _ in range(2):
        a.train_iteration()
    b = Trainer(cfg, tmp_path / "b")
    ctx = _by_hand(b)
    assert isinstance(b.model, UNetSegmenter if cfg.train.method == "gan" else SDNet)
    b.model.train()
    logs = {}
    for step in range(2):
        logs = iteration(ctx, step)
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert a.discriminator is not None and b.discriminator is not None
    for pa, pb in zip(a.discriminator.parameters(), b.discriminator.parameters(), strict=True):
        assert torch.equal(pa, pb)
    return logs


def test_sdnet_iteration_without_a_trainer_equals_the_trainers(tiny_phantom: Path, tmp_path: Path):
    cfg = tiny_config(tiny_phantom)
    logs = _same_after_two_steps(cfg, tmp_path, sdnet_iteration)
    assert {"sup_segm", "sup_zrec", "unsup_rec", "unsup_adv", "disc"} <= set(logs)


def test_joint_and_gan_iterations_without_a_trainer(tiny_phantom: Path, tmp_path: Path):
    joint = apply_overrides(tiny_config(tiny_phantom), ["train.schedule=joint"])
    assert "sup_segm" in _same_after_two_steps(joint, tmp_path / "joint", sdnet_joint_iteration)
    gan = apply_overrides(tiny_config(tiny_phantom), ["train.method=gan"])
    assert "disc" in _same_after_two_steps(gan, tmp_path / "gan", gan_iteration)


def test_selftrain_stage_over_by_steps_patience_and_minutes(tiny_phantom: Path):
    tc = apply_overrides(tiny_config(tiny_phantom), ["train.selftrain_rounds=2", "train.max_steps=30",
                                                     "train.epochs=100", "train.patience=3",
                                                     "train.max_minutes=6"]).train
    kw = {"steps_per_epoch": 10, "stale_epochs": 0, "minutes": 0.0}
    assert not selftrain_stage_over(tc, round_=0, step=9, **kw)
    assert selftrain_stage_over(tc, round_=0, step=10, **kw)       # 30 iterations over 3 stages
    assert not selftrain_stage_over(tc, round_=1, step=10, **kw)
    assert selftrain_stage_over(tc, round_=1, step=10, **{**kw, "stale_epochs": 3})  # early stopping ends a round
    assert selftrain_stage_over(tc, round_=0, step=1, **{**kw, "minutes": 2.0})      # 6 min over 3 stages
    assert not selftrain_stage_over(tc, round_=2, step=1000, **{**kw, "minutes": 99.0})  # the last round runs on
