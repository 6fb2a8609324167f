"""SDNet: the composite of anatomy encoder, modality encoder, decoder and segmentor (paper §3, Fig. 1).

x → s = f_anatomy(x) (binary), z ~ q(z | x, s) = f_modality(x, s), x̂ = g(s, z), m̂ = h(s). The mask discriminator
is not part of this module; the trainer owns it (:class:`~sdnet.models.discriminator.MaskDiscriminator`).

``encode`` / ``decode`` / ``segment`` are the public entry points shared by training and analysis (modality
transfer ``decode(encode(x_a).anatomy, encode(x_b).modality.z)``, latent traversals, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sdnet.models.anatomy import AnatomyEncoder
from sdnet.models.blocks import channel_argmax
from sdnet.models.decoder import FiLMDecoder
from sdnet.models.modality import ModalityCode, ModalityEncoder
from sdnet.models.segmentor import Segmentor
from sdnet.models.volume import AreaRegressor

__all__ = ["Encoding", "SDNet", "SDNetOutput", "Segmentation"]


@dataclass(frozen=True)
class Encoding:
    """The disentangled representation of an image.

    Attributes:
        anatomy: s, (B, C, H, W) float, binary {0, 1} (soft in [0, 1] with binarisation ``none``).
        modality: the modality factor q(z | x, s) and its sample z, each (B, n_z).
    """

    anatomy: Tensor
    modality: ModalityCode


@dataclass(frozen=True)
class Segmentation:
    """A segmentation predicted from the anatomy factor.

    Attributes:
        anatomy: s, (B, C, H, W) float, the anatomy factor it was predicted from (for the baselines'
            :class:`~sdnet.models.baselines.UNetSegmenter`, which has none: the class probabilities).
        logits: (B, n_classes, H, W) float, class 0 = background.
        probabilities: (B, n_classes, H, W) float in [0, 1], softmax of ``logits`` over dim 1 (sums to 1).
    """

    anatomy: Tensor
    logits: Tensor
    probabilities: Tensor

    @property
    def labels(self) -> Tensor:
        """(B, H, W) int64 in [0, n_classes): the argmax class of every pixel (0 = background)."""
        return channel_argmax(self.logits).squeeze(1)


@dataclass(frozen=True)
class SDNetOutput:
    """Everything one SDNet forward pass produces.

    Attributes:
        anatomy: s, (B, C, H, W) float, binary {0, 1} (soft with binarisation ``none``).
        modality: ModalityCode(mu, logvar, z), each (B, n_z) float.
        reconstruction: x̂ = g(s, z), (B, in_channels, H, W) float in [-1, 1].
        mask_logits: (B, n_classes, H, W) float, class 0 = background.
        mask_probabilities: (B, n_classes, H, W) float in [0, 1], softmax over dim 1; the discriminator sees
            ``mask_probabilities[:, 1:]``.
    """

    anatomy: Tensor
    modality: ModalityCode
    reconstruction: Tensor
    mask_logits: Tensor
    mask_probabilities: Tensor


class SDNet(nn.Module):
    """The Spatial Decomposition Network (paper §3): two encoders, a FiLM decoder and a segmentor.

    Args:
        anatomy_encoder: f_anatomy; default: the authors' ACDC U-Net.
        modality_encoder: f_modality; default: the authors' ACDC VAE encoder.
        decoder: g; default: the authors' ACDC FiLM decoder.
        segmentor: h; default: the authors' ACDC segmentor.
        area_regressor: optional LV-area head on s for the volume multi-task (paper §5.2); None = no head.

    Build it from a :class:`~sdnet.config.ModelConfig` with :func:`sdnet.models.build_sdnet`.
    """

    def __init__(
        self,
        *,
        anatomy_encoder: AnatomyEncoder | None = None,
        modality_encoder: ModalityEncoder | None = None,
        decoder: FiLMDecoder | None = None,
        segmentor: Segmentor | None = None,
        area_regressor: AreaRegressor | None = None,
    ) -> None:
        super().__init__()
        self.anatomy_encoder = anatomy_encoder if anatomy_encoder is not None else AnatomyEncoder()
        self.modality_encoder = modality_encoder if modality_encoder is not None else ModalityEncoder()
        self.decoder = decoder if decoder is not None else FiLMDecoder()
        self.segmentor = segmentor if segmentor is not None else Segmentor()
        self.area_regressor = area_regressor
        channels = {
            "anatomy_encoder": self.anatomy_encoder.anatomy_channels,
            "modality_encoder": self.modality_encoder.anatomy_channels,
            "decoder": self.decoder.anatomy_channels,
            "segmentor": self.segmentor.anatomy_channels,
        }
        if area_regressor is not None:
            channels["area_regressor"] = area_regressor.anatomy_channels
        if len(set(channels.values())) != 1:
            raise ValueError(f"the four networks disagree on the anatomy channels C: {channels}")
        if self.modality_encoder.n_z != self.decoder.n_z:
            raise ValueError(
                f"modality_encoder.n_z={self.modality_encoder.n_z} differs from decoder.n_z={self.decoder.n_z}"
            )

    def encode(self, x: Tensor, *, sample: bool = True) -> Encoding:
        """Decompose images into anatomy and modality factors.

        Args:
            x: (B, in_channels, H, W) float in [-1, 1].
            sample: draw z from q(z | x, s) (global torch RNG); if False, z = μ.

        Returns:
            Encoding: anatomy s (B, C, H, W) binary {0, 1}; modality mu/logvar/z (B, n_z).
        """
        anatomy = self.anatomy_encoder(x)  # (B, C, H, W)
        return Encoding(anatomy=anatomy, modality=self.modality_encoder(anatomy, x, sample=sample))

    def decode(self, anatomy: Tensor, z: Tensor) -> Tensor:
        """Render an image from an anatomy factor and a modality factor.

        Args:
            anatomy: s, (B, C, H, W) float, binary {0, 1}.
            z: (B, n_z) float.

        Returns:
            x̂: (B, in_channels, H, W) float in [-1, 1].
        """
        reconstruction: Tensor = self.decoder(anatomy, z)
        return reconstruction

    def segment_anatomy(self, anatomy: Tensor) -> Segmentation:
        """Segment an anatomy factor.

        Args:
            anatomy: s, (B, C, H, W) float, binary {0, 1}.

        Returns:
            Segmentation: logits and probabilities (B, n_classes, H, W), background at index 0.
        """
        logits = self.segmentor(anatomy)  # (B, n_classes, H, W)
        return Segmentation(anatomy=anatomy, logits=logits, probabilities=torch.softmax(logits, dim=1))

    def regress_area(self, anatomy: Tensor) -> Tensor:
        """The LV area of each slice predicted from its anatomy factor (paper §5.2).

        Args:
            anatomy: s, (B, C, H, W) float, binary {0, 1}.

        Returns:
            (B,) float >= 0, percent of the slice's pixels.

        Raises:
            ValueError: the model has no area regressor (``model.area_regressor`` false in its config).
        """
        if self.area_regressor is None:
            raise ValueError("this SDNet has no area regressor (train with model.area_regressor=true)")
        area: Tensor = self.area_regressor(anatomy)
        return area

    def segment(self, x: Tensor) -> Segmentation:
        """Segment images: h(f_anatomy(x)).

        Args:
            x: (B, in_channels, H, W) float in [-1, 1].

        Returns:
            Segmentation: anatomy (B, C, H, W); logits and probabilities (B, n_classes, H, W), background at 0.
        """
        return self.segment_anatomy(self.anatomy_encoder(x))

    def forward(self, x: Tensor, *, sample: bool = True) -> SDNetOutput:
        """Encode, reconstruct and segment; s is computed once and shared by f_modality, g and h.

        Args:
            x: (B, in_channels, H, W) float in [-1, 1]; H = W = the modality encoder's image_size.
            sample: draw z from q(z | x, s) (global torch RNG); if False, z = μ.

        Returns:
            SDNetOutput with anatomy (B, C, H, W), modality (B, n_z) ×3, reconstruction (B, in_channels, H, W)
            in [-1, 1], mask_logits and mask_probabilities (B, n_classes, H, W).
        """
        encoding = self.encode(x, sample=sample)
        segmentation = self.segment_anatomy(encoding.anatomy)
        return SDNetOutput(
            anatomy=encoding.anatomy,
            modality=encoding.modality,
            reconstruction=self.decode(encoding.anatomy, encoding.modality.z),
            mask_logits=segmentation.logits,
            mask_probabilities=segmentation.probabilities,
        )
