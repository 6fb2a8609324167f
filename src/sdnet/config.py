"""Frozen, nested run configuration: model sizes, loss weights (the paper's λ1..λ5), optimiser, data and training.

Every run folder and every checkpoint stores the *resolved* configuration (``config.yaml`` / the checkpoint's
``config`` entry), so a run can be understood and resumed from its folder alone.

Configs are plain frozen dataclasses. Variants are derived with :func:`apply_overrides` (``"train.lr=2e-4"``) or
:func:`dataclasses.replace`; nothing mutates a config after it is built. Unknown keys are errors
(:class:`ConfigError`), never silently ignored.

Length: one schema — every section of a run's configuration with its defaults (the authors' values, named where
they come from) and its validation, plus the single YAML / ``--set`` path that builds it. Kept in one file so the
whole configuration a checkpoint stores can be read against the paper in one place.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from sdnet.errors import SDNetError
from sdnet.outputs import write_text

BinarisationMode = Literal["argmax", "round", "none"]
TrainMethod = Literal["sdnet", "unet", "gan", "selftrain"]
TRAIN_METHODS: tuple[str, ...] = typing.get_args(TrainMethod)
"""The values of ``train.method``: SDNet and the paper's baselines (§4.3)."""
Schedule = Literal["steps", "joint"]
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)
"""The values of ``train.schedule``: the authors' per-step updates, or the paper's single objective."""
Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
PlusSource = Literal["batch", "prior", "both", "own", "input"]
PLUS_SOURCES: tuple[str, ...] = typing.get_args(PlusSource)
"""The values of ``train.precision``: float32, or bfloat16 mixed precision (autocast)."""


class ConfigError(SDNetError, ValueError):
    """A configuration key or value is invalid. The message names the offending key."""


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the five SDNet networks. Defaults are the authors' ACDC configuration (paper §4.2, authors-code §1.2).

    Attributes:
        image_size: H = W of the (square) input slices, in pixels.
        in_channels: image channels (1 for MR/CT).
        anatomy_channels: C, channels of the binary anatomy factor s (8 for ACDC, 16 for MR+CT).
        n_z: n_z, dimension of the modality factor z.
        unet_filters: base filters of the anatomy U-Net (doubled at each level).
        unet_depth: number of down-sampling steps of the U-Net.
        binarisation: ``none`` (default: the softmax anatomy map, unbinarised), ``round`` (the paper's ⌊s+0.5⌋ and
            the authors' rounding, which leaves a pixel all-zero when no channel reaches 0.5 — at initialisation
            every pixel, since a C-way softmax starts near 1/C) or ``argmax`` (one-hot of the softmax argmax).
            Straight-through gradient in both binary modes. The default is a measured deviation from the paper:
            at 3 labelled ACDC patients (600 iterations, 3 seeds; docs/results/acdc_fewlabel_probes.md) the soft
            map scored test 3D Dice 0.675 on average against 0.505 for rounding (which collapsed on one seed to
            0.213) and 0.516 for argmax. ``round`` keeps the paper's binary factor for disentanglement work.
        modality_filters: filters of each strided convolution of the modality encoder.
        modality_layers: number of strided (valid-padding) convolutions of the modality encoder.
        modality_hidden: width of the dense layer before the μ / log σ² heads.
        decoder_blocks: FiLM residual blocks of the decoder.
        decoder_width: channels inside the decoder; 0 means "= anatomy_channels" (authors).
        segmentor_filters: filters of the segmentor's two 3×3 convolutions.
        n_classes: L + 1 segmentation classes, background (index 0) included.
        discriminator_filters: filters of the mask discriminator's first convolution (doubled per block).
        discriminator_blocks: strided blocks of the mask discriminator after the first convolution.
        discriminator_spectral_norm: wrap the discriminator's convolutions in spectral normalisation (default on:
            the authors regularise D's spectral norm; with the soft anatomy at 3 labelled patients it raised the
            test Dice from 0.590 to 0.681 over two seeds, docs/results/acdc_fewlabel_probes.md).
        area_regressor: add the LV-area regressor on s (paper §5.2, :class:`~sdnet.models.AreaRegressor`) for the
            LV-volume multi-task; it is trained when ``loss.vol`` > 0.
        bn_momentum: PyTorch BatchNorm momentum (weight of the new batch statistic) of every BatchNorm layer. The
            default 0.01 is Keras' 0.99; running statistics then average ~100 steps and lag behind fast-changing
            weights (short, high-learning-rate runs such as the demo use 0.1).
    """

    image_size: int = 224
    in_channels: int = 1
    anatomy_channels: int = 8
    n_z: int = 8
    unet_filters: int = 64
    unet_depth: int = 4
    binarisation: BinarisationMode = "none"
    modality_filters: int = 16
    modality_layers: int = 4
    modality_hidden: int = 32
    decoder_blocks: int = 4
    decoder_width: int = 0
    segmentor_filters: int = 64
    n_classes: int = 4
    discriminator_filters: int = 64
    discriminator_blocks: int = 4
    discriminator_spectral_norm: bool = True
    area_regressor: bool = False
    bn_momentum: float = 0.01

    def __post_init__(self) -> None:
        _positive(self, "model", "image_size", "in_channels", "anatomy_channels", "n_z", "unet_filters",
                  "unet_depth", "modality_filters", "modality_layers", "modality_hidden", "decoder_blocks",
                  "segmentor_filters", "discriminator_filters", "discriminator_blocks")
        if self.n_classes < 2:
            raise ConfigError(f"model.n_classes must be >= 2 (background + >= 1 structure), got {self.n_classes}")
        if not 0 < self.bn_momentum <= 1:
            raise ConfigError(f"model.bn_momentum must lie in (0, 1], got {self.bn_momentum}")
        if self.decoder_width < 0:
            raise ConfigError(f"model.decoder_width must be >= 0, got {self.decoder_width}")
        if self.image_size % (2**self.unet_depth) != 0:
            raise ConfigError(
                f"model.image_size={self.image_size} must be divisible by 2**unet_depth={2**self.unet_depth}"
            )
        if self.binarisation not in ("argmax", "round", "none"):
            raise ConfigError(f"model.binarisation must be argmax, round or none, got {self.binarisation!r}")
        size = self.image_size
        for _ in range(self.modality_layers):
            size = (size - 3) // 2 + 1
        if size < 1:
            raise ConfigError(
                f"model.image_size={self.image_size} is too small for {self.modality_layers} modality-encoder layers"
            )


@dataclass(frozen=True)
class LossWeights:
    """The weights of paper eq. (§4.2) L = λ1 L_KL + λ2 L_segm + λ3 L_adv + λ4 L_rec + λ5 L_zrec.

    Attributes:
        kl: λ1, KL divergence of q(z|x, s) from N(0, I).
        segm: λ2, supervised Dice loss.
        adv: λ3, LSGAN adversarial term on unlabelled masks (generator side).
        rec: λ4, L1 image reconstruction.
        zrec: λ5, L1 modality-factor reconstruction.
        ce: weight of a pixel-wise cross-entropy added to the supervised step (not in the paper; 0 = the paper).
        vol: λ_vol, L1 regression of the LV area (percent of the slice) by the area regressor (paper §5.2, which
            gives no weight); 0 = no volume task. Needs ``model.area_regressor``.
        mix: λ_mix, SDNet+ (our addition, not in the paper): the segmentation of re-rendered images g(s_i, z_j) —
            an image's anatomy with another image's (or a prior) modality factor — against the mask of x_i (Dice
            plus cross-entropy; for unlabelled x_i its own detached segmentation), in a factor step after the
            authors' steps (:func:`sdnet.training.steps.factor_step`); 0 = off.
        acons: λ_acons, SDNet+ anatomy consistency: L1 between f_anatomy(g(s_i, z_j)) and the detached s_i; 0 = off.
    """

    kl: float = 0.01
    segm: float = 10.0
    adv: float = 10.0
    rec: float = 1.0
    zrec: float = 1.0
    ce: float = 0.0
    vol: float = 0.0
    mix: float = 0.0
    acons: float = 0.0

    @property
    def plus(self) -> bool:
        """Whether an SDNet+ term is on (``mix`` or ``acons`` > 0)."""
        return self.mix > 0 or self.acons > 0

    def __post_init__(self) -> None:
        for name in ("kl", "segm", "adv", "rec", "zrec", "ce", "vol", "mix", "acons"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class OptimConfig:
    """Adam with the Keras inverse-time decay lr_t = lr / (1 + decay · t), t = the optimiser's own updates.

    Keras' ``epsilon`` default is 1e-7 (authors-code §1.10).
    """

    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    eps: float = 1e-7
    decay: float = 1e-4

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise ConfigError("optim.beta1 and optim.beta2 must lie in [0, 1)")
        if self.decay < 0 or self.eps <= 0:
            raise ConfigError("optim.decay must be >= 0 and optim.eps > 0")


@dataclass(frozen=True)
class DataConfig:
    r"""Where the images come from and how subjects are split.

    Attributes:
        root: dataset folder; empty until given on the command line.
        format: dataset layout: ``phantom`` (written by ``sdnet phantom``), ``acdc`` (the ACDC challenge release:
            patientXXX/Info.cfg, frames, _gt, 4D cine), ``ssl4mis`` (the SSL4MIS HDF5 release of ACDC) or
            ``nnunet`` (an nnU-Net raw folder: dataset.json, imagesTr/, labelsTr/, imagesTs/) or ``mmwhs`` (the
            MM-WHS 2017 release: {ct,mr}_train/*_image.nii.gz and *_label.nii.gz, 7 structures; MR, CT or MR+CT).
        modality: which rendering(s) of a multi-modality dataset to use: one name (``MR`` or ``CT`` for the
            phantom) or several joined by ``+`` (``MR+CT``: multimodal training, paper §5.3; a subject's renderings
            share its subject id, so they always land in the same part of the split).
        modality_mix: with several modalities, the fraction of the *training* subjects whose images of each
            modality are used, e.g. ``MR:1.0,CT:0.125`` (paper Table 3; empty = every training subject in every
            modality). The subjects are taken from one seeded order in consecutive blocks, modality after modality
            (wrapping around), so the blocks are disjoint when the fractions sum to at most 1 (no subject seen in
            two modalities, as in MM-WHS) and overlap otherwise. A non-zero fraction takes at least one subject.
            Test subjects are always scored in every modality; validation subjects (which pick ``best.pt``) only in
            the modalities with a non-zero fraction, so that no model is selected on a modality it never saw.
        split: ``random`` (seeded subject-level split by val/test fractions) or ``ssl4mis`` (the release's fixed
            70/10/20 patient lists; format ``ssl4mis`` only).
        subject_pattern: nnU-Net only: a regular expression whose first group extracts the subject id from a case
            id (e.g. ``^(patient\d+)``), so that splits keep all cases of a subject together.
        target_spacing_mm: in-plane resampling target (authors: 1.37 mm; 0 = keep the native grid). Skipped, with a
            logged warning, for datasets without spacing.
        resize: if > 0, resize every slice to resize × resize (bilinear images, nearest labels) after resampling
            and before the centre crop; for data without known spacing (SSL4MIS), as in its release.
        clip_low / clip_high: percentiles of each volume's intensities clipped before scaling to [−1, 1].
        cache_dir: where preprocessed arrays are cached (keyed by the preprocessing settings); empty = the
            user cache folder (``$XDG_CACHE_HOME/sdnet`` or ``~/.cache/sdnet``); ``none`` disables the cache.
        val_fraction / test_fraction: subject-level split fractions (the rest is training).
        labelled_fraction: fraction of *training subjects* whose masks are used (ignored if labelled_subjects > 0).
        labelled_subjects: exact number of labelled training subjects (0 = use labelled_fraction).
        labelled_phases: ``ed_es`` (only ED and ES frames carry masks, like ACDC) or ``all``.
        use_unlabelled: add the unlabelled images (adversarial + reconstruction terms). Without them training is
            fully supervised, whatever the loss weights say.
        max_unlabelled: cap on unlabelled images (the authors used 1200).
        unlabelled_frames: ACDC layout: cine phases read per patient as unlabelled volumes, evenly spaced over the
            cycle (0 = all); the cap above then takes images evenly from them.
        augment_rotation: maximum rotation in degrees of the training augmentation (0 = off).
        augment_flip: also apply one of the 8 square symmetries (rot90 by k and an optional flip), drawn uniformly
            per image — the flip/rot90 augmentation of the SSL4MIS training code. Not in the paper; off by default.
        augment_intensity: strength of a random gamma and contrast change per training image
            (:func:`sdnet.data.transforms.intensity`; 0.5: γ in [0.61, 1.65], contrast ×[0.78, 1.28]). Not in the
            paper; off by default. The hand-made counterpart of SDNet+'s re-rendering with other modality factors.
        discriminator_masks: which masks D_M sees as "real": ``training`` (default: the masks of every training
            subject, unpaired with the images — the paper's §5.1 "from the set of image-mask pairs from the same
            dataset" and the authors' executor, which loads the whole training split's masks whatever the labelled
            fraction, authors-code §1.11) or ``labelled`` (only the labelled subjects' masks: a stricter setting, our
            addition; with 1-3 labelled patients D then learns the shape prior of one to three hearts). Validation
            and test subjects' masks are never used.
        volume_subjects: LV-volume multi-task (paper §5.2): number of *unlabelled* training subjects that come with
            volume labels instead of masks — one LV area per labelled-phase slice, computed from their masks, which
            stay withheld (they remain in the unlabelled pool). Drawn with ``split_seed`` and saved in the split.
            Used when ``loss.vol`` > 0; labelled subjects always supervise the regressor through their masks.
        volume_class: name of the label whose area is regressed (the LV cavity).
        orientation: the axis and orientation frame volumes are read in (:mod:`sdnet.data.orientation`): ``ras``
            (the convention: slice axis = the file's third axis, in-plane axes ordered and flipped to point towards
            +R and +A; SSL4MIS slices brought to the ACDC NIfTI files' world axes), ``canonical`` (issue 15's
            convention: SSL4MIS slices and version-1 phantoms turned against anatomy; checkpoints trained in it keep
            this value) or ``legacy`` (the files' voxel order and the SSL4MIS arrays as stored: checkpoints written
            before either; they load with this value). Saved with every run and checkpoint so that ``predict`` and
            ``evaluate`` feed a model the frame it saw.
        split_seed: seed of the subject split and of the choice of labelled subjects.
        fold: cross-validation fold of the ``random`` split (0, 1, 2, ... give disjoint test sets).
    """

    root: str = ""
    format: Literal["phantom", "acdc", "ssl4mis", "nnunet", "mmwhs"] = "phantom"
    modality: str = "MR"
    modality_mix: str = ""
    split: Literal["random", "ssl4mis"] = "random"
    subject_pattern: str = ""
    target_spacing_mm: float = 1.37
    resize: int = 0
    clip_low: float = 5.0
    clip_high: float = 95.0
    cache_dir: str = ""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    labelled_fraction: float = 1.0
    labelled_subjects: int = 0
    labelled_phases: Literal["ed_es", "all"] = "ed_es"
    use_unlabelled: bool = True
    max_unlabelled: int = 1200
    unlabelled_frames: int = 4
    augment_rotation: float = 0.0
    augment_flip: bool = False
    augment_intensity: float = 0.0
    discriminator_masks: Literal["labelled", "training"] = "training"
    volume_subjects: int = 0
    volume_class: str = "LV"
    orientation: Literal["ras", "canonical", "legacy"] = "ras"
    split_seed: int = 1
    fold: int = 0

    def __post_init__(self) -> None:
        if self.fold < 0:
            raise ConfigError(f"data.fold must be >= 0, got {self.fold}")
        mix = self.mix()  # validates data.modality and data.modality_mix
        if mix and sum(mix.values()) <= 0:
            raise ConfigError(f"data.modality_mix={self.modality_mix!r} uses no training images")
        if self.format not in ("phantom", "acdc", "ssl4mis", "nnunet", "mmwhs"):
            raise ConfigError(f"data.format must be phantom, acdc, ssl4mis, nnunet or mmwhs, got {self.format!r}")
        if self.split not in ("random", "ssl4mis"):
            raise ConfigError(f"data.split must be random or ssl4mis, got {self.split!r}")
        if self.split == "ssl4mis" and self.format != "ssl4mis":
            raise ConfigError("data.split=ssl4mis needs data.format=ssl4mis")
        if self.target_spacing_mm < 0 or self.resize < 0:
            raise ConfigError("data.target_spacing_mm and data.resize must be >= 0")
        if not 0 <= self.clip_low < self.clip_high <= 100:
            raise ConfigError(f"data.clip_low/clip_high must satisfy 0 <= low < high <= 100, got "
                              f"{self.clip_low}, {self.clip_high}")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ConfigError(f"data.{name} must lie in [0, 1), got {v}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("data.val_fraction + data.test_fraction must be < 1")
        if not 0 < self.labelled_fraction <= 1:
            raise ConfigError(f"data.labelled_fraction must lie in (0, 1], got {self.labelled_fraction}")
        if self.labelled_subjects < 0 or self.max_unlabelled < 0 or self.unlabelled_frames < 0:
            raise ConfigError("data.labelled_subjects, data.max_unlabelled and data.unlabelled_frames must be >= 0")
        if self.volume_subjects < 0:
            raise ConfigError(f"data.volume_subjects must be >= 0, got {self.volume_subjects}")
        if self.labelled_phases not in ("ed_es", "all"):
            raise ConfigError(f"data.labelled_phases must be ed_es or all, got {self.labelled_phases!r}")
        if self.orientation not in ("ras", "canonical", "legacy"):
            raise ConfigError(f"data.orientation must be ras, canonical or legacy, got {self.orientation!r}")
        if not 0 <= self.augment_rotation <= 180:
            raise ConfigError(f"data.augment_rotation must lie in [0, 180], got {self.augment_rotation}")
        if not 0 <= self.augment_intensity <= 2:
            raise ConfigError(f"data.augment_intensity must lie in [0, 2], got {self.augment_intensity}")

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modality names of ``modality``, in order (``MR+CT`` -> ``("MR", "CT")``)."""
        names = tuple(m.strip() for m in self.modality.split("+"))
        if not names or any(not m for m in names) or len(set(names)) != len(names):
            raise ConfigError(f"data.modality must be a name or distinct names joined by '+', got {self.modality!r}")
        return names

    def mix(self) -> dict[str, float]:
        """``modality_mix`` parsed: modality -> fraction of the training subjects (empty when not set).

        Raises:
            ConfigError: malformed entries, a modality not in ``modality``, a fraction outside [0, 1].
        """
        names = self.modalities
        if not self.modality_mix.strip():
            return {}
        out: dict[str, float] = {}
        for item in self.modality_mix.split(","):
            name, sep, value = item.partition(":")
            name = name.strip()
            try:
                fraction = float(value)
            except ValueError:
                fraction = float("nan")
            if not sep or name not in names or name in out or not 0 <= fraction <= 1:
                raise ConfigError(f"data.modality_mix must list 'MODALITY:FRACTION' pairs (fractions in [0, 1]) for "
                                  f"the modalities {list(names)}, got {self.modality_mix!r}")
            out[name] = fraction
        missing = [m for m in names if m not in out]
        if missing:
            raise ConfigError(f"data.modality_mix={self.modality_mix!r} gives no fraction for {missing}")
        return out


@dataclass(frozen=True)
class TrainConfig:
    """The training loop (authors' schedule, authors-code §1.11 and §1.13).

    Attributes:
        method: what is trained (paper §4.3), every method with the same optimiser, schedule, batch size, early
            stopping and validation-based checkpoint selection: ``sdnet`` (SDNet, default), ``unet`` (the anatomy
            encoder's U-Net with a class head, labelled images only), ``gan`` (that U-Net plus the mask
            discriminator's adversarial term on unlabelled images) or ``selftrain`` (that U-Net retrained on its
            own pseudo-labels of the unlabelled images, Bai et al. 2017 without CRF).
        schedule: SDNet's iteration (``train.method=sdnet``): ``steps`` (the authors' code, authors-code §1.11: a
            supervised update on a labelled batch and an unsupervised update on an unlabelled batch, each with its
            own Adam, each followed by a z-reconstruction update, then the discriminator) or ``joint`` (the paper's
            single objective, §4.2: one generator update on the λ-weighted sum of every term over the labelled and the
            unlabelled batch, one z-reconstruction update on both batches' anatomy, then the discriminator). With
            ``steps`` the λ of a whole update (λ3 of the unsupervised one, say) cannot change anything, because Adam
            is invariant to a constant scale of its loss; with ``joint`` every λ sets a balance.
        selftrain_rounds: ``selftrain`` only: pseudo-label-and-retrain rounds after the labelled-only round 0. The
            run's budget (``epochs``, ``max_steps``, ``max_minutes``) is split equally over the rounds + 1
            stages, so the total budget equals the other methods'.
        batch_size: images per step (4 in the paper); in a data-parallel run the global batch, split evenly over the
            processes.
        epochs: upper bound on epochs; an epoch is ceil(max(#labelled, #unlabelled) / batch_size) iterations.
        steps_per_epoch: override the epoch length in iterations (0 = the authors' definition above); validation,
            early stopping and best-checkpoint selection happen at epoch ends.
        max_steps: stop after this many iterations (0 = no limit); useful for fixed budgets.
        snapshot_steps: comma-separated iterations (e.g. ``"2000,4000"``) at which to keep a copy of the best
            checkpoint as it stood then: ``best_s2000.pt`` is the ``best.pt`` that a run with
            ``train.max_steps=2000`` ends with (the best validation among those at or before iteration 2000; same
            seed, same iterations: the learning-rate decay does not depend on the budget; refused for
            ``selftrain``, whose rounds divide the budget, beyond ``max_steps`` and before the first validation).
            ``sdnet experiment semi`` scores each on the test split (``result_s2000.json``), so one long run also
            gives the shorter budgets' results. Empty = none.
        max_minutes: stop after this wall-clock budget (0 = no limit), checked after every iteration; a run that
            stops mid-epoch is validated once more if it was never validated, and its state saved in ``last.pt``.
        patience: early stopping: epochs without a validation-Dice gain of at least min_delta (0 = never stop).
            In ``selftrain`` it ends the current round (the run only in the last round).
        min_delta: the smallest validation-Dice gain that counts as an improvement.
        fake_pool_size: history of fake masks shown to the discriminator (authors: 50; 0 disables the pool).
        seed: seed of weights, sampling and augmentation.
        log_every: iterations between loss-log lines (JSONL + TensorBoard).
        checkpoint_every: iterations between ``last.pt`` checkpoints (also written at every epoch end).
        num_threads: torch intra-op threads (0 = leave torch's default).
        device: ``cpu`` or a torch device string such as ``cuda:0``.
        precision: ``fp32`` (default) or ``bf16``: the training steps' forward passes run under
            ``torch.autocast`` with bfloat16 (convolutions and matrix products in bf16; weights, optimiser state,
            losses, gradients' accumulation and validation stay float32). Fast on GPUs and CPUs with native bf16
            (AVX512-BF16 / AMX); on CPUs without it bf16 is emulated and an order of magnitude slower (the
            benchmark's ``library+bf16`` lever, docs/performance-levers.md), so keep ``fp32`` there. Accuracy is
            not shown to match fp32 (docs/performance-quality-bf16.md: 0.03 lower validation Dice after 300
            phantom iterations, one seed); check it on your data.
        sync_batchnorm: in a data-parallel run (``torchrun``), normalise with the statistics of the whole global
            batch (:class:`torch.nn.SyncBatchNorm`; CUDA only) instead of each process' shard.
        plus_z: SDNet+ (``loss.mix`` / ``loss.acons`` > 0): the modality factor each anatomy is re-rendered with:
            ``batch`` (the codes of the iteration's other batch: labelled anatomies with unlabelled images' z and
            vice versa), ``prior`` (z ~ N(0, I)), ``both`` (the first half of the rows batch codes, the rest
            prior) or ``own`` (each image's own z: x̃ is its reconstruction — the control that keeps SDNet+'s extra
            segmentation update on decoded images but changes no modality) or ``input`` (x̃ = x_i, no decoder: the
            control that keeps only the extra segmentation update on the iteration's own images; the only variant
            the GAN baseline takes, ``train.method=gan`` with ``loss.mix`` > 0: the same step on its U-Net).
        plus_unlabelled: SDNet+ also re-renders the unlabelled batch (targets: the model's own detached
            segmentation of those images); False: the labelled batch only.
        plus_teacher: SDNet+ with a mean teacher: the EMA decay α in [0, 1) of a moving-average copy of f_anatomy
            and h whose segmentation of the unlabelled images (and anatomy of every row's image, for λ_acons) is
            the factor step's target (:mod:`sdnet.training.teacher`; e.g. 0.99); 0 (default): the model's own
            detached outputs, as before.
    """

    method: TrainMethod = "sdnet"
    schedule: Schedule = "steps"
    selftrain_rounds: int = 2
    batch_size: int = 4
    epochs: int = 500
    steps_per_epoch: int = 0
    max_steps: int = 0
    snapshot_steps: str = ""
    max_minutes: float = 0.0
    patience: int = 100
    min_delta: float = 0.01
    fake_pool_size: int = 50
    seed: int = 1
    log_every: int = 10
    checkpoint_every: int = 200
    num_threads: int = 0
    device: str = "cpu"
    precision: Precision = "fp32"
    sync_batchnorm: bool = False
    plus_z: PlusSource = "both"
    plus_unlabelled: bool = True
    plus_teacher: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.plus_teacher < 1.0:
            raise ConfigError(f"train.plus_teacher is the teacher's EMA decay: in [0, 1) (0 = no teacher), got "
                              f"{self.plus_teacher}")
        if self.plus_z not in PLUS_SOURCES:
            raise ConfigError(f"train.plus_z must be one of {list(PLUS_SOURCES)}, got {self.plus_z!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.method not in TRAIN_METHODS:
            raise ConfigError(f"train.method must be one of {list(TRAIN_METHODS)}, got {self.method!r}")
        if self.selftrain_rounds < 1:
            raise ConfigError(f"train.selftrain_rounds must be >= 1 (pseudo-label rounds after round 0), "
                              f"got {self.selftrain_rounds}")
        _positive(self, "train", "batch_size", "epochs", "log_every", "checkpoint_every")
        if self.batch_size > MAX_BATCH_SIZE:
            raise ConfigError(f"train.batch_size={self.batch_size} is above {MAX_BATCH_SIZE} (the paper uses 4; a "
                              "batch that large would exhaust memory before the first step)")
        for name in ("steps_per_epoch", "max_steps", "patience", "fake_pool_size", "num_threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_minutes < 0 or self.min_delta < 0:
            raise ConfigError("train.max_minutes and train.min_delta must be >= 0")
        snapshots = self.snapshots()  # validates snapshot_steps
        if snapshots and self.method == "selftrain":
            raise ConfigError("train.snapshot_steps: a self-train run's rounds divide its budget, so its best "
                              "checkpoint at an iteration is not that of a shorter run; use separate runs")
        if snapshots and self.max_steps and snapshots[-1] > self.max_steps:
            raise ConfigError(f"train.snapshot_steps {snapshots[-1]} lies beyond train.max_steps={self.max_steps}")
        if snapshots and self.steps_per_epoch and snapshots[0] < self.steps_per_epoch:
            raise ConfigError(f"train.snapshot_steps {snapshots[0]} lies before the first validation (iteration "
                              f"{self.steps_per_epoch}), where a run has no best checkpoint yet")

    def snapshots(self) -> tuple[int, ...]:
        """``snapshot_steps`` parsed: the iterations, ascending (empty when not set).

        Raises:
            ConfigError: an item that is not a positive integer, or one given twice.
        """
        items = [t.strip() for t in str(self.snapshot_steps).split(",") if t.strip()]
        if not all(t.isdigit() and int(t) > 0 for t in items) or len(set(map(int, items))) != len(items):
            raise ConfigError(f"train.snapshot_steps must list distinct positive iterations separated by commas "
                              f"(e.g. \"2000,4000\"), got {self.snapshot_steps!r}")
        return tuple(sorted(int(t) for t in items))


MAX_BATCH_SIZE = 512  # a 2D slice batch beyond this is a typo (1000 on 64 slices took 7 GB), not a setting


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; saved as ``config.yaml`` in the run folder and inside every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.loss.vol > 0 and not self.model.area_regressor:
            raise ConfigError("loss.vol > 0 trains the LV-area regressor: set model.area_regressor=true")
        if self.loss.vol > 0 and self.train.method != "sdnet":
            raise ConfigError(f"loss.vol (the LV-volume task on s) needs train.method=sdnet, got {self.train.method}")
        gan_control = (self.train.method == "gan" and self.train.plus_z == "input" and self.loss.acons == 0
                       and self.train.plus_teacher == 0)
        if self.loss.plus and not gan_control and (self.train.method != "sdnet" or self.train.schedule != "steps"):
            raise ConfigError("loss.mix / loss.acons (SDNet+) re-render images with SDNet's decoder: they need "
                              f"train.method=sdnet and train.schedule=steps, got {self.train.method} / "
                              f"{self.train.schedule} (the GAN baseline takes only loss.mix with "
                              "train.plus_z=input: the factor step on its input images, no teacher)")
        if self.train.plus_teacher > 0 and not self.loss.plus:
            raise ConfigError("train.plus_teacher gives SDNet+'s factor step its targets: set loss.mix or "
                              "loss.acons > 0 as well")


def _positive(obj: object, section: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(f"{section}.{name} must be > 0, got {value}")


# ----------------------------------------------------------------------------------------------------------------------
# dict / YAML conversion

T = TypeVar("T")


def to_dict(config: object) -> dict[str, Any]:
    """A plain, YAML/JSON-safe nested dict of a config dataclass."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return dataclasses.asdict(config)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check/convert one leaf value against its dataclass annotation; raise ConfigError naming ``key``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key} must be a boolean, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"{key} must be an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return int(as_float)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping; unknown keys and bad values raise :class:`ConfigError`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"unknown config key '{full}' (valid: {', '.join(sorted(fields))})")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = from_dict(annotation, value, prefix=f"{full}.")  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(value, annotation, full)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {prefix.rstrip('.') or 'config'}: {exc}") from None


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(config: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Return a new config with ``section.key=value`` overrides applied (e.g. ``"train.lr=2e-4"``)."""
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        dotted, text = item.split("=", 1)
        parts = dotted.strip().split(".")
        node: Any = data
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"unknown config key '{'.'.join(parts[: depth + 1])}'")
            if depth == len(parts) - 1:
                if isinstance(node[part], dict):
                    raise ConfigError(f"config key '{dotted}' is a section, not a value")
                node[part] = _parse_scalar(text.strip())
            else:
                node = node[part]
    return from_dict(RunConfig, data)


def yaml_error_line(path: str | Path, exc: BaseException) -> str:
    """One line for a YAML parse error: ``file:line:column: not valid YAML: <problem>`` (PyYAML's own message spans
    several lines with context and carets)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    detail = f"{problem} ({context})" if context else str(problem)
    return f"{where}: not valid YAML: {detail}"


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RunConfig:
    """Load a YAML run config (missing keys take the defaults) and apply command-line overrides."""
    data: Any = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{yaml_error_line(p, exc)}") from None
    config = from_dict(RunConfig, data)
    return apply_overrides(config, overrides)


def config_yaml(config: RunConfig) -> str:
    """The resolved config as YAML text (what ``config.yaml`` holds and ``--print-config`` prints)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    write_text(path, config_yaml(config))
