from __future__ import annotations

import pytest
import torch

from sdnet.config import ModelConfig
from sdnet.models import (
    AnatomyEncoder,
    FiLMDecoder,
    MaskDiscriminator,
    ModalityCode,
    SDNet,
    SDNetOutput,
    Segmentation,
    Segmentor,
    build_discriminator,
    build_sdnet,
)

from ..helpers import count_parameters


def test_forward_output_fields(tiny_model_config: ModelConfig, image: torch.Tensor) -> None:
    torch.manual_seed(0)
    out = build_sdnet(tiny_model_config)(image)
    assert isinstance(out, SDNetOutput)
    assert out.anatomy.shape == (2, 4, 32, 32)
    torch.testing.assert_close(out.anatomy.sum(dim=1), torch.ones(2, 32, 32))  # soft (default) or one-hot
    assert isinstance(out.modality, ModalityCode)
    assert out.modality.mu.shape == out.modality.logvar.shape == out.modality.z.shape == (2, 4)
    assert out.reconstruction.shape == (2, 1, 32, 32)
    assert out.reconstruction.min() >= -1 and out.reconstruction.max() <= 1
    assert out.mask_logits.shape == out.mask_probabilities.shape == (2, 4, 32, 32)
    torch.testing.assert_close(out.mask_probabilities.sum(dim=1), torch.ones(2, 32, 32))


def test_forward_computes_anatomy_once(tiny_model_config: ModelConfig, image: torch.Tensor) -> None:
    model = build_sdnet(tiny_model_config)
    calls: list[int] = []
    model.anatomy_encoder.register_forward_hook(lambda *_: calls.append(1))
    model(image)
    assert len(calls) == 1


def test_encode_decode_segment(tiny_model_config: ModelConfig, image: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = build_sdnet(tiny_model_config).eval()
    encoding = model.encode(image, sample=False)
    assert torch.equal(encoding.modality.z, encoding.modality.mu)
    reconstruction = model.decode(encoding.anatomy, encoding.modality.z)
    assert torch.equal(reconstruction, model(image, sample=False).reconstruction)
    segmentation = model.segment(image)
    assert isinstance(segmentation, Segmentation)
    assert torch.equal(segmentation.anatomy, encoding.anatomy)
    assert segmentation.labels.shape == (2, 32, 32) and segmentation.labels.dtype == torch.int64
    assert torch.equal(segmentation.labels, segmentation.probabilities.argmax(dim=1))
    assert torch.equal(model.segment_anatomy(encoding.anatomy).logits, segmentation.logits)


def test_gradients_reach_all_four_networks(tiny_model_config: ModelConfig, image: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = build_sdnet(tiny_model_config)
    out = model(image)
    loss = (
        (out.reconstruction - image).abs().mean()
        + (out.mask_probabilities[:, 1:] * torch.randn(2, 3, 32, 32)).mean()
        + out.modality.logvar.mean()
    )
    loss.backward()
    for network in (model.anatomy_encoder, model.modality_encoder, model.decoder, model.segmentor):
        grads = [p.grad for p in network.parameters()]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_build_sdnet_maps_config(tiny_model_config: ModelConfig) -> None:
    model = build_sdnet(tiny_model_config)
    assert model.anatomy_encoder.anatomy_channels == 4 and model.anatomy_encoder.depth == 3
    assert model.anatomy_encoder.binarisation == "none"  # the measured default (docs/results/acdc_fewlabel_probes.md)
    assert model.modality_encoder.image_size == 32 and model.modality_encoder.n_z == 4
    assert model.decoder.width == 4  # decoder_width 0 → anatomy_channels
    assert len(model.decoder.blocks) == 2
    assert model.segmentor.n_classes == 4
    assert build_sdnet(ModelConfig(**{**tiny_model_config.__dict__, "decoder_width": 6})).decoder.width == 6


def test_build_discriminator_sees_foreground(tiny_model_config: ModelConfig, image: torch.Tensor) -> None:
    torch.manual_seed(0)
    discriminator = build_discriminator(tiny_model_config)
    assert isinstance(discriminator, MaskDiscriminator)
    assert discriminator.in_channels == 3
    out = build_sdnet(tiny_model_config)(image)
    assert discriminator(out.mask_probabilities[:, 1:]).shape == (2, 1)


def test_seeded_determinism_and_state_dict_round_trip(tiny_model_config: ModelConfig, image: torch.Tensor) -> None:
    torch.manual_seed(7)
    a = build_sdnet(tiny_model_config)
    torch.manual_seed(7)
    b = build_sdnet(tiny_model_config)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    a(image)  # update running statistics
    torch.manual_seed(9)
    c = build_sdnet(tiny_model_config)
    c.load_state_dict(a.state_dict())
    a.eval()
    c.eval()
    out_a, out_c = a(image, sample=False), c(image, sample=False)
    assert torch.equal(out_a.reconstruction, out_c.reconstruction)
    assert torch.equal(out_a.mask_logits, out_c.mask_logits)


def test_rejects_inconsistent_networks() -> None:
    with pytest.raises(ValueError, match="anatomy channels"):
        SDNet(
            anatomy_encoder=AnatomyEncoder(filters=4, depth=2, anatomy_channels=4),
            decoder=FiLMDecoder(anatomy_channels=4),
            segmentor=Segmentor(anatomy_channels=4),
        )
    with pytest.raises(ValueError, match="n_z"):
        SDNet(anatomy_encoder=AnatomyEncoder(filters=4, depth=2), decoder=FiLMDecoder(n_z=4))


def test_default_build_matches_authors_parameter_counts() -> None:
    config = ModelConfig()
    with torch.device("meta"):
        assert count_parameters(build_sdnet(config)) == 34_526_344 + 95_552 + 6_409 + 42_116
        assert count_parameters(build_discriminator(config)) == 11_346_881


def test_build_sdnet_sets_batchnorm_momentum(tiny_model_config: ModelConfig) -> None:
    import dataclasses

    from sdnet.models import build_sdnet

    keras = build_sdnet(tiny_model_config)
    fast = build_sdnet(dataclasses.replace(tiny_model_config, bn_momentum=0.1))
    bns = [m for m in keras.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.momentum == 0.01 for m in bns)
    assert all(m.momentum == 0.1 for m in fast.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
