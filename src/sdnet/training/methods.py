"""One training iteration per ``train.method``, and the rounds of the self-train baseline (paper §4.3).

An iteration is a function of an explicit :class:`IterationContext` (networks, batch streams, optimisers, fake
pool, loss weights, device) and the step number, so it reads top to bottom in one screen and can be run without a
trainer. Every method runs inside the same :class:`~sdnet.training.trainer.Trainer` loop: the same Keras-style Adam
(``config.optim``) per update kind, batch size, epoch length, validation Dice per epoch, early stopping, best/last
checkpoints, resume and budget. Only the iteration differs:

* ``sdnet`` (:func:`sdnet_iteration`): with ``train.schedule=steps`` the authors' schedule — supervised step,
  z-reconstruction, unsupervised step, z-reconstruction, discriminator step (authors-code §1.11); with the LV-volume
  multi-task (``loss.vol`` > 0 and ``data.volume_subjects``) a volume step on a batch with volume labels follows
  the first z-reconstruction; with SDNet+ (``loss.mix`` / ``loss.acons`` > 0, our addition) the factor step
  (:func:`~sdnet.training.steps.factor_step`, pairs chosen by :func:`plus_pairs`) follows the second. With
  ``train.schedule=joint`` (:func:`sdnet_joint_iteration`) the paper's single objective: one generator update on
  both batches, one z-reconstruction, (volume step,) discriminator step.
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

Length: every method's iteration, and the choice of SDNet+'s rows and targets that the SDNet and GAN iterations and
the gradient analysis share (:func:`plus_pairs`, :func:`plus_inputs`), so that what one training iteration does is
read in one file, next to the context it runs on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from sdnet.checkpoint import load_checkpoint
from sdnet.config import LossWeights, TrainConfig
from sdnet.data.sampling import BatchStream, SliceSet
from sdnet.inference import predict_volume
from sdnet.models import MaskDiscriminator, SDNet, Segmenter, UNetSegmenter
from sdnet.training.optim import KerasAdam
from sdnet.training.steps import (
    FakeMaskPool,
    StepResult,
    discriminator_step,
    factor_step,
    gan_generator_step,
    joint_generator_step,
    one_hot_foreground,
    supervised_step,
    unet_factor_step,
    unet_supervised_step,
    unsupervised_step,
    volume_step,
    z_reconstruction_step,
)
from sdnet.training.teacher import AnatomyTeacher

__all__ = [
    "ITERATIONS",
    "IterationContext",
    "Streams",
    "gan_iteration",
    "pseudo_label",
    "sdnet_iteration",
    "sdnet_joint_iteration",
    "selftrain_stage_end",
    "selftrain_stage_over",
    "selftrain_teacher",
    "unet_iteration",
    "with_pseudo_labels",
]

M = TypeVar("M", SDNet, UNetSegmenter)
Net = TypeVar("Net", bound=torch.nn.Module)


@dataclass(frozen=True)
class Streams:
    """The batch streams of one run; every batch is a pure function of (seed, step).

    Attributes:
        labelled: images (B, 1, H, W) with masks (B, H, W) (plus pseudo-labelled slices in self-train rounds ≥ 1).
        unlabelled: images without masks (``None``: no unlabelled images, or a method that ignores them).
        real: masks shown to the discriminator as real.
        volume: images with LV areas for the LV-volume task (``None`` without it).
    """

    labelled: BatchStream
    unlabelled: BatchStream | None
    real: BatchStream
    volume: BatchStream | None


@dataclass(frozen=True)
class IterationContext(Generic[M]):
    """Everything one training iteration reads or updates.

    Attributes:
        model: the segmentation network (:class:`SDNet`, or :class:`UNetSegmenter` for the baselines).
        discriminator: the mask discriminator D (``None`` when the method or λ_adv = 0 has none).
        streams: the batch streams.
        optimisers: one Keras-style Adam per update kind (``supervised``, ``unsupervised``, ``zrec``, ``volume``,
            ``generator``, ``discriminator``: those the method uses).
        pool: the history of predicted masks shown to D as fake.
        weights: the paper's λ (``config.loss``).
        n_classes: classes including background.
        volume_class: the class whose area the LV-volume task regresses (``None`` without one).
        device: where the batches go.
        plus_z: SDNet+ only: where the re-rendering codes come from (``train.plus_z``).
        plus_unlabelled: SDNet+ only: re-render the unlabelled batch too (``train.plus_unlabelled``).
        teacher: SDNet+ only: the EMA teacher that gives the factor step's targets (``train.plus_teacher`` > 0),
            updated after each factor step; ``None``: the model's own detached outputs are the targets.
    """

    model: M
    discriminator: MaskDiscriminator | None
    streams: Streams
    optimisers: Mapping[str, KerasAdam]
    pool: FakeMaskPool
    weights: LossWeights
    n_classes: int
    volume_class: int | None
    device: torch.device
    plus_z: str = "both"
    plus_unlabelled: bool = True
    teacher: AnatomyTeacher | None = None


def _discriminator_update(ctx: IterationContext[Any], step: int, fake_masks: torch.Tensor) -> float:
    """D on real masks of batch ``step`` against the pool fed with this iteration's predicted masks."""
    assert ctx.discriminator is not None
    _, real = ctx.streams.real.batch(step)
    assert real is not None
    real_fg = one_hot_foreground(real.to(ctx.device), ctx.n_classes)
    return discriminator_step(ctx.discriminator, real_fg, ctx.pool(fake_masks),
                              ctx.optimisers["discriminator"]).losses["disc"]


def _volume_update(ctx: IterationContext[SDNet], step: int) -> float:
    """The LV-volume step on batch ``step`` of the images with volume labels (no masks)."""
    assert ctx.streams.volume is not None
    xv, _ = ctx.streams.volume.batch(step)
    return volume_step(ctx.model, xv.to(ctx.device), ctx.streams.volume.areas(step).to(ctx.device),
                       ctx.optimisers["volume"], ctx.weights).losses["vol"]


def plus_pairs(sup: StepResult, masks: torch.Tensor, uns: StepResult | None, *, source: str, unlabelled: bool,
               n_z: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What SDNet+ re-renders this iteration: (anatomies s_i, targets, codes z_j), row by row.

    The rows are the labelled batch (targets: its masks) and, with ``unlabelled``, the unlabelled batch (targets:
    the argmax of the model's own detached segmentation, from the unsupervised step). ``source`` ``batch`` pairs
    each labelled anatomy with an unlabelled image's z and each unlabelled anatomy with a labelled image's (rolled
    by one within the batch when there is no unlabelled batch); ``prior`` draws z ~ N(0, I); ``both`` keeps the
    batch codes for the first half of the rows and draws the rest; ``own`` gives each row its own image's code (a
    reconstruction: the control without a change of modality); ``input`` segments the rows' input images instead
    (:func:`plus_images`; the codes are then unused).
    """
    assert sup.anatomy is not None and sup.modality is not None
    anatomy, targets, own = [sup.anatomy], [masks], [sup.modality]
    if unlabelled and uns is not None and uns.anatomy is not None and uns.fake_masks is not None:
        anatomy.append(uns.anatomy)
        targets.append(own_labels(uns.fake_masks))
        assert uns.modality is not None
        own.append(uns.modality)
    s, m = torch.cat(anatomy), torch.cat(targets)
    n_labelled = own[0].shape[0]
    if len(own) == 2:  # labelled rows take unlabelled images' codes, unlabelled rows labelled ones'
        other = torch.cat([_cycle(own[1], n_labelled), _cycle(own[0].roll(1, dims=0), own[1].shape[0])])
    elif uns is not None and uns.modality is not None:
        other = _cycle(uns.modality, n_labelled)
    else:  # no unlabelled batch: another labelled image's code
        other = own[0].roll(1, dims=0)
    prior = torch.randn(s.shape[0], n_z, device=s.device, dtype=other.dtype)
    if source == "own":
        codes = torch.cat(own)
    elif source == "prior":
        codes = prior
    elif source == "batch":
        codes = other
    else:
        half = s.shape[0] // 2
        codes = torch.cat([other[:half], prior[half:]])
    return s, m, codes


def own_labels(foreground: torch.Tensor) -> torch.Tensor:
    """SDNet+'s target for an unlabelled image: the argmax of the model's detached foreground probabilities
    (B, L, H, W), background = 1 − their sum; (B, H, W) int64 class indices."""
    return torch.cat([1.0 - foreground.sum(dim=1, keepdim=True), foreground], dim=1).argmax(dim=1)


def plus_images(labelled: torch.Tensor, unlabelled: torch.Tensor | None, rows: int) -> torch.Tensor:
    """The input images of :func:`plus_pairs`' ``rows`` rows (``train.plus_z=input``): the labelled batch, then the
    unlabelled one when its rows are there."""
    if rows == labelled.shape[0]:
        return labelled
    if unlabelled is None or rows != labelled.shape[0] + unlabelled.shape[0]:
        raise ValueError(f"SDNet+ has {rows} rows to segment, not the labelled batch ({labelled.shape[0]}) or both "
                         "batches")
    return torch.cat([labelled, unlabelled])


def teacher_targets(teacher: AnatomyTeacher, images: torch.Tensor, masks: torch.Tensor,
                    n_labelled: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SDNet+'s targets from the EMA teacher (``train.plus_teacher`` > 0) for rows whose input images are
    ``images`` (:func:`plus_images`).

    Args:
        images: (R, 1, H, W) the rows' input images, labelled rows first.
        masks: (R, H, W) int64 the targets of :func:`plus_pairs`.
        n_labelled: how many of the first rows are labelled.

    Returns:
        masks (R, H, W): the labelled rows' true masks, then the teacher's segmentation of the unlabelled rows'
        images; and the anatomy targets (R, C, H, W) for λ_acons: the teacher's anatomy of every row's image.
    """
    anatomy, labels = teacher(images)
    return torch.cat([masks[:n_labelled], labels[n_labelled:]]), anatomy


def plus_inputs(masks: torch.Tensor, labelled: torch.Tensor, unlabelled: torch.Tensor | None, *, n_labelled: int,
                source: str, teacher: AnatomyTeacher | None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """What the factor step needs beside :func:`plus_pairs`' rows: (targets, input images, anatomy targets).

    Args:
        masks: (R, H, W) the targets of :func:`plus_pairs`.
        labelled, unlabelled: the iteration's image batches the rows came from.
        n_labelled: how many of the first rows are labelled.
        source: ``train.plus_z``; ``input`` returns the rows' images (segmented instead of a re-rendering).
        teacher: the EMA teacher (``train.plus_teacher`` > 0): its outputs replace the unlabelled rows' targets
            and give λ_acons' (:func:`teacher_targets`); ``None`` keeps ``masks`` and returns no anatomy target.
    """
    if source != "input" and teacher is None:
        return masks, None, None
    images = plus_images(labelled, unlabelled, rows=masks.shape[0])
    target_anatomy = None
    if teacher is not None:
        masks, target_anatomy = teacher_targets(teacher, images, masks, n_labelled=n_labelled)
    return masks, images if source == "input" else None, target_anatomy


def _cycle(rows: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` rows of ``rows`` repeated as often as needed."""
    return rows.repeat(-(-n // rows.shape[0]), 1)[:n]


def _factor_update(ctx: IterationContext[SDNet], sup: StepResult, masks: torch.Tensor, uns: StepResult | None,
                   images: tuple[torch.Tensor, torch.Tensor | None]) -> dict[str, float]:
    s, m, codes = plus_pairs(sup, masks, uns, source=ctx.plus_z, unlabelled=ctx.plus_unlabelled,
                             n_z=ctx.model.modality_encoder.n_z)
    m, inputs, target_anatomy = plus_inputs(m, *images, n_labelled=masks.shape[0], source=ctx.plus_z,
                                            teacher=ctx.teacher)
    losses = factor_step(ctx.model, s, m, codes, ctx.optimisers["factors"], ctx.weights, n_classes=ctx.n_classes,
                         images=inputs, anatomy_target=target_anatomy).losses
    if ctx.teacher is not None:
        ctx.teacher.update(ctx.model)
    return {f"plus_{k}": v for k, v in losses.items()}


def sdnet_iteration(ctx: IterationContext[SDNet], step: int) -> dict[str, float]:
    """The authors' SDNet iteration (``train.schedule=steps``, authors-code §1.11); returns the logged loss terms.

    Supervised step on a labelled batch (encode, segment, decode), z-reconstruction on its anatomy; the volume step
    (LV-volume task only); unsupervised step on an unlabelled batch (encode, decode, adversarial term on its masks),
    z-reconstruction on its anatomy; discriminator step on real masks against the pool of predicted ones.
    """
    model, w, dev = ctx.model, ctx.weights, ctx.device
    x, m = ctx.streams.labelled.batch(step)
    assert m is not None
    x, m = x.to(dev), m.to(dev)  # once: the supervised and the factor step share the batch
    sup = supervised_step(model, x, m, ctx.optimisers["supervised"], w, n_classes=ctx.n_classes,
                          volume_class=ctx.volume_class)
    logs = {f"sup_{k}": v for k, v in sup.losses.items()}
    if w.zrec > 0 and sup.anatomy is not None:
        logs["sup_zrec"] = z_reconstruction_step(model, sup.anatomy, ctx.optimisers["zrec"], w).losses["zrec"]
    if ctx.streams.volume is not None:
        logs["volume_vol"] = _volume_update(ctx, step)
    if ctx.streams.unlabelled is None:
        if w.plus:
            logs.update(_factor_update(ctx, sup, m, None, (x, None)))
        return logs
    xu = ctx.streams.unlabelled.batch(step)[0].to(dev)
    uns = unsupervised_step(model, ctx.discriminator, xu, ctx.optimisers["unsupervised"], w)
    logs.update({f"unsup_{k}": v for k, v in uns.losses.items()})
    if w.zrec > 0 and uns.anatomy is not None:
        logs["unsup_zrec"] = z_reconstruction_step(model, uns.anatomy, ctx.optimisers["zrec"], w).losses["zrec"]
    if w.plus:
        logs.update(_factor_update(ctx, sup, m, uns, (x, xu)))
    if ctx.discriminator is not None and uns.fake_masks is not None:
        logs["disc"] = _discriminator_update(ctx, step, uns.fake_masks)
    return logs


def sdnet_joint_iteration(ctx: IterationContext[SDNet], step: int) -> dict[str, float]:
    """One iteration of ``train.schedule=joint`` (the paper's single objective, §4.2): one generator update on the
    λ-weighted sum over the labelled and unlabelled batches, one z-reconstruction on both batches' anatomy, the
    volume step (LV-volume task only), then the discriminator step. Logged terms are prefixed ``sup_`` (so that
    ``sup_segm`` means the same in both schedules)."""
    model, w, dev = ctx.model, ctx.weights, ctx.device
    x, m = ctx.streams.labelled.batch(step)
    assert m is not None
    xu = ctx.streams.unlabelled.batch(step)[0].to(dev) if ctx.streams.unlabelled is not None else None
    gen = joint_generator_step(model, ctx.discriminator, x.to(dev), m.to(dev), xu, ctx.optimisers["generator"], w,
                               n_classes=ctx.n_classes)
    logs = {f"sup_{k}": v for k, v in gen.losses.items()}
    if w.zrec > 0 and gen.anatomy is not None:
        logs["sup_zrec"] = z_reconstruction_step(model, gen.anatomy, ctx.optimisers["zrec"], w).losses["zrec"]
    if ctx.streams.volume is not None:
        logs["volume_vol"] = _volume_update(ctx, step)
    if ctx.discriminator is not None and gen.fake_masks is not None:
        logs["disc"] = _discriminator_update(ctx, step, gen.fake_masks)
    return logs


def _labelled_batch(ctx: IterationContext[Any], step: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, m = ctx.streams.labelled.batch(step)
    assert m is not None
    return x.to(ctx.device), m.to(ctx.device)


def unet_iteration(ctx: IterationContext[UNetSegmenter], step: int) -> dict[str, float]:
    """One supervised U-Net update on labelled batch ``step`` (true labels, plus pseudo-labels in self-train
    rounds ≥ 1); returns ``sup_segm``, ``sup_total`` (and ``sup_ce``)."""
    return _unet_update(ctx, *_labelled_batch(ctx, step))


def _unet_update(ctx: IterationContext[UNetSegmenter], x: torch.Tensor, m: torch.Tensor) -> dict[str, float]:
    sup = unet_supervised_step(ctx.model, x, m, ctx.optimisers["supervised"], ctx.weights, n_classes=ctx.n_classes)
    return {f"sup_{k}": v for k, v in sup.losses.items()}


def gan_iteration(ctx: IterationContext[UNetSegmenter], step: int) -> dict[str, float]:
    """U-Net update on a labelled batch, adversarial generator update on an unlabelled batch, discriminator update
    (real: the real-mask stream; fake: the pool fed with this iteration's predictions) — SDNet without the
    reconstruction cost (paper §4.3).

    With ``loss.mix`` > 0 (``train.plus_z=input`` only; method ``ganplus-input``, our control) SDNet+'s
    input-image factor step follows the adversarial update: the U-Net segments the labelled batch against its masks
    and the unlabelled batch against the argmax of its own detached prediction from the adversarial step
    (:func:`plus_pairs`' targets), with its own Adam — the self-training step of ``sdnetplus-input`` on a network
    without factors.
    """
    x, m = _labelled_batch(ctx, step)
    logs = _unet_update(ctx, x, m)
    if ctx.streams.unlabelled is None or ctx.discriminator is None:  # no unlabelled images or λ_adv = 0: a U-Net
        if ctx.weights.mix > 0:
            logs.update(_unet_factor_update(ctx, x, m, None, None))
        return logs
    xu = ctx.streams.unlabelled.batch(step)[0].to(ctx.device)
    gen = gan_generator_step(ctx.model, ctx.discriminator, xu, ctx.optimisers["unsupervised"], ctx.weights)
    logs.update({f"unsup_{k}": v for k, v in gen.losses.items()})
    assert gen.fake_masks is not None
    if ctx.weights.mix > 0:
        logs.update(_unet_factor_update(ctx, x, m, xu, gen.fake_masks))
    logs["disc"] = _discriminator_update(ctx, step, gen.fake_masks)
    return logs


def _unet_factor_update(ctx: IterationContext[UNetSegmenter], x: torch.Tensor, m: torch.Tensor,
                        xu: torch.Tensor | None, fake_masks: torch.Tensor | None) -> dict[str, float]:
    """The GAN baseline's counterpart of SDNet+'s factor step with ``train.plus_z=input``: the rows are the labelled
    batch (targets: its masks) and, with ``train.plus_unlabelled``, the unlabelled batch (targets: the argmax of the
    U-Net's detached prediction ``fake_masks``, (B, L, H, W) foreground probabilities)."""
    if ctx.plus_unlabelled and xu is not None and fake_masks is not None:
        m = torch.cat([m, own_labels(fake_masks)])
    losses = unet_factor_step(ctx.model, plus_images(x, xu, rows=m.shape[0]), m, ctx.optimisers["factors"],
                              ctx.weights, n_classes=ctx.n_classes).losses
    return {f"plus_{k}": v for k, v in losses.items()}


def _sdnet_schedule(ctx: IterationContext[SDNet], step: int, schedule: str) -> dict[str, float]:
    return sdnet_joint_iteration(ctx, step) if schedule == "joint" else sdnet_iteration(ctx, step)


ITERATIONS: dict[str, Callable[[IterationContext[Any], int, str], dict[str, float]]] = {
    "sdnet": _sdnet_schedule,
    "unet": lambda ctx, step, _: unet_iteration(ctx, step),
    "gan": lambda ctx, step, _: gan_iteration(ctx, step),
    "selftrain": lambda ctx, step, _: unet_iteration(ctx, step),
}
"""``train.method`` → one training iteration ``(context, step, train.schedule) -> logged terms`` (model in train
mode)."""


def selftrain_stage_end(train: TrainConfig, steps_per_epoch: int, stage: int) -> int:
    """The iteration after which self-train stage ``stage`` (0 = labelled only) ends: ⌊T·(stage+1)/(R+1)⌋ with
    T = min(max_steps, epochs · steps_per_epoch) and R = ``train.selftrain_rounds``."""
    total = train.epochs * steps_per_epoch
    if train.max_steps:
        total = min(total, train.max_steps)
    return total * (stage + 1) // (train.selftrain_rounds + 1)


def selftrain_stage_over(train: TrainConfig, *, round_: int, step: int, steps_per_epoch: int, stale_epochs: int,
                         minutes: float) -> bool:
    """Whether self-train stage ``round_`` is over (always False in the last round): early stopping triggered,
    its share of the iterations or of ``max_minutes`` is spent."""
    if round_ >= train.selftrain_rounds:
        return False
    if train.patience > 0 and stale_epochs >= train.patience:  # early stopping ends the round
        return True
    if step >= selftrain_stage_end(train, steps_per_epoch, round_):
        return True
    share = train.max_minutes * (round_ + 1) / (train.selftrain_rounds + 1)
    return bool(train.max_minutes) and minutes >= share


def selftrain_teacher(model: Net, best: Path | None, device: torch.device) -> Net:
    """The network that pseudo-labels the next round: the best model so far (``best`` checkpoint, loaded into a
    copy of ``model``), or ``model`` itself when there is none yet. Copying does not touch the global RNG."""
    if best is None or not best.is_file():
        return model
    teacher = copy.deepcopy(model)
    teacher.load_state_dict(load_checkpoint(best, map_location=device)["model"])
    return teacher


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
