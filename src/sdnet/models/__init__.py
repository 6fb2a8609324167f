"""The SDNet networks (paper §3), one module per network, and the only config → constructor mapping.

* :class:`AnatomyEncoder` f_anatomy (§3.1.1), :class:`ModalityEncoder` f_modality (§3.1.2),
  :class:`FiLMDecoder` g (§3.3), :class:`Segmentor` h (§3.2), :class:`MaskDiscriminator` D_M (§3.2);
* :class:`SDNet` composes the first four; the trainer owns the discriminator.
"""

from __future__ import annotations

from torch import nn

from sdnet.config import ModelConfig
from sdnet.models.anatomy import AnatomyEncoder
from sdnet.models.blocks import binarise, film, keras_init_
from sdnet.models.decoder import FiLMDecoder
from sdnet.models.discriminator import MaskDiscriminator
from sdnet.models.modality import ModalityCode, ModalityEncoder
from sdnet.models.sdnet import Encoding, SDNet, SDNetOutput, Segmentation
from sdnet.models.segmentor import Segmentor

__all__ = [
    "AnatomyEncoder",
    "Encoding",
    "FiLMDecoder",
    "MaskDiscriminator",
    "ModalityCode",
    "ModalityEncoder",
    "SDNet",
    "SDNetOutput",
    "Segmentation",
    "Segmentor",
    "binarise",
    "build_discriminator",
    "build_sdnet",
    "film",
    "keras_init_",
]


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
    )
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = cfg.bn_momentum
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
