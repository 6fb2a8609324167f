"""An inference copy of a trained network: BatchNorm folded into the preceding convolution, channels-last weights.

Not a paper component: a CPU speed-up of evaluation and prediction measured by the benchmark suite
(``python -m benchmarks --sections inference``: 1.39× for ``segment`` and 1.43× for ``encode`` at the CPU config,
docs/performance.md). In eval mode a ``Conv2d → BatchNorm2d`` pair is one affine map, so folding it
(``torch.nn.utils.fusion.fuse_conv_bn_eval``) gives the same function up to float rounding and saves a pass over
every activation; channels-last (NHWC) is the layout oneDNN's CPU convolutions prefer.
"""

from __future__ import annotations

import copy
from typing import TypeVar, cast

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

ModuleT = TypeVar("ModuleT", bound=nn.Module)
T = TypeVar("T")


def fold_batch_norm(model: ModuleT) -> ModuleT:
    """An eval-mode copy of ``model`` in which every ``Conv2d → BatchNorm2d`` pair that follows each other in an
    ``nn.Sequential`` is one ``Conv2d``; the BatchNorm is replaced by ``nn.Identity``. ``model`` is not changed."""
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                    module[i] = fuse_conv_bn_eval(conv, bn)
                    module[i + 1] = nn.Identity()
    return folded


def for_inference(model: T) -> T:
    """An eval-mode copy for fast CPU inference: BatchNorm folded (:func:`fold_batch_norm`) and, on the CPU,
    channels-last weights. Outputs equal the eval-mode outputs of ``model`` up to float rounding (~1e-6); inputs
    may stay NCHW. ``model`` is not changed (its training flag included); anything that is not an ``nn.Module`` is
    returned as is."""
    if not isinstance(model, nn.Module):
        return model
    fast = fold_batch_norm(model)
    device = next((p.device for p in fast.parameters()), torch.device("cpu"))
    if device.type == "cpu":
        fast = fast.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return cast(T, fast)
