"""What is benchmarked: run configurations, synthetic data and a library trainer built on it.

Two configurations are measured, each read from the repository's own YAML file so the benchmark follows them:

* ``paper`` — ``configs/acdc_paper.yaml``: 224 px, U-Net base filters 64, the authors' discriminator (64 filters,
  4 blocks, ~11 M parameters), Keras BatchNorm momentum;
* ``cpu`` — ``configs/acdc_cpu.yaml``: 128 px, U-Net 16, segmentor 32, discriminator 16 / 3 blocks, plus its
  cross-entropy term (``loss.ce``).

``--quick`` shrinks both to 32 px and a few filters (same code paths, seconds instead of minutes). The data are
synthetic (nested ellipses for RV, MYO and LV with noise), because throughput does not depend on image content;
augmentation is switched off so that both training versions time the networks, not the batch sampler.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sdnet.config import RunConfig, load_config
from sdnet.data.pipeline import TrainingData
from sdnet.data.sampling import BatchStream, SliceSet
from sdnet.data.splits import Split
from sdnet.data.volumes import DatasetInfo
from sdnet.models import SDNet
from sdnet.training import Trainer

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES: dict[str, Path] = {
    "paper": REPO_ROOT / "configs" / "acdc_paper.yaml",
    "cpu": REPO_ROOT / "configs" / "acdc_cpu.yaml",
}
CONFIG_NAMES: tuple[str, ...] = ("cpu", "paper")

#: Overrides that make the ``--quick`` versions: same structure (depth, blocks, losses), tiny sizes.
QUICK_OVERRIDES: dict[str, tuple[str, ...]] = {
    "paper": ("model.image_size=32", "model.unet_filters=8", "model.segmentor_filters=8",
              "model.discriminator_filters=8"),
    "cpu": ("model.image_size=32", "model.unet_filters=4", "model.segmentor_filters=8",
            "model.discriminator_filters=4"),
}

#: Overrides applied to every benchmarked config: no augmentation (time the networks, not the sampler).
COMMON_OVERRIDES: tuple[str, ...] = ("data.augment_rotation=0", "data.augment_flip=false", "train.seed=0")

LABEL_NAMES: dict[int, str] = {0: "background", 1: "RV", 2: "MYO", 3: "LV"}


def run_config(name: str, *, quick: bool = False, threads: int = 0, extra: tuple[str, ...] = ()) -> RunConfig:
    """The benchmarked :class:`~sdnet.config.RunConfig` called ``name`` (``paper`` or ``cpu``).

    Args:
        name: key of :data:`CONFIG_FILES`.
        quick: apply :data:`QUICK_OVERRIDES` (tiny sizes, for smoke tests).
        threads: ``train.num_threads`` (0 leaves torch's setting alone).
        extra: further ``section.key=value`` overrides.
    """
    if name not in CONFIG_FILES:
        raise ValueError(f"unknown benchmark config {name!r}; expected one of {sorted(CONFIG_FILES)}")
    overrides = [*COMMON_OVERRIDES, f"train.num_threads={threads}"]
    if quick:
        overrides += QUICK_OVERRIDES[name]
    return load_config(CONFIG_FILES[name], [*overrides, *extra])


def synthetic_slices(
    n: int, size: int, n_classes: int, *, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cardiac-looking synthetic slices: an LV disc inside a MYO ring, an RV crescent beside it, noise.

    Returns:
        images (n, 1, size, size) float32 in [−1, 1] and masks (n, size, size) int64 in [0, n_classes).
    """
    gen = torch.Generator().manual_seed(seed)
    coords = torch.linspace(-1.0, 1.0, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    images = torch.empty(n, 1, size, size)
    masks = torch.zeros(n, size, size, dtype=torch.int64)
    levels = torch.linspace(-0.6, 0.8, n_classes)[torch.arange(n_classes).flip(0) % n_classes]  # class intensities
    for i in range(n):
        cy, cx = ((torch.rand(2, generator=gen) - 0.5) * 0.3).tolist()
        r_lv, thickness, r_rv = (0.18 + 0.08 * torch.rand(3, generator=gen)).tolist()
        d_lv = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
        d_rv = ((yy - cy) ** 2 + ((xx - cx + r_lv + 0.2) / 1.4) ** 2).sqrt()
        label = torch.zeros(size, size, dtype=torch.int64)
        if n_classes > 1:
            label[d_rv < r_rv] = 1
        if n_classes > 2:
            label[d_lv < r_lv + thickness * 0.5] = 2
        if n_classes > 3:
            label[d_lv < r_lv] = 3
        label = label.clamp(max=n_classes - 1)
        base = levels[label]
        noise = 0.15 * torch.randn(size, size, generator=gen)
        images[i, 0] = (base + noise).clamp(-1.0, 1.0)
        masks[i] = label
    return images, masks


def synthetic_training_data(config: RunConfig, *, n_images: int = 16, seed: int = 0) -> TrainingData:
    """A :class:`~sdnet.data.pipeline.TrainingData` of synthetic slices shaped for ``config.model``."""
    mc = config.model
    labels = {k: LABEL_NAMES.get(k, f"class{k}") for k in range(mc.n_classes)}

    def slices(offset: int, labelled: bool, prefix: str) -> SliceSet:
        images, masks = synthetic_slices(n_images, mc.image_size, mc.n_classes, seed=seed + offset)
        ids = tuple(f"{prefix}{i:03d}" for i in range(n_images))
        return SliceSet(images=images, masks=masks if labelled else None, subject_ids=ids)

    labelled = slices(0, True, "lab")
    unlabelled = slices(1, False, "unl")
    real = slices(2, True, "lab")  # "real" masks of the labelled subjects (the strict semi-supervised default)
    split = Split(train=labelled.subject_ids + unlabelled.subject_ids, val=(), test=(),
                  labelled=labelled.subject_ids)
    info = DatasetInfo(name="synthetic", labels=labels, modalities=("MR",))
    return TrainingData(info=info, split=split, labelled=labelled, unlabelled=unlabelled, real_masks=real, val=[],
                        test=[])


def build_trainer(config: RunConfig, run_dir: Path, *, data: TrainingData | None = None) -> Trainer:
    """The library's :class:`~sdnet.training.Trainer` on synthetic data (nothing is written to ``run_dir``
    unless ``fit`` is called)."""
    return Trainer(config, run_dir, data=data if data is not None else synthetic_training_data(config))


def sdnet_model(trainer: Trainer) -> SDNet:
    """The trainer's network, which the benchmark expects to be an SDNet (``train.method=sdnet``)."""
    model = trainer.model
    if not isinstance(model, SDNet):
        raise TypeError(f"expected the trainer to hold an SDNet, got {type(model).__name__}")
    return model


@dataclass(frozen=True)
class IterationBatch:
    """The batches one iteration consumes.

    Attributes:
        images, masks: labelled batch, (B, 1, H, W) float and (B, H, W) int64.
        unlabelled: unlabelled batch (B, 1, H, W), or None (fully supervised).
        real_masks: (B, H, W) int64 masks shown to D as real, or None.
        discriminator_images: (B, 1, H, W) images whose predicted masks the eager version shows to D as fake
            (the authors' ``discriminator_images`` stream), or None.
    """

    images: torch.Tensor
    masks: torch.Tensor
    unlabelled: torch.Tensor | None
    real_masks: torch.Tensor | None
    discriminator_images: torch.Tensor | None


class IterationBatches:
    """The batches of iteration ``step``, drawn from the same streams as the library trainer's.

    The library's :meth:`Trainer.train_iteration` draws batch ``step`` of its labelled, unlabelled and real-mask
    streams; :meth:`batch` returns exactly those tensors, plus a batch of a separate ``discriminator_images``
    stream over the unlabelled images (the eager version's fake-mask images, as in the authors' code).
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        tc = trainer.config.train
        unlabelled = trainer.data.unlabelled
        self.discriminator_images = (
            BatchStream(unlabelled, batch_size=tc.batch_size, seed=tc.seed, name="discriminator_images")
            if unlabelled is not None else None
        )

    def batch(self, step: int) -> IterationBatch:
        t = self.trainer
        x, m = t.labelled_stream.batch(step)
        assert m is not None
        xu = t.unlabelled_stream.batch(step)[0] if t.unlabelled_stream is not None else None
        real = t.real_stream.batch(step)[1] if t.unlabelled_stream is not None else None
        xd = self.discriminator_images.batch(step)[0] if self.discriminator_images is not None else None
        device = t.device
        return IterationBatch(
            images=x.to(device), masks=m.to(device),
            unlabelled=xu.to(device) if xu is not None else None,
            real_masks=real.to(device) if real is not None else None,
            discriminator_images=xd.to(device) if xd is not None else None,
        )
