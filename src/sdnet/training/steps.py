"""The four kinds of update in SDNet's per-iteration schedule, as explicit functions (authors-code §1.9, §1.11), and the
two U-Net updates of the paper's baselines (§4.3).

Per iteration the trainer runs (``train.schedule=steps``, the authors' schedule): :func:`supervised_step` on a
labelled batch, :func:`z_reconstruction_step`, (:func:`volume_step` on a batch with volume labels, LV-volume
multi-task only), :func:`unsupervised_step` on an unlabelled batch, :func:`z_reconstruction_step` again, then
:func:`discriminator_step`. With ``train.schedule=joint`` (the paper's single objective) it runs
:func:`joint_generator_step` on the labelled and unlabelled batches together, one :func:`z_reconstruction_step`
on the anatomy of both, (:func:`volume_step`), then :func:`discriminator_step`. Each step returns its
unweighted loss terms (floats) for logging; the paper's λ are applied only through :func:`sdnet.losses.weighted_sum`.

SDNet+ (``loss.mix`` / ``loss.acons`` > 0, our addition) adds :func:`factor_step` after the second
z-reconstruction: each anatomy of the iteration re-rendered with another modality factor, segmented and encoded
again.

The baselines (:mod:`sdnet.training.methods`) train :class:`~sdnet.models.UNetSegmenter` with
:func:`unet_supervised_step` (U-Net, self-train) and, for GAN, :func:`gan_generator_step` on an unlabelled batch
followed by the same :func:`discriminator_step` and :class:`FakeMaskPool` as SDNet.

Deviations from the authors' Keras code, for speed (issue "Performance"), each documented where it happens:

* the z-reconstruction step reuses the (detached) anatomy factor of the preceding generator step instead of a
  second ``Enc_Anatomy.predict`` pass — the same s up to BatchNorm using batch rather than running statistics;
* the discriminator's fake masks are the (detached) predictions of the unsupervised step, not a second inference
  pass over another image batch.

Length: one function per kind of update of every method — SDNet's five, the factor steps of SDNet+ and its GAN
control, the U-Net baselines' — each with the parameters it may change, so that the whole schedule reads top to
bottom in one file (DESIGN.md rule 5).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdnet.config import LossWeights
from sdnet.errors import SDNetError
from sdnet.losses import (
    anatomy_consistency,
    area_regression,
    cross_entropy,
    dice_loss,
    kl_divergence,
    l1_reconstruction,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    weighted_sum,
    z_reconstruction,
)
from sdnet.metrics import area_percent
from sdnet.models import MaskDiscriminator, SDNet, UNetSegmenter
from sdnet.models.sdnet import SDNetOutput
from sdnet.training.optim import KerasAdam


class NonFiniteLossError(SDNetError, RuntimeError):
    """A loss became NaN or infinite; training stops loudly (one line on the command line) instead of writing
    garbage checkpoints; ``last.pt`` keeps the last finite state."""


@dataclass
class StepResult:
    """Loss terms (unweighted, plus ``total``) and tensors the next step of the schedule may reuse."""

    losses: dict[str, float]
    anatomy: Tensor | None = None
    fake_masks: Tensor | None = None
    modality: Tensor | None = None  # (B, n_z) detached z of the batch (SDNet+ re-renders other images with it)


def one_hot_foreground(masks: Tensor, n_classes: int) -> Tensor:
    """(B, H, W) int class indices -> (B, L, H, W) float one-hot of the foreground classes 1..L."""
    return F.one_hot(masks, n_classes).permute(0, 3, 1, 2)[:, 1:].to(torch.float32)


@contextmanager
def frozen(discriminator: MaskDiscriminator) -> Iterator[MaskDiscriminator]:
    """D as the generator steps see it: no gradients to its parameters and eval mode, so that nothing of D changes
    in a generator step — not even spectral normalisation's power-iteration vectors, which a training-mode forward
    pass would update (D has no other mode-dependent layer). Restored afterwards, also on errors."""
    was_training = discriminator.training
    discriminator.requires_grad_(False)
    discriminator.eval()
    try:
        yield discriminator
    finally:
        discriminator.requires_grad_(True)
        discriminator.train(was_training)


def _finish(loss: Tensor, terms: dict[str, Tensor], optimizer: KerasAdam, what: str) -> dict[str, float]:
    value = float(loss.detach())
    finite = math.isfinite(value)
    if optimizer.all_finite is not None and not optimizer.all_finite(finite):  # data parallel: every process stops
        if finite:
            raise NonFiniteLossError(f"{what}: the loss of another process' shard is non-finite (lower optim.lr or "
                                     "check the inputs)")
        finite = False
    if not finite:
        values = {k: float(v.detach()) for k, v in terms.items()}
        bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]
        raise NonFiniteLossError(f"{what}: the loss is {value} (non-finite term(s): {', '.join(bad) or 'their sum'}; "
                                 "lower optim.lr or check the inputs)")
    optimizer.zero_grad()
    # Under mixed precision the trainer wraps the whole iteration in torch.autocast; the backward pass and the
    # update run outside it, as torch's AMP recipe prescribes (autocast is for forward passes and losses).
    with torch.autocast(device_type=loss.device.type, enabled=False):
        loss.backward()
        optimizer.step()
    out = {k: float(v.detach()) for k, v in terms.items()}
    out["total"] = value
    return out


def supervised_terms(
    model: SDNet, image: Tensor, masks: Tensor, weights: LossWeights, *, n_classes: int,
    volume_class: int | None = None,
) -> tuple[dict[str, Tensor], SDNetOutput]:
    """The unweighted loss terms of :func:`supervised_step` (``segm``, ``rec``, ``kl``; ``ce``, ``vol`` when their
    λ > 0; ``rec`` dropped when λ4 = 0) and the forward pass they came from. Shared with the gradient analysis
    (:mod:`sdnet.analysis.gradients`), so that it measures exactly the terms training optimises."""
    out = model(image)
    target = one_hot_foreground(masks, n_classes)
    terms = {
        "segm": dice_loss(out.mask_probabilities[:, 1:], target),
        "rec": l1_reconstruction(image, out.reconstruction),
        "kl": kl_divergence(out.modality.mu, out.modality.logvar),
    }
    if weights.rec == 0:
        del terms["rec"]
    if weights.ce > 0:
        terms["ce"] = cross_entropy(out.mask_logits, masks)
    if weights.vol > 0 and model.area_regressor is not None and volume_class is not None:
        terms["vol"] = area_regression(model.regress_area(out.anatomy), area_percent(masks, volume_class))
    return terms, out


def supervised_step(
    model: SDNet, image: Tensor, masks: Tensor, optimizer: KerasAdam, weights: LossWeights, *, n_classes: int,
    volume_class: int | None = None,
) -> StepResult:
    """Labelled batch: λ2 L_segm + λ4 L_rec + λ1 L_KL (no adversarial term on labelled data, as the authors),
    plus the optional cross-entropy when ``weights.ce`` > 0, and λ_vol L_vol on the LV area of the masks when
    ``weights.vol`` > 0 and the model has an area regressor (LV-volume multi-task, paper §5.2).

    Args:
        image: (B, 1, H, W) in [−1, 1].
        masks: (B, H, W) int64 class indices.
        volume_class: class index of the LV cavity (needed for the volume term).
    """
    terms, out = supervised_terms(model, image, masks, weights, n_classes=n_classes, volume_class=volume_class)
    losses = _finish(weighted_sum(terms, weights), terms, optimizer, "supervised step")
    return StepResult(losses=losses, anatomy=out.anatomy.detach(), modality=out.modality.z.detach().float())


def volume_step(model: SDNet, image: Tensor, areas: Tensor, optimizer: KerasAdam, weights: LossWeights) -> StepResult:
    """Batch with volume labels but no masks (LV-volume multi-task, paper §5.2): λ_vol L_vol of the area regressed
    from s = f_anatomy(x). Updates f_anatomy (through the straight-through binarisation) and the regressor.

    Args:
        image: (B, 1, H, W) in [−1, 1].
        areas: (B,) true LV areas in percent of the slice's pixels.
    """
    terms = {"vol": area_regression(model.regress_area(model.anatomy_encoder(image)), areas)}
    return StepResult(losses=_finish(weighted_sum(terms, weights), terms, optimizer, "volume step"))


def z_reconstruction_step(model: SDNet, anatomy: Tensor, optimizer: KerasAdam, weights: LossWeights) -> StepResult:
    """λ5 L_zrec: decode a prior sample z ~ N(0, I) with a real anatomy, re-encode it, L1 to z (§3.3.1).

    As in the authors' code the re-encoding uses the *sampled* modality code and the real (detached) anatomy, so
    only the decoder and the modality encoder receive gradients (authors-code §1.9).

    Args:
        anatomy: (B, C, H, W) detached anatomy factor of real images.
    """
    n_z = model.modality_encoder.n_z
    # z in float32 at least, also when the anatomy comes from a bf16 forward pass (train.precision=bf16).
    dtype = torch.promote_types(anatomy.dtype, torch.float32)
    z = torch.randn(anatomy.shape[0], n_z, device=anatomy.device, dtype=dtype)
    generated = model.decode(anatomy, z)
    code = model.modality_encoder(anatomy, generated)
    terms = {"zrec": z_reconstruction(z, code.z)}
    return StepResult(losses=_finish(weighted_sum(terms, weights), terms, optimizer, "z-reconstruction step"))


def unsupervised_terms(
    model: SDNet, discriminator: MaskDiscriminator | None, image: Tensor, weights: LossWeights
) -> tuple[dict[str, Tensor], SDNetOutput]:
    """The unweighted loss terms of :func:`unsupervised_step` (``rec``, ``kl``, and ``adv`` computed with D frozen,
    so that no gradient reaches D) and the forward pass they came from."""
    out = model(image)
    terms = {
        "rec": l1_reconstruction(image, out.reconstruction),
        "kl": kl_divergence(out.modality.mu, out.modality.logvar),
    }
    if discriminator is not None and weights.adv > 0:
        with frozen(discriminator):
            terms["adv"] = lsgan_generator_loss(discriminator(out.mask_probabilities[:, 1:]))
    return terms, out


def unsupervised_step(
    model: SDNet,
    discriminator: MaskDiscriminator | None,
    image: Tensor,
    optimizer: KerasAdam,
    weights: LossWeights,
) -> StepResult:
    """Unlabelled batch: λ3 L_adv (generator side, D frozen) + λ4 L_rec + λ1 L_KL.

    Args:
        discriminator: None (or λ3 = 0) drops the adversarial term.
        image: (B, 1, H, W) in [−1, 1].

    Returns:
        losses, the detached anatomy (for the z-reconstruction step) and the detached predicted foreground masks
        (B, L, H, W) for the discriminator's fake pool.
    """
    terms, out = unsupervised_terms(model, discriminator, image, weights)
    # D's parameters took no part in the graph (frozen while the adversarial term was computed), so the backward
    # pass outside the frozen block gives D no gradient either.
    losses = _finish(weighted_sum(terms, weights), terms, optimizer, "unsupervised step")
    fake = out.mask_probabilities[:, 1:]
    # float32 fakes for the pool, whatever the forward pass's precision (the pool outlives precision changes).
    return StepResult(losses=losses, anatomy=out.anatomy.detach(), fake_masks=fake.detach().float(),
                      modality=out.modality.z.detach().float())


@contextmanager
def _buffers_kept(module: nn.Module) -> Iterator[None]:
    """Run a forward pass of ``module`` in train mode (batch statistics) without moving its BatchNorm running
    statistics: its buffers are restored afterwards."""
    saved = [b.detach().clone() for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(module.buffers(), saved, strict=True):
                buffer.copy_(value)


def _mix_term(logits: Tensor, probabilities: Tensor, masks: Tensor, n_classes: int) -> Tensor:
    """L_mix: Dice on the foreground classes + cross-entropy, of (R, n_classes, H, W) logits against (R, H, W)
    class indices."""
    return dice_loss(probabilities[:, 1:], one_hot_foreground(masks, n_classes)) + cross_entropy(logits, masks)


def factor_terms(
    model: SDNet, anatomy: Tensor, masks: Tensor, codes: Tensor, weights: LossWeights, *, n_classes: int,
    images: Tensor | None = None, anatomy_target: Tensor | None = None,
) -> dict[str, Tensor]:
    """The unweighted loss terms of :func:`factor_step` (``mix``, ``acons`` as their λ > 0); the re-rendering
    x̃ = g(s_i, z_j) is made without gradient and leaves g's BatchNorm statistics as they were. With ``images``
    (the control ``train.plus_z=input``) x̃ is the input image x_i itself: the same update without the decoder.
    ``anatomy_target`` (the EMA teacher's anatomy, ``train.plus_teacher``) replaces ``anatomy`` as λ_acons'
    target."""
    if images is not None:
        rendered = images
    else:
        with torch.no_grad(), _buffers_kept(model.decoder):  # the re-rendering changes no state of g
            rendered = model.decode(anatomy, codes.to(anatomy.dtype))
    s_tilde = model.anatomy_encoder(rendered)
    terms: dict[str, Tensor] = {}
    if weights.mix > 0:
        seg = model.segment_anatomy(s_tilde)
        terms["mix"] = _mix_term(seg.logits, seg.probabilities, masks, n_classes)
    if weights.acons > 0:
        terms["acons"] = anatomy_consistency(s_tilde, anatomy if anatomy_target is None else anatomy_target)
    return terms


def factor_step(
    model: SDNet, anatomy: Tensor, masks: Tensor, codes: Tensor, optimizer: KerasAdam, weights: LossWeights, *,
    n_classes: int, images: Tensor | None = None, anatomy_target: Tensor | None = None,
) -> StepResult:
    """SDNet+ (our addition, not in the paper): use the factors to make new training images.

    x̃ = g(s_i, z_j) re-renders anatomy s_i with another modality factor z_j (no gradient: an augmentation drawn by
    the model itself). Then λ_mix L_mix segments x̃ against the target of x_i (Dice + cross-entropy) and λ_acons
    L_acons asks f_anatomy(x̃) to equal s_i (:func:`factor_terms`). Updates f_anatomy and h only (``optimizer``
    holds :func:`factor_parameters`): the decoder and f_modality are not asked to change so that the re-rendering
    looks easier, and the decoder's BatchNorm statistics are left as they were.

    Args:
        anatomy: (B, C, H, W) detached anatomy factors s_i.
        masks: (B, H, W) int64 targets of the images s_i came from (true masks, or detached own segmentations).
        codes: (B, n_z) modality factors to render with, paired row by row with ``anatomy``.
        images: (B, 1, H, W) the images x_i the rows came from, segmented instead of a re-rendering (the control
            ``train.plus_z=input``: a second segmentation update on the iteration's own images); None re-renders.
        anatomy_target: (B, C, H, W) λ_acons' target instead of ``anatomy`` (the EMA teacher's anatomy of x_i,
            ``train.plus_teacher`` > 0; :mod:`sdnet.training.teacher`); None: ``anatomy``.
    """
    terms = factor_terms(model, anatomy, masks, codes, weights, n_classes=n_classes, images=images,
                         anatomy_target=anatomy_target)
    return StepResult(losses=_finish(weighted_sum(terms, weights), terms, optimizer, "factor step"))


def joint_generator_step(
    model: SDNet,
    discriminator: MaskDiscriminator | None,
    image: Tensor,
    masks: Tensor,
    unlabelled: Tensor | None,
    optimizer: KerasAdam,
    weights: LossWeights,
    *,
    n_classes: int,
) -> StepResult:
    """The paper's single objective (§4.2) as one generator update: λ2 L_segm (+ λ_ce CE) on the labelled batch,
    λ3 L_adv (D frozen) on the unlabelled batch, λ4 L_rec + λ1 L_KL on both — one backward pass of the λ-weighted
    sum, one Adam step (``train.schedule=joint``).

    Unlike the authors' per-step schedule, where the supervised and unsupervised terms are separate updates with
    their own Adam (so a λ that scales a whole update has no effect: Adam is invariant to a constant loss scale),
    here the λ set the balance between segmentation, reconstruction and the adversarial term at every parameter.
    The two batches go through the networks as one batch of 2B images (one BatchNorm statistic for both).

    Args:
        image: (B, 1, H, W) labelled images in [−1, 1].
        masks: (B, H, W) int64 class indices of ``image``.
        unlabelled: (B', 1, H, W) unlabelled images, or None (fully supervised: no adversarial term).
        discriminator: None (or λ3 = 0) drops the adversarial term.

    Returns:
        losses (``segm``, ``rec``, ``kl``, ``ce``, ``adv`` as present, and ``total``), the detached anatomy of all
        B + B' images (for the z-reconstruction step) and the detached predicted foreground masks (B', L, H, W) of
        the unlabelled images (for the discriminator's fake pool; None without unlabelled images).
    """
    n = image.shape[0]
    both = image if unlabelled is None else torch.cat([image, unlabelled])
    out = model(both)
    target = one_hot_foreground(masks, n_classes)
    terms = {
        "segm": dice_loss(out.mask_probabilities[:n, 1:], target),
        "rec": l1_reconstruction(both, out.reconstruction),
        "kl": kl_divergence(out.modality.mu, out.modality.logvar),
    }
    if weights.rec == 0:
        del terms["rec"]
    if weights.ce > 0:
        terms["ce"] = cross_entropy(out.mask_logits[:n], masks)
    fake = None if unlabelled is None else out.mask_probabilities[n:, 1:]
    if fake is not None and discriminator is not None and weights.adv > 0:
        with frozen(discriminator):
            terms["adv"] = lsgan_generator_loss(discriminator(fake))
            losses = _finish(weighted_sum(terms, weights), terms, optimizer, "joint generator step")
    else:
        losses = _finish(weighted_sum(terms, weights), terms, optimizer, "joint generator step")
    return StepResult(losses=losses, anatomy=out.anatomy.detach(),
                      fake_masks=None if fake is None else fake.detach().float())


def unet_supervised_step(
    model: UNetSegmenter, image: Tensor, masks: Tensor, optimizer: KerasAdam, weights: LossWeights, *, n_classes: int
) -> StepResult:
    """Labelled batch of the U-Net baselines: λ2 L_segm, plus the optional cross-entropy when ``weights.ce`` > 0 —
    the segmentation terms of :func:`supervised_step`, without reconstruction or KL (a U-Net has neither).

    Args:
        image: (B, 1, H, W) in [−1, 1].
        masks: (B, H, W) int64 class indices (true or pseudo-labels).
    """
    logits = model(image)  # (B, n_classes, H, W)
    probabilities = torch.softmax(logits, dim=1)
    terms = {"segm": dice_loss(probabilities[:, 1:], one_hot_foreground(masks, n_classes))}
    if weights.ce > 0:
        terms["ce"] = cross_entropy(logits, masks)
    return StepResult(losses=_finish(weighted_sum(terms, weights), terms, optimizer, "supervised step"))


def unet_factor_step(
    model: UNetSegmenter, image: Tensor, masks: Tensor, optimizer: KerasAdam, weights: LossWeights, *, n_classes: int
) -> StepResult:
    """λ_mix L_mix for the U-Net baselines (the control ``ganplus-input``): segment ``image`` against ``masks`` —
    Dice + cross-entropy, as :func:`factor_terms`' ``mix`` — in an update of its own.

    Args:
        image: (R, 1, H, W) in [−1, 1]: the iteration's labelled images, then its unlabelled ones.
        masks: (R, H, W) int64: true masks, then the U-Net's own detached segmentations.
    """
    logits = model(image)  # (R, n_classes, H, W)
    terms = {"mix": _mix_term(logits, torch.softmax(logits, dim=1), masks, n_classes)}
    return StepResult(losses=_finish(weighted_sum(terms, weights), terms, optimizer, "factor step"))


def gan_generator_step(
    model: UNetSegmenter, discriminator: MaskDiscriminator, image: Tensor, optimizer: KerasAdam, weights: LossWeights
) -> StepResult:
    """Unlabelled batch of the GAN baseline: λ3 L_adv (generator side, D frozen) on the U-Net's predicted
    foreground masks — :func:`unsupervised_step` without reconstruction and KL.

    Args:
        image: (B, 1, H, W) in [−1, 1].

    Returns:
        losses and the detached predicted foreground masks (B, L, H, W) for the discriminator's fake pool.
    """
    fake = torch.softmax(model(image), dim=1)[:, 1:]  # (B, L, H, W)
    with frozen(discriminator):
        terms = {"adv": lsgan_generator_loss(discriminator(fake))}
        losses = _finish(weighted_sum(terms, weights), terms, optimizer, "adversarial generator step")
    return StepResult(losses=losses, fake_masks=fake.detach().float())


def discriminator_step(
    discriminator: MaskDiscriminator, real_masks: Tensor, fake_masks: Tensor, optimizer: KerasAdam
) -> StepResult:
    """D_M update: E[(D(m) − 1)²] + E[D(h(s))²] (LSGAN, §3.2). Unweighted, as in the authors' ``D_trainer``.

    Args:
        real_masks: (B, L, H, W) one-hot foreground masks.
        fake_masks: (B, L, H, W) detached predicted foreground probabilities.
    """
    loss = lsgan_discriminator_loss(discriminator(real_masks), discriminator(fake_masks))
    terms = {"disc": loss}
    return StepResult(losses=_finish(loss, terms, optimizer, "discriminator step"))


class FakeMaskPool:
    """History of predicted masks shown to D (the authors' pool of 50, authors-code §1.11).

    New fakes are appended (oldest dropped beyond ``capacity``); a batch is then drawn without replacement from
    the pool using the global torch RNG (saved in checkpoints). ``capacity`` 0 passes fakes straight through.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.masks: Tensor | None = None

    def __call__(self, fakes: Tensor) -> Tensor:
        if self.capacity <= 0:
            return fakes
        pool = fakes if self.masks is None else torch.cat([self.masks.to(fakes.device), fakes])
        self.masks = pool[-self.capacity :].detach()
        pick = torch.randperm(self.masks.shape[0])[: fakes.shape[0]].to(fakes.device)
        return self.masks[pick]

    def state_dict(self) -> dict[str, Tensor]:
        return {} if self.masks is None else {"masks": self.masks.cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.masks = state.get("masks")


def generator_parameters(model: SDNet) -> list[nn.Parameter]:
    """Parameters updated by the generator steps: f_anatomy, f_modality, g and h (and the area regressor)."""
    return list(model.parameters())


def volume_parameters(model: SDNet) -> list[nn.Parameter]:
    """Parameters updated by the volume step: f_anatomy and the area regressor."""
    regressor = [] if model.area_regressor is None else list(model.area_regressor.parameters())
    return list(model.anatomy_encoder.parameters()) + regressor


def factor_parameters(model: SDNet) -> list[nn.Parameter]:
    """Parameters updated by the SDNet+ factor step: f_anatomy and the segmentor h."""
    return list(model.anatomy_encoder.parameters()) + list(model.segmentor.parameters())


def z_regressor_parameters(model: SDNet) -> list[nn.Parameter]:
    """Parameters updated by the z-reconstruction step: g and f_modality only."""
    return list(model.decoder.parameters()) + list(model.modality_encoder.parameters())
