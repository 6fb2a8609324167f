"""The baseline: a deliberately simple, faithful eager port of one iteration of the authors' Keras schedule.

authors-code §1.9–1.11 (``docs/authors-code.md``). Per iteration:

1. ``G_supervised_trainer.fit`` on a labelled batch: λ2 Dice + λ4 L1 reconstruction + λ1 KL (+ the optional
   cross-entropy of ``loss.ce``);
2. ``Z_Regressor.fit([Enc_Anatomy.predict(x), z ~ N(0, I)], z)``: the anatomy encoder is *run again* on the
   labelled images, in inference mode (BatchNorm running statistics, no gradients), after the update of step 1;
3. ``G_trainer.fit`` on an unlabelled batch: λ3 LSGAN generator loss + λ4 L1 + λ1 KL. The discriminator's
   parameters are left trainable, as a straightforward port would: the backward pass also computes D's weight
   gradients, which the discriminator step then discards (``zero_grad``);
4. ``Z_Regressor.fit`` again, with ``Enc_Anatomy.predict`` on the unlabelled images;
5. ``D_trainer.fit([m, fake], [1, 0])``: the fake masks come from a *separate prediction pass*
   ``Segmentor.predict(Enc_Anatomy.predict(x_d))`` over a batch of the ``discriminator_images`` stream, through
   the pool of 50 past fakes.

Every optimiser is a plain ``torch.optim.Adam`` with torch's default implementation on the CPU (the
per-parameter loop), its learning rate set by hand to Keras' lr / (1 + decay · t) before each update.

Only the orchestration is this module's own: the networks (:mod:`sdnet.models`), the loss functions
(:mod:`sdnet.losses`) and the fake-mask pool (:class:`sdnet.training.steps.FakeMaskPool`) are the library's. The
global torch RNG is consumed in the same order as by :meth:`sdnet.training.Trainer.train_iteration` (VAE samples,
prior z samples, pool permutation), so both versions see the same random numbers.

What the library does differently (see the docstring of :mod:`sdnet.training.steps`): it reuses the (detached,
pre-update, batch-statistics) anatomy of the preceding generator step for the z-reconstruction steps, shows D the
unsupervised step's (pre-update, batch-statistics) predictions instead of a second prediction pass, freezes D
during the generator's adversarial step and uses fused Adam kernels.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.setups import IterationBatch
from sdnet.config import OptimConfig, RunConfig
from sdnet.losses import (
    cross_entropy,
    dice_loss,
    kl_divergence,
    l1_reconstruction,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    weighted_sum,
    z_reconstruction,
)
from sdnet.models import MaskDiscriminator, SDNet
from sdnet.training.steps import FakeMaskPool


class PlainKerasAdam:
    """``torch.optim.Adam`` with its defaults, plus Keras' inverse-time decay of the learning rate by hand."""

    def __init__(self, params: list[nn.Parameter], config: OptimConfig) -> None:
        self.config = config
        self.optimizer = torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)
        self.updates = 0

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def step(self) -> None:
        lr = self.config.lr / (1.0 + self.config.decay * self.updates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.updates += 1


@dataclass
class EagerSDNet:
    """Networks, optimisers and fake pool of the eager baseline; :meth:`iteration` runs one iteration.

    Build it with :meth:`create`.
    """

    model: SDNet
    discriminator: MaskDiscriminator | None
    config: RunConfig
    optimisers: dict[str, PlainKerasAdam] = field(default_factory=dict)
    pool: FakeMaskPool = field(default_factory=lambda: FakeMaskPool(0))

    @classmethod
    def create(
        cls, model: SDNet, discriminator: MaskDiscriminator | None, config: RunConfig, *, copy_modules: bool = False
    ) -> EagerSDNet:
        """The baseline around ``model`` and ``discriminator`` (deep copies when ``copy_modules``), with fresh
        optimisers (the four Keras trainers of authors-code §1.10) and an empty fake pool."""
        if copy_modules:
            model = copy.deepcopy(model)
            discriminator = copy.deepcopy(discriminator)
        oc = config.optim
        generator = list(model.parameters())
        optimisers = {
            "supervised": PlainKerasAdam(generator, oc),
            "unsupervised": PlainKerasAdam(generator, oc),
            "zrec": PlainKerasAdam(list(model.decoder.parameters()) + list(model.modality_encoder.parameters()), oc),
        }
        if discriminator is not None:
            optimisers["discriminator"] = PlainKerasAdam(list(discriminator.parameters()), oc)
        return cls(model=model, discriminator=discriminator, config=config, optimisers=optimisers,
                   pool=FakeMaskPool(config.train.fake_pool_size))

    # ------------------------------------------------------------------------------------------ Keras "predict"
    def predict_anatomy(self, images: Tensor) -> Tensor:
        """``Enc_Anatomy.predict(x)``: BatchNorm in inference mode, no gradients. (B, C, H, W)."""
        encoder = self.model.anatomy_encoder
        encoder.eval()
        try:
            with torch.no_grad():
                anatomy: Tensor = encoder(images)
        finally:
            encoder.train()
        return anatomy

    def predict_masks(self, images: Tensor) -> Tensor:
        """``Segmentor.predict(Enc_Anatomy.predict(x))``: foreground probabilities (B, L, H, W)."""
        self.model.eval()
        try:
            with torch.no_grad():
                fake = self.model.segment(images).probabilities[:, 1:]
        finally:
            self.model.train()
        return fake

    # ------------------------------------------------------------------------------------------ the iteration
    def _update(self, name: str, loss: Tensor) -> None:
        optimiser = self.optimisers[name]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    def _z_regression(self, images: Tensor) -> float:
        anatomy = self.predict_anatomy(images)
        z = torch.randn(anatomy.shape[0], self.model.modality_encoder.n_z, device=anatomy.device,
                        dtype=anatomy.dtype)
        generated = self.model.decode(anatomy, z)
        code = self.model.modality_encoder(anatomy, generated)
        term = z_reconstruction(z, code.z)
        self._update("zrec", weighted_sum({"zrec": term}, self.config.loss))
        return float(term.detach())

    def iteration(self, batch: IterationBatch) -> dict[str, float]:
        """One iteration of the authors' schedule; returns the loss terms under the trainer's log names."""
        weights = self.config.loss
        n_classes = self.config.model.n_classes
        model = self.model
        model.train()
        logs: dict[str, float] = {}

        # 1. supervised generator step
        out = model(batch.images)
        target = F.one_hot(batch.masks, n_classes).permute(0, 3, 1, 2)[:, 1:].float()
        terms = {"segm": dice_loss(out.mask_probabilities[:, 1:], target),
                 "rec": l1_reconstruction(batch.images, out.reconstruction),
                 "kl": kl_divergence(out.modality.mu, out.modality.logvar)}
        if weights.rec == 0:
            del terms["rec"]
        if weights.ce > 0:
            terms["ce"] = cross_entropy(out.mask_logits, batch.masks)
        loss = weighted_sum(terms, weights)
        self._update("supervised", loss)
        logs.update({f"sup_{k}": float(v.detach()) for k, v in terms.items()})
        logs["sup_total"] = float(loss.detach())

        # 2. z-regressor on the labelled images (anatomy predicted again)
        if weights.zrec > 0:
            logs["sup_zrec"] = self._z_regression(batch.images)

        if batch.unlabelled is None:
            return logs

        # 3. unsupervised generator step; D left trainable (its gradients are computed, then discarded)
        out = model(batch.unlabelled)
        terms = {"rec": l1_reconstruction(batch.unlabelled, out.reconstruction),
                 "kl": kl_divergence(out.modality.mu, out.modality.logvar)}
        use_d = self.discriminator is not None and weights.adv > 0
        if use_d:
            assert self.discriminator is not None
            terms["adv"] = lsgan_generator_loss(self.discriminator(out.mask_probabilities[:, 1:]))
        loss = weighted_sum(terms, weights)
        self._update("unsupervised", loss)
        logs.update({f"unsup_{k}": float(v.detach()) for k, v in terms.items()})
        logs["unsup_total"] = float(loss.detach())

        # 4. z-regressor on the unlabelled images (anatomy predicted again)
        if weights.zrec > 0:
            logs["unsup_zrec"] = self._z_regression(batch.unlabelled)

        # 5. discriminator step on fakes from a separate prediction pass
        if use_d and batch.real_masks is not None:
            assert self.discriminator is not None
            images = batch.discriminator_images if batch.discriminator_images is not None else batch.unlabelled
            fake = self.pool(self.predict_masks(images))
            real = F.one_hot(batch.real_masks, n_classes).permute(0, 3, 1, 2)[:, 1:].float()
            loss = lsgan_discriminator_loss(self.discriminator(real), self.discriminator(fake))
            self._update("discriminator", loss)
            logs["disc"] = float(loss.detach())
        return logs
