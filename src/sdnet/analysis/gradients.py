"""Which loss term drives which network: the per-term gradients of a trained SDNet (our diagnostic, not in the paper).

Issue 14 found SDNet no better than the GAN baseline; issue 24 asks where the factorisation's terms act. For
batches of the checkpoint's own training subjects, each generator step of the authors' schedule is rebuilt from
the training code's term functions (:func:`~sdnet.training.steps.supervised_terms`,
:func:`~sdnet.training.steps.unsupervised_terms`, and for SDNet+ :func:`~sdnet.training.steps.factor_terms` on the
pairs of :func:`~sdnet.training.methods.plus_pairs`), and the gradient of every λ-weighted term λ_t L_t is taken
with respect to each network's parameters on its own:

* ``norm``: ‖∇ λ_t L_t‖ over the network's parameters;
* ``share``: ⟨g_t, g⟩ / ‖g‖², with g = Σ_t g_t the step's whole gradient: the part of the step's gradient direction
  that term accounts for (the shares of one step sum to 1 per network; a negative share pulls against the rest);
* ``dominant``: the fraction of the network's parameters (those some term of the step reaches) at which the term's
  gradient is the largest in magnitude of the step's — under Adam's per-parameter scaling, roughly where the term
  decides the update;
* ``cosine``: between two terms' gradients on one network.

The anatomy encoder f_anatomy is the network the factorisation is meant to shape: the reconstruction term reaches
it only through s. What a step's update does is the sum's gradient scaled per parameter by Adam's running second
moment, so the shares describe the direction each step is given, not the size of its update.

The batches are drawn uniformly from the training subjects' slices (labelled: the split's labelled subjects'
masked phases; unlabelled: every slice of the other training subjects), without augmentation; the networks run in
training mode (BatchNorm batch statistics, as in training) on a copy loaded from the checkpoint, which is only
read; the global RNG state is restored afterwards. The z-reconstruction step (f_modality and g only) and the
discriminator step are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sdnet.analysis.run_io import load_analysis_input, volume_images, write_numbers
from sdnet.config import LossWeights, ModelConfig
from sdnet.data.pipeline import PreprocessedVolume
from sdnet.errors import SDNetError
from sdnet.models import MaskDiscriminator, SDNet, build_discriminator
from sdnet.training.methods import plus_inputs, plus_pairs
from sdnet.training.steps import StepResult, factor_terms, supervised_terms, unsupervised_terms
from sdnet.training.teacher import AnatomyTeacher

NETWORKS = ("anatomy_encoder", "modality_encoder", "decoder", "segmentor")
"""The SDNet parts whose gradients are reported (glossary: f_anatomy, f_modality, g, h)."""

SYMBOLS = {"anatomy_encoder": "f_anatomy", "modality_encoder": "f_modality", "decoder": "g", "segmentor": "h"}


def term_gradients(terms: Mapping[str, Tensor], weights: LossWeights, networks: Mapping[str, nn.Module]
                   ) -> dict[str, dict[str, Tensor]]:
    """The flattened gradient of each λ-weighted term with respect to each network's parameters.

    Args:
        terms: unweighted scalar loss terms of one step, keyed by their λ name (``segm``, ``rec``, ...), all from
            one graph.
        weights: the λ values (:func:`sdnet.losses.weighted_sum`'s).
        networks: name -> module.

    Returns:
        term -> network -> 1-D gradient (zeros where the term does not reach the network).
    """
    params = {name: [p for p in module.parameters() if p.requires_grad] for name, module in networks.items()}
    flat = [p for ps in params.values() for p in ps]
    out: dict[str, dict[str, Tensor]] = {}
    for term, value in terms.items():
        weighted = getattr(weights, term) * value
        grads = torch.autograd.grad(weighted, flat, retain_graph=True, allow_unused=True)
        by_param = [torch.zeros_like(p) if g is None else g for p, g in zip(flat, grads, strict=True)]
        out[term], start = {}, 0
        for name, ps in params.items():
            chunk = by_param[start:start + len(ps)]
            start += len(ps)
            out[term][name] = (torch.cat([g.detach().flatten().float() for g in chunk]) if chunk
                               else torch.zeros(0))
    return out


def gradient_statistics(grads: Mapping[str, Mapping[str, Tensor]]) -> dict[str, Any]:
    """Norms, shares of the step's gradient, per-parameter dominance and pairwise cosines of one step's term
    gradients (:func:`term_gradients`). Shares, dominance and cosines are NaN where no term reaches a network."""
    terms = list(grads)
    networks = list(next(iter(grads.values()))) if grads else []
    norm = {t: {n: float(grads[t][n].norm()) for n in networks} for t in terms}
    share: dict[str, dict[str, float]] = {t: {} for t in terms}
    dominant: dict[str, dict[str, float]] = {t: {} for t in terms}
    cosine: dict[str, dict[str, float]] = {}
    for n in networks:
        stacked = torch.stack([grads[t][n] for t in terms])  # (T, P)
        total = stacked.sum(dim=0)
        total_sq = float(total.dot(total))
        magnitude = stacked.abs()
        reached = magnitude.amax(dim=0) > 0
        winner = magnitude[:, reached].argmax(dim=0)
        n_reached = int(reached.sum())
        for i, t in enumerate(terms):
            share[t][n] = float(grads[t][n].dot(total)) / total_sq if total_sq > 0 else math.nan
            dominant[t][n] = float((winner == i).sum()) / n_reached if n_reached else math.nan
        cosine[n] = {}
        for i, a in enumerate(terms):
            for b in terms[i + 1:]:
                denominator = norm[a][n] * norm[b][n]
                cosine[n][f"{a}|{b}"] = (float(grads[a][n].dot(grads[b][n])) / denominator if denominator > 0
                                         else math.nan)
    return {"norm": norm, "share": share, "dominant": dominant, "cosine": cosine}


def _labels(volumes: Sequence[PreprocessedVolume]) -> Tensor:
    """The masks of every slice, (N, H, W) int64; the volumes all have labels."""
    return torch.from_numpy(np.concatenate([v.label for v in volumes if v.label is not None])).long()


def _discriminator(state: Mapping[str, Any], model_config: ModelConfig) -> MaskDiscriminator | None:
    """D_M as the checkpoint stores it (None for a checkpoint without one)."""
    weights = state.get("discriminator") or {}
    if not weights:
        return None
    discriminator = build_discriminator(model_config)
    discriminator.load_state_dict(weights)
    return discriminator


def _teacher(state: Mapping[str, Any], model: SDNet, decay: float) -> AnatomyTeacher | None:
    """SDNet+'s EMA teacher as saved in the checkpoint (``train.plus_teacher`` > 0), or None."""
    weights = state.get("teacher") or {}
    if decay <= 0 or not weights:
        return None
    teacher = AnatomyTeacher(model, decay)
    teacher.load_state_dict(weights)
    return teacher


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def analyse_gradients(checkpoint: str | Path, out: str | Path | None = None, *, data_root: str | Path | None = None,
                      batches: int = 8, batch_size: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Per-term gradient norms and shares of each generator step, averaged over ``batches`` batches; writes
    ``gradients.json`` and ``gradients.md`` to ``out`` when given.

    Args:
        checkpoint: an SDNet run folder (``best.pt``) or ``.pt`` file (``last.pt``, ``best_s<N>.pt``, ...).
        batches: batches to average over (each drawn anew).
        batch_size: images per batch (default: the run's ``train.batch_size``).
        seed: seed of the batch draw and of the VAE's noise (the global RNG state is restored afterwards).

    Raises:
        SDNetError: not an SDNet checkpoint, no labelled training slices, or ``batches`` < 1.
    """
    if batches < 1:
        raise SDNetError(f"--batches must be at least 1, got {batches}")
    with torch.random.fork_rng(devices=[]):  # building the networks and the VAE noise draw from the global RNG
        torch.manual_seed(seed)
        numbers = _gradients(checkpoint, data_root=data_root, batches=batches, batch_size=batch_size, seed=seed)
    if out is not None:
        write_numbers(Path(out), "gradients", numbers, gradients_markdown(numbers))
    return numbers


def _gradients(checkpoint: str | Path, *, data_root: str | Path | None, batches: int, batch_size: int | None,
               seed: int) -> dict[str, Any]:
    data = load_analysis_input(checkpoint, data_root=data_root)
    model, config = data.model, data.config
    weights = config.loss
    labelled_ids = set(data.split.labelled)
    labelled = [v for v in data.train if v.subject_id in labelled_ids and v.label is not None]
    if not labelled:
        raise SDNetError(f"{checkpoint}: no labelled training slices in the saved split to take gradients on")
    x_lab, m_lab = volume_images(labelled), _labels(labelled)
    x_unl = volume_images([v for v in data.train if v.subject_id not in labelled_ids])
    state = data.state
    discriminator = _discriminator(state, config.model)
    teacher = _teacher(state, model, config.train.plus_teacher) if weights.plus else None
    b = batch_size or config.train.batch_size
    networks = {name: getattr(model, name) for name in NETWORKS}
    n_classes = config.model.n_classes
    per_step: dict[str, list[dict[str, Any]]] = {"supervised": [], "unsupervised": [], "factor": []}
    losses: dict[str, dict[str, list[float]]] = {k: {} for k in per_step}
    generator = torch.Generator().manual_seed(seed)
    model.train()  # BatchNorm batch statistics, as in training (the model is this analysis' own copy)

    def record(step: str, terms: dict[str, Tensor]) -> None:
        per_step[step].append(gradient_statistics(term_gradients(terms, weights, networks)))
        for k, v in terms.items():
            losses[step].setdefault(k, []).append(float(v.detach()))

    for _ in range(batches):
        pick = torch.randint(0, x_lab.shape[0], (b,), generator=generator)
        terms, out_sup = supervised_terms(model, x_lab[pick], m_lab[pick], weights, n_classes=n_classes)
        record("supervised", terms)
        sup = StepResult(losses={}, anatomy=out_sup.anatomy.detach(), modality=out_sup.modality.z.detach())
        uns = None
        if x_unl.shape[0] > 0:
            pick_u = torch.randint(0, x_unl.shape[0], (b,), generator=generator)
            terms, out_uns = unsupervised_terms(model, discriminator, x_unl[pick_u], weights)
            record("unsupervised", terms)
            uns = StepResult(losses={}, anatomy=out_uns.anatomy.detach(),
                             fake_masks=out_uns.mask_probabilities[:, 1:].detach().float(),
                             modality=out_uns.modality.z.detach())
        if weights.plus:
            s, m, codes = plus_pairs(sup, m_lab[pick], uns, source=config.train.plus_z,
                                     unlabelled=config.train.plus_unlabelled, n_z=model.modality_encoder.n_z)
            m, inputs, target_anatomy = plus_inputs(m, x_lab[pick], x_unl[pick_u] if uns is not None else None,
                                                    n_labelled=b, source=config.train.plus_z, teacher=teacher)
            record("factor", factor_terms(model, s, m, codes, weights, n_classes=n_classes, images=inputs,
                                          anatomy_target=target_anatomy))
    steps: dict[str, Any] = {}
    for step, records in per_step.items():
        if not records:
            continue
        terms_of = list(records[0]["norm"])
        steps[step] = {
            "terms": {t: {"lambda": getattr(weights, t), "loss": _mean(losses[step][t]),
                          "norm": {n: _mean([r["norm"][t][n] for r in records]) for n in NETWORKS},
                          "share": {n: _mean([r["share"][t][n] for r in records]) for n in NETWORKS},
                          "dominant": {n: _mean([r["dominant"][t][n] for r in records]) for n in NETWORKS}}
                      for t in terms_of},
            "cosine": {n: {pair: _mean([r["cosine"][n][pair] for r in records]) for pair in records[0]["cosine"][n]}
                       for n in NETWORKS},
        }
    numbers: dict[str, Any] = {
        "checkpoint": str(checkpoint), "step": state.get("step"), "method": config.train.method,
        "batches": batches, "batch_size": b, "seed": seed, "weights": asdict(weights),
        "discriminator": discriminator is not None, "steps": steps,
    }
    return numbers


def gradients_markdown(numbers: Mapping[str, Any]) -> list[str]:
    """The Markdown summary of :func:`analyse_gradients`' numbers: one table per step."""
    lines = [f"# Per-term gradients of {numbers['checkpoint']} (iteration {numbers['step']})", "",
             f"{numbers['batches']} batches of {numbers['batch_size']} training slices (seed {numbers['seed']}); "
             "‖∇‖ = norm of the λ-weighted term's gradient over the network's parameters; share = its projection "
             "on the step's whole gradient (a step's shares sum to 1 per network); dominant = fraction of "
             "f_anatomy's parameters at which the term's gradient is the step's largest.", ""]
    head = " | ".join(f"‖∇‖ {SYMBOLS[n]} | share" for n in NETWORKS) + " | dominant f_anatomy"
    for step, entry in numbers["steps"].items():
        lines += [f"## {step} step", "", f"| term | λ | loss | {head} |",
                  "|---|---|---|" + "---|---|" * len(NETWORKS) + "---|"]
        for term, t in entry["terms"].items():
            cells = " | ".join(f"{t['norm'][n]:.3g} | {_fmt(t['share'][n])}" for n in NETWORKS)
            lines.append(f"| {term} | {t['lambda']:g} | {t['loss']:.4g} | {cells} | "
                         f"{_fmt(t['dominant']['anatomy_encoder'])} |")
        pairs = entry["cosine"]["anatomy_encoder"]
        if pairs:
            lines += ["", "cosine on f_anatomy: " + ", ".join(f"{p.replace('|', ' vs ')} {_fmt(v)}"
                                                              for p, v in pairs.items())]
        lines.append("")
    return lines


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"
