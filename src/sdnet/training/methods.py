"""One training iteration per ``train.method``, and the pseudo-labelling of the self-train baseline (paper §4.3).

Every method runs inside the same :class:`~sdnet.training.trainer.Trainer` loop: the same Keras-style Adam
(``config.optim``) per update kind, batch size, epoch length, validation Dice per epoch, early stopping, best/last
checkpoints, resume and budget. Only the iteration differs:

* ``sdnet`` (:func:`sdnet_iteration`): with ``train.schedule=steps`` the authors' schedule — supervised step,
  z-reconstruction, unsupervised step, z-reconstruction, discriminator step (authors-code §1.11); with the LV-volume
  multi-task (``loss.vol`` > 0 and ``data.volume_subjects``) a volume step on a batch with volume labels follows
  the first z-reconstruction. With ``train.schedule=joint`` (:func:`sdnet_joint_iteration`) the paper's single
  objective: one generator update on both batches, one z-reconstruction, (volume step,) discriminator step.
* ``unet`` (:func:`unet_iteration`): :func:`~sdnet.training.steps.unet_supervised_step` on a labelled batch; the
  unlabelled images are ignored.
* ``gan`` (:func:`gan_iteration`): the U-Net step, then :func:`~sdnet.training.steps.gan_generator_step` on an
  unlabelled batch, then :func:`~sdnet.training.steps.discriminator_step` — the same discriminator, real-mask
  stream and fake pool as SDNet (paper: "a variant of SDNet without the reconstruction cost").
* ``selftrain`` (:func:`unet_iteration` on a growing training set): Bai et al. (2017) without the CRF. Round 0
  trains on the labelled images; each of the ``train.selftrain_rounds`` following rounds first labels the
  unlabelled pool with the best model so far (:func:`pseudo_label`) and then continues training (same weights and
  optimiser state) on the labelled plus pseudo-labelled slices (:func:`with_pseudo_labels`).

Self-train budget: the run's budget is shared equally by the rounds + 1 stages, so the total equals the other
methods'. Stage k (0-based, R = ``selftrain_rounds``) ends after iteration ⌊T·(k+1)/(R+1)⌋, with T =
min(``max_steps``, ``epochs`` × iterations per epoch) (``max_steps`` 0 = no limit), or once ``max_minutes``·(k+1)/(R+1)
minutes have elapsed, or when early stopping triggers within the stage — whichever comes first; early stopping
ends a round early (and resets the patience counter), and ends the run only in the last round. Changing the
budget when resuming moves the stage boundaries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from sdnet.config import TrainConfig
from sdnet.data.sampling import SliceSet
from sdnet.inference import predict_volume
from sdnet.models import SDNet, Segmenter, UNetSegmenter
from sdnet.training.steps import (
    discriminator_step,
    gan_generator_step,
    joint_generator_step,
    one_hot_foreground,
    supervised_step,
    unet_supervised_step,
    unsupervised_step,
    volume_step,
    z_reconstruction_step,
)

if TYPE_CHECKING:
    from sdnet.training.trainer import Trainer

__all__ = [
    "ITERATIONS",
    "gan_iteration",
    "pseudo_label",
    "sdnet_iteration",
    "sdnet_joint_iteration",
    "selftrain_stage_end",
    "unet_iteration",
    "with_pseudo_labels",
]


def sdnet_iteration(t: Trainer) -> dict[str, float]:
    """One SDNet iteration at step ``t.step`` in ``train.schedule`` (the authors' per-step updates or the paper's
    joint objective); returns the logged loss terms."""
    if t.config.train.schedule == "joint":
        return sdnet_joint_iteration(t)
    cfg, s = t.config, t.step
    n_classes = cfg.model.n_classes
    model = t.model
    assert isinstance(model, SDNet)
    x, m = t.labelled_stream.batch(s)
    assert m is not None
    x, m = x.to(t.device), m.to(t.device)
    logs: dict[str, float] = {}
    sup = supervised_step(model, x, m, t.optimisers["supervised"], cfg.loss, n_classes=n_classes,
                          volume_class=t.data.volume_class)
    logs.update({f"sup_{k}": v for k, v in sup.losses.items()})
    if cfg.loss.zrec > 0 and sup.anatomy is not None:
        zr = z_reconstruction_step(model, sup.anatomy, t.optimisers["zrec"], cfg.loss)
        logs["sup_zrec"] = zr.losses["zrec"]
    if t.volume_stream is not None:  # LV-volume multi-task: subjects with volume labels and no masks
        xv, _ = t.volume_stream.batch(s)
        vol = volume_step(model, xv.to(t.device), t.volume_stream.areas(s).to(t.device), t.optimisers["volume"],
                          cfg.loss)
        logs["volume_vol"] = vol.losses["vol"]
    if t.unlabelled_stream is not None:
        xu, _ = t.unlabelled_stream.batch(s)
        xu = xu.to(t.device)
        uns = unsupervised_step(model, t.discriminator, xu, t.optimisers["unsupervised"], cfg.loss)
        logs.update({f"unsup_{k}": v for k, v in uns.losses.items()})
        if cfg.loss.zrec > 0 and uns.anatomy is not None:
            zr = z_reconstruction_step(model, uns.anatomy, t.optimisers["zrec"], cfg.loss)
            logs["unsup_zrec"] = zr.losses["zrec"]
        if t.discriminator is not None and uns.fake_masks is not None:
            _, real = t.real_stream.batch(s)
            assert real is not None
            real_fg = one_hot_foreground(real.to(t.device), n_classes)
            fake = t.pool(uns.fake_masks)
            d = discriminator_step(t.discriminator, real_fg, fake, t.optimisers["discriminator"])
            logs["disc"] = d.losses["disc"]
    return logs


def sdnet_joint_iteration(t: Trainer) -> dict[str, float]:
    """One iteration of ``train.schedule=joint``: :func:`~sdnet.training.steps.joint_generator_step` on the
    labelled and unlabelled batches, one z-reconstruction step on the anatomy of both, the volume step (LV-volume
    multi-task only), then the discriminator step. Logged terms are prefixed ``sup_`` (the joint update, so that
    ``sup_segm`` means the same in both schedules)."""
    cfg, s = t.config, t.step
    model = t.model
    assert isinstance(model, SDNet)
    x, m = t.labelled_stream.batch(s)
    assert m is not None
    xu = None
    if t.unlabelled_stream is not None:
        xu = t.unlabelled_stream.batch(s)[0].to(t.device)
    gen = joint_generator_step(model, t.discriminator, x.to(t.device), m.to(t.device), xu,
                               t.optimisers["generator"], cfg.loss, n_classes=cfg.model.n_classes)
    logs = {f"sup_{k}": v for k, v in gen.losses.items()}
    if cfg.loss.zrec > 0 and gen.anatomy is not None:
        logs["sup_zrec"] = z_reconstruction_step(model, gen.anatomy, t.optimisers["zrec"], cfg.loss).losses["zrec"]
    if t.volume_stream is not None:
        xv, _ = t.volume_stream.batch(s)
        vol = volume_step(model, xv.to(t.device), t.volume_stream.areas(s).to(t.device), t.optimisers["volume"],
                          cfg.loss)
        logs["volume_vol"] = vol.losses["vol"]
    if t.discriminator is not None and gen.fake_masks is not None:
        _, real = t.real_stream.batch(s)
        assert real is not None
        real_fg = one_hot_foreground(real.to(t.device), cfg.model.n_classes)
        logs["disc"] = discriminator_step(t.discriminator, real_fg, t.pool(gen.fake_masks),
                                          t.optimisers["discriminator"]).losses["disc"]
    return logs


def unet_iteration(t: Trainer) -> dict[str, float]:
    """One supervised U-Net update on labelled batch ``t.step`` (true labels, plus pseudo-labels in self-train
    rounds ≥ 1); returns ``sup_segm``, ``sup_total`` (and ``sup_ce``)."""
    cfg = t.config
    model = t.model
    assert isinstance(model, UNetSegmenter)
    x, m = t.labelled_stream.batch(t.step)
    assert m is not None
    sup = unet_supervised_step(model, x.to(t.device), m.to(t.device), t.optimisers["supervised"], cfg.loss,
                               n_classes=cfg.model.n_classes)
    return {f"sup_{k}": v for k, v in sup.losses.items()}


def gan_iteration(t: Trainer) -> dict[str, float]:
    """U-Net update on a labelled batch, adversarial generator update on an unlabelled batch, discriminator update
    (real: the real-mask stream; fake: the fake pool fed with this iteration's predictions)."""
    logs = unet_iteration(t)
    model = t.model
    assert isinstance(model, UNetSegmenter)
    if t.unlabelled_stream is None or t.discriminator is None:  # no unlabelled images or λ3 = 0: a plain U-Net
        return logs
    xu, _ = t.unlabelled_stream.batch(t.step)
    gen = gan_generator_step(model, t.discriminator, xu.to(t.device), t.optimisers["unsupervised"], t.config.loss)
    logs.update({f"unsup_{k}": v for k, v in gen.losses.items()})
    assert gen.fake_masks is not None
    _, real = t.real_stream.batch(t.step)
    assert real is not None
    real_fg = one_hot_foreground(real.to(t.device), t.config.model.n_classes)
    d = discriminator_step(t.discriminator, real_fg, t.pool(gen.fake_masks), t.optimisers["discriminator"])
    logs["disc"] = d.losses["disc"]
    return logs


ITERATIONS: dict[str, Callable[[Trainer], dict[str, float]]] = {
    "sdnet": sdnet_iteration,
    "unet": unet_iteration,
    "gan": gan_iteration,
    "selftrain": unet_iteration,
}
"""``train.method`` → the function that runs one training iteration (the model is in train mode)."""


def selftrain_stage_end(train: TrainConfig, steps_per_epoch: int, stage: int) -> int:
    """The iteration after which self-train stage ``stage`` (0 = labelled only) ends: ⌊T·(stage+1)/(R+1)⌋ with
    T = min(max_steps, epochs · steps_per_epoch) and R = ``train.selftrain_rounds``."""
    total = train.epochs * steps_per_epoch
    if train.max_steps:
        total = min(total, train.max_steps)
    return total * (stage + 1) // (train.selftrain_rounds + 1)


def pseudo_label(model: Segmenter, images: torch.Tensor, *, batch_size: int = 16) -> torch.Tensor:
    """Hard pseudo-labels (argmax, eval mode, ``torch.inference_mode``; no CRF, as paper §4.3).

    Args:
        model: the labelling network (its train/eval mode is restored).
        images: (N, 1, H, W) float in [−1, 1].

    Returns:
        (N, H, W) uint8 class indices on the CPU.
    """
    return predict_volume(model, images, batch_size=batch_size).to(torch.uint8)


def with_pseudo_labels(labelled: SliceSet, unlabelled: SliceSet, labels: torch.Tensor) -> SliceSet:
    """The labelled slices followed by the unlabelled slices with their pseudo-labels.

    Args:
        labelled: N_l slices with masks (N_l, H, W).
        unlabelled: N_u slices (masks ignored).
        labels: (N_u, H, W) integer pseudo-labels of ``unlabelled``.

    Returns:
        N_l + N_u slices with int64 masks.
    """
    if labelled.masks is None:
        raise ValueError("the labelled slices have no masks")
    if labels.shape[0] != len(unlabelled):
        raise ValueError(f"{labels.shape[0]} pseudo-labels for {len(unlabelled)} unlabelled slices")
    return SliceSet(
        images=torch.cat([labelled.images, unlabelled.images]),
        masks=torch.cat([labelled.masks, labels.to(torch.int64)]),
        subject_ids=labelled.subject_ids + unlabelled.subject_ids,
    )
