"""The SDNet networks (paper §3), one module per network, and the only config → constructor mapping.

* :class:`AnatomyEncoder` f_anatomy (§3.1.1), :class:`ModalityEncoder` f_modality (§3.1.2),
  :class:`FiLMDecoder` g (§3.3), :class:`Segmentor` h (§3.2), :class:`MaskDiscriminator` D_M (§3.2);
* :class:`SDNet` composes the first four (plus, optionally, the :class:`AreaRegressor` of the LV-volume multi-task,
  §5.2); the trainer owns the discriminator;
* :class:`UNetSegmenter` is the network of the paper's baselines (§4.3: U-Net, GAN, self-train): the anatomy
  encoder's :class:`UNet` body with a 1×1 head to the classes;
* :class:`Segmenter` is what evaluation and inference need of either: ``segment(x) -> Segmentation``.

:func:`build_segmenter` maps (model config, ``train.method``) to the network; :func:`build_sdnet` and
:func:`build_discriminator` build SDNet and D_M.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from sdnet.config import ConfigError, ModelConfig
from sdnet.models.anatomy import AnatomyEncoder, UNet
from sdnet.models.baselines import UNetSegmenter
from sdnet.models.blocks import binarise, film, keras_init_
from sdnet.models.decoder import FiLMDecoder
from sdnet.models.discriminator import MaskDiscriminator
from sdnet.models.fusion import fold_batch_norm, for_inference
from sdnet.models.modality import ModalityCode, ModalityEncoder
from sdnet.models.sdnet import Encoding, SDNet, SDNetOutput, Segmentation
from sdnet.models.segmentor import Segmentor
from sdnet.models.volume import AreaRegressor

__all__ = [
    "AnatomyEncoder",
    "AreaRegressor",
    "Encoding",
    "FiLMDecoder",
    "MaskDiscriminator",
    "ModalityCode",
    "ModalityEncoder",
    "SDNet",
    "SDNetOutput",
    "Segmentation",
    "Segmenter",
    "Segmentor",
    "UNet",
    "UNetSegmenter",
    "binarise",
    "build_discriminator",
    "build_sdnet",
    "build_segmenter",
    "film",
    "fold_batch_norm",
    "for_inference",
    "keras_init_",
]


@runtime_checkable
class Segmenter(Protocol):
    """A trained segmentation network as evaluation, inference and figures use it (:class:`SDNet` or
    :class:`UNetSegmenter`): ``segment`` plus the ``nn.Module`` mode switches and parameters."""

    training: bool

    def segment(self, x: Tensor) -> Segmentation:
        """x: (B, in_channels, H, W) float in [-1, 1] → logits and probabilities (B, n_classes, H, W)."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...


def _set_bn_momentum(model: nn.Module, momentum: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def build_segmenter(cfg: ModelConfig, method: str = "sdnet") -> SDNet | UNetSegmenter:
    """The network trained by ``train.method``: the single (config, method) → constructor mapping.

    ``sdnet`` builds :class:`SDNet` (:func:`build_sdnet`); the baselines ``unet``, ``gan`` and ``selftrain``
    (paper §4.3) build :class:`UNetSegmenter` with the anatomy encoder's U-Net (``unet_filters``,
    ``unet_depth``) and ``n_classes`` outputs. Every BatchNorm layer gets ``cfg.bn_momentum``.

    Raises:
        ConfigError: unknown method.
    """
    if method == "sdnet":
        return build_sdnet(cfg)
    if method in ("unet", "gan", "selftrain"):
        model = UNetSegmenter(in_channels=cfg.in_channels, n_classes=cfg.n_classes, filters=cfg.unet_filters,
                              depth=cfg.unet_depth)
        _set_bn_momentum(model, cfg.bn_momentum)
        return model
    raise ConfigError(f"train.method must be sdnet, unet, gan or selftrain, got {method!r}")


def build_sdnet(cfg: ModelConfig) -> SDNet:
    """Build SDNet (without the discriminator) from a :class:`~sdnet.config.ModelConfig`.

    Every BatchNorm layer gets ``cfg.bn_momentum`` (default: Keras' 0.99, i.e. PyTorch 0.01).
    """
    model = SDNet(
        anatomy_encoder=AnatomyEncoder(
            in_channels=cfg.in_channels,
            anatomy_channels=cfg.anatomy_channels,
            filters=cfg.unet_filters,
            depth=cfg.unet_depth,
            binarisation=cfg.binarisation,
        ),
        modality_encoder=ModalityEncoder(
            anatomy_channels=cfg.anatomy_channels,
            in_channels=cfg.in_channels,
            image_size=cfg.image_size,
            filters=cfg.modality_filters,
            n_layers=cfg.modality_layers,
            hidden=cfg.modality_hidden,
            n_z=cfg.n_z,
        ),
        decoder=FiLMDecoder(
            anatomy_channels=cfg.anatomy_channels,
            n_z=cfg.n_z,
            n_blocks=cfg.decoder_blocks,
            width=cfg.decoder_width,  # 0 → anatomy_channels
            out_channels=cfg.in_channels,
        ),
        segmentor=Segmentor(
            anatomy_channels=cfg.anatomy_channels,
            n_classes=cfg.n_classes,
            filters=cfg.segmentor_filters,
        ),
        area_regressor=AreaRegressor(anatomy_channels=cfg.anatomy_channels) if cfg.area_regressor else None,
    )
    _set_bn_momentum(model, cfg.bn_momentum)
    return model


def build_discriminator(cfg: ModelConfig) -> MaskDiscriminator:
    """Build the mask discriminator D_M from a :class:`~sdnet.config.ModelConfig`; it sees the L = n_classes − 1
    foreground channels."""
    return MaskDiscriminator(
        in_channels=cfg.n_classes - 1,
        image_size=cfg.image_size,
        filters=cfg.discriminator_filters,
        n_blocks=cfg.discriminator_blocks,
        spectral_norm=cfg.discriminator_spectral_norm,
    )
