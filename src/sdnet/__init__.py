"""sdnet: the Spatial Decomposition Network (SDNet) of Chartsias et al., "Disentangled representation learning in
cardiac image analysis", Medical Image Analysis 2019.

An image x is factorised into a binary multi-channel anatomy map s = f_anatomy(x) and a modality vector
z ~ f_modality(x, s); a FiLM decoder g rebuilds x from (s, z); a segmentor h maps s to masks; an LSGAN mask
discriminator lets unlabelled images train the model. The paper's baselines (§4.3: U-Net, GAN, self-train) train
the anatomy encoder's U-Net with a class head (:class:`UNetSegmenter`), selected by ``train.method``.

Quick start::

    from sdnet import load_run
    run = load_run("runs/demo")           # best.pt of the run: model, config, subject split, class names
    model = run.model
    seg = model.segment(images)          # images: (B, 1, H, W) in [-1, 1]
    enc = model.encode(images)           # enc.anatomy (B, C, H, W), enc.modality.z (B, n_z)
    x_hat = model.decode(enc.anatomy, enc.modality.z)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names resolved on first use (PEP 562), so that `import sdnet` (and `sdnet --help`) does not import torch. The
# package is layered (see DESIGN.md); this table only re-exports, it is not a floor of its own.
_LAZY: dict[str, str] = {
    **{n: "sdnet.config" for n in ("ConfigError", "DataConfig", "LossWeights", "ModelConfig", "OptimConfig",
                                   "RunConfig", "TrainConfig", "apply_overrides", "load_config", "save_config")},
    **{n: "sdnet.errors" for n in ("CheckpointError", "DataError", "SDNetError")},
    **{n: "sdnet.models" for n in ("SDNet", "Segmenter", "UNetSegmenter", "build_discriminator", "build_sdnet",
                                   "build_segmenter")},
    **{n: "sdnet.training" for n in ("Trainer", "TrainResult")},
    **{n: "sdnet.checkpoint" for n in ("LoadedRun", "load_model", "load_run")},
    **{n: "sdnet.evaluation" for n in ("EvaluationReport", "evaluate_checkpoint", "evaluate_volumes")},
    **{n: "sdnet.inference" for n in ("predict_scan", "predict_volume")},
    **{n: "sdnet.predict" for n in ("predict_inputs",)},
}

if TYPE_CHECKING:
    from sdnet.checkpoint import LoadedRun, load_model, load_run
    from sdnet.config import (
        ConfigError,
        DataConfig,
        LossWeights,
        ModelConfig,
        OptimConfig,
        RunConfig,
        TrainConfig,
        apply_overrides,
        load_config,
        save_config,
    )
    from sdnet.errors import CheckpointError, DataError, SDNetError
    from sdnet.evaluation import EvaluationReport, evaluate_checkpoint, evaluate_volumes
    from sdnet.inference import predict_scan, predict_volume
    from sdnet.models import SDNet, Segmenter, UNetSegmenter, build_discriminator, build_sdnet, build_segmenter
    from sdnet.predict import predict_inputs
    from sdnet.training import Trainer, TrainResult


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sdnet' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DataError",
    "EvaluationReport",
    "LoadedRun",
    "LossWeights",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SDNet",
    "SDNetError",
    "Segmenter",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "UNetSegmenter",
    "__version__",
    "apply_overrides",
    "build_discriminator",
    "build_sdnet",
    "build_segmenter",
    "evaluate_checkpoint",
    "evaluate_volumes",
    "load_config",
    "load_model",
    "load_run",
    "predict_inputs",
    "predict_scan",
    "predict_volume",
    "save_config",
]
