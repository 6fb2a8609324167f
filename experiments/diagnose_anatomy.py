"""Which anatomy channels carry which class over training, and which loss terms drive the anatomy encoder.

The diagnostic behind issue 14's "RV collapse": SDNet at 3 labelled ACDC patients ended with RV Dice 0.000. This
script trains a run exactly as ``sdnet train`` would (same config, same iterations; the measurements restore every
state they touch: BatchNorm statistics, the RNG), and every ``--every`` iterations records

* channel coverage: for each anatomy channel c and class k, the fraction of the validation slices' class-k pixels
  where s_c is on (the mean of s_c there for a soft anatomy) — a class is "carried" by the channel that covers
  it; the RV is lost when no channel covers it any more;
* per-term gradient norms at the anatomy encoder f_anatomy: ‖∇ λ·L_term‖ for every weighted term of the supervised
  update (λ2 Dice, λ_ce CE, λ4 rec, λ1 KL) and of the unsupervised one (λ3 adv, λ4 rec, λ1 KL), averaged over
  four fixed batches, and the cosine between the segmentation and reconstruction gradients;
* the validation Dice per class.

    python experiments/diagnose_anatomy.py --config experiments/configs/acdc_semi_cpu.yaml \\
        --data ../shared/data/acdc_ssl4mis --out diag/old --steps 600 --every 50 \\
        --set data.labelled_subjects=3 --set data.augment_flip=false

Writes ``diagnostic.jsonl`` (one record per measurement), ``diagnostic.png`` and ``diagnostic.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path
from typing import Any

import torch

from sdnet.config import load_config
from sdnet.losses import cross_entropy, dice_loss, kl_divergence, l1_reconstruction, lsgan_generator_loss
from sdnet.models import SDNet
from sdnet.training import Trainer
from sdnet.training.steps import one_hot_foreground

BATCHES = 4


def channel_coverage(model: SDNet, trainer: Trainer) -> tuple[list[list[float]], list[float]]:
    """coverage[c][k]: mean of anatomy channel c over the validation pixels of class k (k = 0 background); and
    per class the fraction of its pixels where no channel is on (s all zero: possible with rounding, which
    leaves a pixel empty when no channel's probability reaches 0.5)."""
    n_classes = trainer.config.model.n_classes
    sums = torch.zeros(model.anatomy_encoder.anatomy_channels, n_classes, dtype=torch.float64)
    empty = torch.zeros(n_classes, dtype=torch.float64)
    counts = torch.zeros(n_classes, dtype=torch.float64)
    model.eval()
    with torch.inference_mode():
        for volume in trainer.data.val:
            for start in range(0, volume.image.shape[0], 16):
                s = model.anatomy_encoder(volume.image[start:start + 16].to(trainer.device)).double().cpu()
                onehot = torch.nn.functional.one_hot(volume.label[start:start + 16].long(), n_classes).double()
                sums += torch.einsum("bchw,bhwk->ck", s, onehot)
                empty += torch.einsum("bhw,bhwk->k", (s.sum(dim=1) < 0.5).double(), onehot)
                counts += onehot.sum(dim=(0, 1, 2))
    model.train()
    return (sums / counts.clamp(min=1)).tolist(), (empty / counts.clamp(min=1)).tolist()


def _norm(grads: tuple[torch.Tensor | None, ...]) -> float:
    return math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads if g is not None))


def _flat(grads: tuple[torch.Tensor | None, ...], params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params,
                                                                                           strict=True)])


def gradient_norms(trainer: Trainer) -> dict[str, float]:
    """‖∇_{f_anatomy} λ·L‖ per weighted term over BATCHES fixed batches (mean), and cos(segm+ce, rec) of the
    supervised update. Restores the model's BatchNorm statistics and the RNG afterwards."""
    model = trainer.model
    assert isinstance(model, SDNet)
    w, n_classes = trainer.config.loss, trainer.config.model.n_classes
    params = [p for p in model.anatomy_encoder.parameters() if p.requires_grad]
    saved_model, rng = copy.deepcopy(model.state_dict()), torch.get_rng_state()
    sums: dict[str, float] = {}
    cosines: list[float] = []
    model.train()
    for b in range(BATCHES):
        x, m = trainer.labelled_stream.batch(b)
        assert m is not None
        x, m = x.to(trainer.device), m.to(trainer.device)
        out = model(x)
        terms = {"sup_segm": w.segm * dice_loss(out.mask_probabilities[:, 1:], one_hot_foreground(m, n_classes)),
                 "sup_rec": w.rec * l1_reconstruction(x, out.reconstruction),
                 "sup_kl": w.kl * kl_divergence(out.modality.mu, out.modality.logvar)}
        if w.ce > 0:
            terms["sup_ce"] = w.ce * cross_entropy(out.mask_logits, m)
        if trainer.unlabelled_stream is not None:
            xu = trainer.unlabelled_stream.batch(b)[0].to(trainer.device)
            uo = model(xu)
            terms["unsup_rec"] = w.rec * l1_reconstruction(xu, uo.reconstruction)
            terms["unsup_kl"] = w.kl * kl_divergence(uo.modality.mu, uo.modality.logvar)
            if trainer.discriminator is not None and w.adv > 0:
                terms["unsup_adv"] = w.adv * lsgan_generator_loss(trainer.discriminator(uo.mask_probabilities[:, 1:]))
        grads = {k: torch.autograd.grad(v, params, retain_graph=True, allow_unused=True) for k, v in terms.items()}
        for k, g in grads.items():
            sums[k] = sums.get(k, 0.0) + _norm(g) / BATCHES
        seg = _flat(grads["sup_segm"], params) + (_flat(grads["sup_ce"], params) if "sup_ce" in grads else 0)
        rec = _flat(grads["sup_rec"], params)
        cosines.append(float(torch.nn.functional.cosine_similarity(seg, rec, dim=0)))
    if trainer.discriminator is not None:
        trainer.discriminator.zero_grad(set_to_none=True)
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved_model)
    torch.set_rng_state(rng)
    sums["cos_segm_rec"] = sum(cosines) / len(cosines)
    return sums


def measure(trainer: Trainer) -> dict[str, Any]:
    model = trainer.model
    assert isinstance(model, SDNet)
    val, per_class = trainer.validate_per_class()
    coverage, empty = channel_coverage(model, trainer)
    return {"step": trainer.step, "val_dice": val, **{f"val_dice_{k}": v for k, v in per_class.items()},
            "grad": gradient_norms(trainer), "coverage": coverage, "empty": empty}


def plot(records: list[dict[str, Any]], class_names: list[str], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r["step"] for r in records]
    fig = Figure(figsize=(13, 7.5))
    FigureCanvasAgg(fig)
    n_channels = len(records[0]["coverage"])
    for k, name in enumerate(class_names, start=1):
        ax = fig.add_subplot(2, 3, k)
        for c in range(n_channels):
            ax.plot(steps, [r["coverage"][c][k] for r in records], label=f"s{c}")
        ax.set_title(f"{name}: fraction of its pixels in each anatomy channel", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("iteration")
        if k == 1:
            ax.legend(fontsize=7, ncol=2)
    ax = fig.add_subplot(2, 3, 4)
    for key in records[0]["grad"]:
        if key != "cos_segm_rec":
            ax.plot(steps, [max(r["grad"][key], 1e-6) for r in records], label=key)
    ax.set_yscale("log")
    ax.set_title("‖∇ λ·L‖ at the anatomy encoder (weighted terms)", fontsize=9)
    ax.set_xlabel("iteration")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(2, 3, 5)
    ax.plot(steps, [r["grad"]["cos_segm_rec"] for r in records])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_title("cos(∇ segmentation, ∇ reconstruction), supervised update", fontsize=9)
    ax.set_xlabel("iteration")
    ax = fig.add_subplot(2, 3, 6)
    for name in ["", *class_names]:
        key = f"val_dice_{name}" if name else "val_dice"
        ax.plot(steps, [r.get(key, float("nan")) for r in records], label=name or "mean")
    ax.set_ylim(0, 1)
    ax.set_title("validation 3D Dice", fontsize=9)
    ax.set_xlabel("iteration")
    ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summary(records: list[dict[str, Any]], class_names: list[str], title: str) -> str:
    lines = [f"# Anatomy diagnostic: {title}", "",
             "Coverage: the largest fraction of a class's validation pixels held by one anatomy channel (and which). "
             "Empty: the fraction of its pixels where s is all zero. Gradient norms: ‖∇ λ·L‖ at the anatomy "
             "encoder, mean over 4 fixed batches.", ""]
    grad_keys = list(records[0]["grad"])
    lines.append("| iteration | val Dice | " + " | ".join(f"{n} Dice" for n in class_names) + " | "
                 + " | ".join(f"{n} coverage" for n in class_names) + " | "
                 + " | ".join(f"{n} empty" for n in class_names) + " | " + " | ".join(grad_keys) + " |")
    lines.append("|" + "---|" * (2 + 3 * len(class_names) + len(grad_keys)))
    for r in records:
        cov = []
        for k in range(1, len(class_names) + 1):
            column = [r["coverage"][c][k] for c in range(len(r["coverage"]))]
            best = max(range(len(column)), key=column.__getitem__)
            cov.append(f"{column[best]:.2f} (s{best})")
        lines.append(f"| {r['step']} | {r['val_dice']:.3f} | "
                     + " | ".join(f"{r.get(f'val_dice_{n}', float('nan')):.3f}" for n in class_names) + " | "
                     + " | ".join(cov) + " | "
                     + " | ".join(f"{r['empty'][k]:.2f}" for k in range(1, len(class_names) + 1)) + " | "
                     + " | ".join(f"{r['grad'][k]:.3g}" for k in grad_keys) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--title", default="")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = load_config(args.config, [f"data.root={args.data}", *args.overrides])
    args.out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(config, args.out / "run")
    class_names = trainer.class_names
    records: list[dict[str, Any]] = []
    with (args.out / "diagnostic.jsonl").open("w") as f:
        while True:
            if trainer.step % args.every == 0:
                records.append(measure(trainer))
                f.write(json.dumps(records[-1]) + "\n")
                f.flush()
                print(f"step {trainer.step}: val {records[-1]['val_dice']:.3f} "
                      + " ".join(f"{k}={v:.3g}" for k, v in records[-1]["grad"].items()), flush=True)
            if trainer.step >= args.steps:
                break
            trainer.train_iteration()
    title = args.title or " ".join(args.overrides)
    plot(records, class_names, args.out / "diagnostic.png", title)
    (args.out / "diagnostic.md").write_text(summary(records, class_names, title))
    print(f"wrote {args.out / 'diagnostic.md'} and {args.out / 'diagnostic.png'}")


if __name__ == "__main__":
    main()
