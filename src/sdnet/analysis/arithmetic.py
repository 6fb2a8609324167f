"""Latent space arithmetic (paper §5.5, Figures 7 and 8): what the decoder does with edited factors.

* Arithmetic on the anatomy factor s (Figure 7): with z fixed, decode s after moving the MYO channel onto the LV
  channel, after swapping the two, and after a random permutation of all channels. :func:`match_channels` finds
  which channel of s holds which labelled structure (the paper identified them by eye).
* Arithmetic on the modality factor z (Figure 8): with s fixed, set one dimension z_i to each of ``steps`` values
  in [−3, 3] (the other dimensions keep μ) and decode; summarise each row of the grid by the per-pixel Pearson
  correlation between z_i and the intensity (:func:`pearson_map`) and by the difference image (last − first
  column, after rescaling the images from [−1, 1] to [0, 1], paper footnote 7).

The paper writes the grid values as δ_j = −3 + 6(j − 1); with 7 steps from −3 to 3 it means
δ_j = −3 + 6(j − 1)/6, i.e. ``linspace(-3, 3, 7)`` = −3, −2, …, 3, which is what :func:`z_interpolation` uses.

Everything here runs under ``torch.inference_mode`` with the model in eval mode (its training flag is restored
afterwards); the returned tensors are CPU inference tensors (clone them to use them in autograd).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sdnet.errors import AnalysisError
from sdnet.models import SDNet
from sdnet.utils import evaluating

__all__ = [
    "ArithmeticResult",
    "InterpolationGrid",
    "channel_arithmetic",
    "match_channels",
    "move_channel",
    "pearson_map",
    "permute_channels",
    "swap_channels",
    "z_interpolation",
]


# --------------------------------------------------------------------------------------------------------------
# Which channel of s holds which structure
# --------------------------------------------------------------------------------------------------------------


def match_channels(anatomy: Tensor, labels: Tensor, class_names: Sequence[str]) -> dict[str, int]:
    """Find the anatomy channel of s that holds each labelled class.

    For each class k = 1, …, K (K = ``len(class_names)``, named ``class_names[k - 1]``), the Dice between every
    channel s_c and the class mask (labels == k) is computed over all given images pooled together,
    2 Σ s_c·m / (Σ s_c + Σ m), and every class gets a *different* channel: the assignment that maximises the
    total Dice (``scipy.optimize.linear_sum_assignment``), so a poorly trained model whose best channel is the same
    for two classes still gets a channel per class for the arithmetic. Label values outside 1…K (0 = background,
    or classes without a name) are ignored. With soft anatomy (binarisation ``none``) this is the soft Dice.

    Ties: among equally good assignments the one with the lowest channel indices wins (so a single class that no
    channel overlaps at all gets channel 0). Empty: a class with no pixel in ``labels`` cannot be matched and
    raises; an empty channel has Dice 0 with every class present.

    Args:
        anatomy: s, (N, C, H, W) float, binary {0, 1}.
        labels: (N, H, W) int, class indices, 0 = background.
        class_names: names of the foreground classes 1…K, e.g. ``("MYO", "LV", "RV")``.

    Returns:
        ``{class name: channel index in [0, C)}``, in the order of ``class_names``.

    Raises:
        AnalysisError: mismatched shapes, duplicate names, fewer channels than classes, or a class absent from
            ``labels``.
    """
    if anatomy.dim() != 4 or labels.dim() != 3:
        raise AnalysisError(f"anatomy must be (N, C, H, W) and labels (N, H, W), got {tuple(anatomy.shape)} and "
                         f"{tuple(labels.shape)}")
    if anatomy.shape[0] != labels.shape[0] or anatomy.shape[2:] != labels.shape[1:]:
        raise AnalysisError(f"anatomy {tuple(anatomy.shape)} and labels {tuple(labels.shape)} disagree on N, H, W")
    if len(set(class_names)) != len(class_names):
        raise AnalysisError(f"class names must be distinct, got {list(class_names)}")
    s = anatomy.detach().to(torch.float64)  # (N, C, H, W)
    target = labels.detach().to(s.device)
    channel_sizes = s.sum(dim=(0, 2, 3))  # (C,)
    if len(class_names) > s.shape[1]:
        raise AnalysisError(f"{len(class_names)} classes but only {s.shape[1]} anatomy channels to match them to")
    rows = []
    for k, name in enumerate(class_names, start=1):
        mask = (target == k).to(torch.float64)  # (N, H, W)
        mask_size = float(mask.sum())
        if mask_size == 0:
            raise AnalysisError(f"class {name!r} (label {k}) has no pixel in the labels: its channel cannot be matched")
        overlap = (s * mask[:, None]).sum(dim=(0, 2, 3))  # (C,)
        rows.append((2 * overlap / (channel_sizes + mask_size)).cpu().numpy())  # denominator ≥ mask_size > 0
    from scipy.optimize import linear_sum_assignment

    dice = np.stack(rows)  # (K, C)
    tie_break = 1e-9 * np.arange(dice.shape[1])[None, :]  # prefer low channel indices among equal totals
    class_index, channel_index = linear_sum_assignment(tie_break - dice)
    matches = {class_names[int(k)]: int(c) for k, c in zip(class_index, channel_index, strict=True)}
    matches = {name: matches[name] for name in class_names}
    return matches


# --------------------------------------------------------------------------------------------------------------
# Operations on the anatomy factor (Figure 7)
# --------------------------------------------------------------------------------------------------------------


def _check_channel(s: Tensor, index: int, name: str) -> None:
    if s.dim() != 4:
        raise AnalysisError(f"s must be (B, C, H, W), got {tuple(s.shape)}")
    if not 0 <= index < s.shape[1]:
        raise AnalysisError(f"{name}={index} is not a channel of s with C={s.shape[1]}")


def move_channel(s: Tensor, source: int, target: int) -> Tensor:
    """Move the content of one anatomy channel onto another (Figure 7, third image: MYO → LV).

    target := clamp(target + source, 0, 1) (the union for binary s), then source := 0.

    Args:
        s: (B, C, H, W) float, binary {0, 1}; not modified.
        source: channel emptied.
        target: channel that receives the source's pixels; must differ from ``source``.

    Returns:
        (B, C, H, W) float, a new tensor.

    Raises:
        AnalysisError: a channel out of range, or ``source == target``.
    """
    _check_channel(s, source, "source")
    _check_channel(s, target, "target")
    if source == target:
        raise AnalysisError(f"source and target are the same channel ({source})")
    out = s.clone()
    out[:, target] = (s[:, target] + s[:, source]).clamp(0.0, 1.0)
    out[:, source] = 0.0
    return out


def swap_channels(s: Tensor, a: int, b: int) -> Tensor:
    """Exchange the contents of two anatomy channels (Figure 7, fourth image: MYO ↔ LV).

    Args:
        s: (B, C, H, W) float; not modified.
        a: first channel.
        b: second channel (``a == b`` gives a copy of s).

    Returns:
        (B, C, H, W) float, a new tensor with channels a and b exchanged.

    Raises:
        AnalysisError: a channel out of range.
    """
    _check_channel(s, a, "a")
    _check_channel(s, b, "b")
    order = torch.arange(s.shape[1], device=s.device)  # (C,)
    order[a], order[b] = b, a
    return s.index_select(1, order)


def permute_channels(s: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Shuffle the anatomy channels with a random permutation (Figure 7, fifth image).

    The permutation is drawn with ``torch.randperm(C, generator=generator)`` and may, by chance, be the identity
    (probability 1/C!).

    Args:
        s: (B, C, H, W) float; not modified.
        generator: source of the permutation (seed it for a reproducible figure).

    Returns:
        (permuted, permutation): permuted (B, C, H, W), a new tensor with ``permuted[:, c] = s[:, permutation[c]]``;
        permutation (C,) int64 on the CPU.
    """
    if s.dim() != 4:
        raise AnalysisError(f"s must be (B, C, H, W), got {tuple(s.shape)}")
    permutation = torch.randperm(s.shape[1], generator=generator, device=generator.device).cpu()  # (C,)
    return s.index_select(1, permutation.to(s.device)), permutation


# --------------------------------------------------------------------------------------------------------------
# Decoding edited factors with a model
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArithmeticResult:
    """Reconstructions of images from edited anatomy factors, all with the same z = μ (paper Figure 7).

    Attributes:
        image: x, (B, 1, H, W) float in [−1, 1], the input.
        reconstruction: g(s, μ), (B, 1, H, W) float in [−1, 1].
        moved: g(s with ``source`` moved onto ``target``, μ), (B, 1, H, W).
        swapped: g(s with ``source`` and ``target`` exchanged, μ), (B, 1, H, W).
        permuted: g(s with channels permuted by ``permutation``, μ), (B, 1, H, W).
        permutation: (C,) int64, ``permuted s[:, c] = s[:, permutation[c]]``.
        source: name of the moved structure (e.g. ``"MYO"``).
        target: name of the receiving structure (e.g. ``"LV"``).
        source_channel: channel of s holding ``source``.
        target_channel: channel of s holding ``target``.
    """

    image: Tensor
    reconstruction: Tensor
    moved: Tensor
    swapped: Tensor
    permuted: Tensor
    permutation: Tensor
    source: str
    target: str
    source_channel: int
    target_channel: int


def channel_arithmetic(
    model: SDNet,
    x: Tensor,
    channels: Mapping[str, int],
    *,
    source: str = "MYO",
    target: str = "LV",
    seed: int = 0,
) -> ArithmeticResult:
    """Decode edited anatomy factors with the images' own modality factor (paper §5.5, Figure 7).

    x is encoded with z = μ (no sampling); the original s, s with ``source`` moved onto ``target``
    (:func:`move_channel`), s with the two swapped (:func:`swap_channels`) and s with all channels permuted
    (:func:`permute_channels`, a CPU generator seeded with ``seed``) are decoded with the same μ.

    Args:
        model: a trained SDNet; run in eval mode under ``torch.inference_mode``, training flag restored.
        x: (B, 1, H, W) float in [−1, 1].
        channels: structure name → channel of s, e.g. from :func:`match_channels`.
        source: structure whose channel is moved / swapped.
        target: structure whose channel receives it.
        seed: seed of the random permutation.

    Returns:
        ArithmeticResult with the input and four reconstructions, each (B, 1, H, W), on the CPU.

    Raises:
        AnalysisError: ``source`` or ``target`` missing from ``channels``, or both on the same channel.
    """
    for name in (source, target):
        if name not in channels:
            raise AnalysisError(f"structure {name!r} has no channel in {dict(channels)}")
    source_channel, target_channel = channels[source], channels[target]
    if source_channel == target_channel:
        raise AnalysisError(f"{source} and {target} share channel {source_channel}: nothing to move or swap")
    generator = torch.Generator().manual_seed(seed)
    with evaluating(model) as device:
        image = x.to(device)
        encoding = model.encode(image, sample=False)
        s, mu = encoding.anatomy, encoding.modality.mu  # (B, C, H, W), (B, n_z)
        permuted_s, permutation = permute_channels(s, generator)
        return ArithmeticResult(
            image=image.cpu(),
            reconstruction=model.decode(s, mu).cpu(),
            moved=model.decode(move_channel(s, source_channel, target_channel), mu).cpu(),
            swapped=model.decode(swap_channels(s, source_channel, target_channel), mu).cpu(),
            permuted=model.decode(permuted_s, mu).cpu(),
            permutation=permutation,
            source=source,
            target=target,
            source_channel=source_channel,
            target_channel=target_channel,
        )


def pearson_map(values: Tensor, images: Tensor) -> Tensor:
    """Per-pixel Pearson correlation between a varied value and the intensity (paper §5.5, ρ_{z_i, y_{h,w}}).

    ρ_{h,w} = Σ_j (v_j − v̄)(y^j_{h,w} − ȳ_{h,w}) / sqrt(Σ_j (v_j − v̄)² · Σ_j (y^j_{h,w} − ȳ_{h,w})²), computed in
    float64. A pixel whose intensity is the same in all J images (zero variance: the correlation is undefined)
    gets 0. Near-constant pixels (e.g. a saturated tanh) still get a correlation, however small their change;
    read it next to the difference image.

    Args:
        values: (J,) float, the values that were varied (J ≥ 2, not all equal).
        images: (J, H, W) float, the image obtained for each value.

    Returns:
        (H, W) float in [−1, 1], dtype of ``images`` (float32 for non-float input).

    Raises:
        AnalysisError: shapes disagree, J < 2, or all values equal.
    """
    if values.dim() != 1 or images.dim() != 3 or values.shape[0] != images.shape[0]:
        raise AnalysisError(f"values must be (J,) and images (J, H, W), got {tuple(values.shape)} and "
                         f"{tuple(images.shape)}")
    if values.shape[0] < 2:
        raise AnalysisError(f"a correlation needs at least 2 values, got {values.shape[0]}")
    v = values.detach().to(torch.float64)
    y = images.detach().to(torch.float64)
    v_centred = v - v.mean()  # (J,)
    v_norm = float(v_centred.square().sum().sqrt())
    if v_norm == 0:
        raise AnalysisError("all values are equal: the correlation is undefined")
    y_centred = y - y.mean(dim=0)  # (J, H, W)
    covariance = torch.einsum("j,jhw->hw", v_centred, y_centred)  # (H, W)
    y_norm = y_centred.square().sum(dim=0).sqrt()  # (H, W)
    constant = y.amax(dim=0) == y.amin(dim=0)  # (H, W) zero variance
    rho = torch.where(constant, torch.zeros_like(covariance), covariance / (v_norm * y_norm.clamp_min(1e-300)))
    dtype = images.dtype if images.is_floating_point() else torch.float32
    return rho.clamp(-1.0, 1.0).to(dtype)


@dataclass(frozen=True)
class InterpolationGrid:
    """Decodings of one image with one modality dimension at a time set to fixed values (paper Figure 8).

    Attributes:
        image: x, (H, W) float in [−1, 1], the input.
        reconstruction: g(s, μ), (H, W) float in [−1, 1].
        mu: μ, (n_z,) float, the modality factor of x.
        values: δ, (steps,) float, ``linspace(low, high, steps)``.
        images: (n_z, steps, H, W) float in [−1, 1]; ``images[i, j] = g(s, z)`` with z = μ except z_i = δ_j.
        correlation: (n_z, H, W) float in [−1, 1], per row the :func:`pearson_map` of δ against the intensities
            (0 where a pixel does not change along the row).
        difference: (n_z, H, W) float in [−1, 1], last minus first column after rescaling the images from
            [−1, 1] to [0, 1] (paper footnote 7), i.e. ``(images[:, -1] - images[:, 0]) / 2``.
    """

    image: Tensor
    reconstruction: Tensor
    mu: Tensor
    values: Tensor
    images: Tensor
    correlation: Tensor
    difference: Tensor


def z_interpolation(
    model: SDNet, x: Tensor, *, steps: int = 7, low: float = -3.0, high: float = 3.0
) -> InterpolationGrid:
    """Vary each modality dimension over [low, high] with s and the other dimensions fixed (paper §5.5, Fig. 8).

    s and μ are encoded from x; for each dimension i and δ_j in ``linspace(low, high, steps)`` the image
    g(s, z ⊙ v_i + (1 − v_i) δ_j) is decoded, where z = μ and v_i is 1 except 0 at i (the paper's grid). Each
    row (one dimension) is decoded as one batch of ``steps`` images.

    Args:
        model: a trained SDNet with a single-channel decoder; run in eval mode under ``torch.inference_mode``,
            training flag restored.
        x: (1, 1, H, W) float in [−1, 1], ONE image.
        steps: number of values per dimension (the paper: 7, so the middle column is z_i = 0).
        low: first value (the paper: −3, three prior standard deviations).
        high: last value (the paper: 3).

    Returns:
        InterpolationGrid with images (n_z, steps, H, W), correlation and difference (n_z, H, W), on the CPU.

    Raises:
        AnalysisError: x not (1, 1, H, W), steps < 2, or low ≥ high.
    """
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 1:
        raise AnalysisError(f"x must be one single-channel image (1, 1, H, W), got {tuple(x.shape)}")
    if steps < 2:
        raise AnalysisError(f"steps must be at least 2, got {steps}")
    if not low < high:
        raise AnalysisError(f"low must be below high, got low={low}, high={high}")
    with evaluating(model) as device:
        image = x.to(device)
        encoding = model.encode(image, sample=False)
        s, mu = encoding.anatomy, encoding.modality.mu  # (1, C, H, W), (1, n_z)
        n_z = mu.shape[1]
        values = torch.linspace(low, high, steps, dtype=mu.dtype, device=device)  # (steps,)
        s_row = s.expand(steps, -1, -1, -1)  # (steps, C, H, W)
        rows = []
        for i in range(n_z):
            z = mu.repeat(steps, 1)  # (steps, n_z)
            z[:, i] = values
            rows.append(model.decode(s_row, z)[:, 0])  # (steps, H, W)
        images = torch.stack(rows).cpu()  # (n_z, steps, H, W)
        reconstruction = model.decode(s, mu)[0, 0].cpu()  # (H, W)
        values = values.cpu()
        correlation = torch.stack([pearson_map(values, images[i]) for i in range(n_z)])  # (n_z, H, W)
        rescaled = (images + 1) / 2  # [−1, 1] → [0, 1], paper footnote 7
        difference = rescaled[:, -1] - rescaled[:, 0]  # (n_z, H, W)
        return InterpolationGrid(
            image=image[0, 0].cpu(),
            reconstruction=reconstruction,
            mu=mu[0].cpu(),
            values=values,
            images=images,
            correlation=correlation,
            difference=difference,
        )
