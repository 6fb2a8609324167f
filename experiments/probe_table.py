"""Tabulate short probe runs (``sdnet train`` + ``sdnet evaluate``): the settings that differ, validation curves,
test Dice, and variants pooled over seeds with paired t-tests against a reference variant.

    python experiments/probe_table.py --out docs/results/acdc_fewlabel_probes \\
        --reference unet-l3 'faithful-round-l3=runs/l3_faithful_s1,runs/l3_faithful_s2' 'unet-l3=runs/l3_unet' ...

Each positional argument is ``VARIANT=RUN[,RUN...]`` (one run folder per seed). A run folder needs
``config.yaml``, ``log.jsonl`` and ``eval_test/per_volume.csv`` (from ``sdnet evaluate``). Writes
``<out>.md`` (tables), ``<out>.csv`` (one row per run), ``<out>_curves.png`` (validation Dice per run) and copies
each run's small result files (config, per-volume scores, epoch records) to ``<out>_runs/<run name>/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.stats import ttest_rel

KEYS = ("train.method", "train.schedule", "train.seed", "train.max_steps", "data.labelled_subjects",
        "data.discriminator_masks", "data.orientation", "model.binarisation", "model.discriminator_spectral_norm",
        "loss.adv", "data.augment_flip")


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def read_run(run: Path) -> dict[str, Any]:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    epochs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()
              if '"event": "epoch"' in line]
    with (run / "eval_test" / "per_volume.csv").open() as f:
        rows = list(csv.DictReader(f))
    classes = [k.removeprefix("dice3d_") for k in rows[0] if k.startswith("dice3d_")]

    def per_volume(kind: str) -> dict[tuple[str, str], float]:
        out = {}
        for r in rows:
            values = [float(r[f"{kind}_{c}"]) for c in classes if r[f"{kind}_{c}"] not in ("", "nan")]
            out[(r["subject"], r["phase"])] = float(np.mean(values)) if values else math.nan
        return out

    def class_means(kind: str) -> list[float]:
        means = []
        for c in classes:
            values = [float(r[f"{kind}_{c}"]) for r in rows if r[f"{kind}_{c}"] not in ("", "nan")]
            means.append(float(np.mean(values)) if values else math.nan)
        return means

    return {"path": run, "config": cfg, "epochs": epochs, "classes": classes,
            "dice_3d": class_means("dice3d"), "dice_slice": class_means("dice_slice"),
            "vol_3d": per_volume("dice3d"), "vol_slice": per_volume("dice_slice")}


def _mean(d: dict[Any, float]) -> float:
    v = [x for x in d.values() if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="+", metavar="VARIANT=RUN[,RUN...]")
    parser.add_argument("--out", type=Path, required=True, help="output path without extension")
    parser.add_argument("--reference", help="variant the others are t-tested against (paired by seed and volume)")
    parser.add_argument("--title", default="Probe runs")
    parser.add_argument("--note", default="", help="a paragraph under the title (commands, commits)")
    args = parser.parse_args()
    variants: dict[str, list[dict[str, Any]]] = {}
    for item in args.variants:
        name, _, runs = item.partition("=")
        variants[name] = [read_run(Path(r)) for r in runs.split(",") if r]
    classes = next(iter(variants.values()))[0]["classes"]
    lines = [f"# {args.title}", "", args.note, "", "## Runs", "",
             "s/it: training wall time per iteration, validation included (``elapsed_s`` of the last epoch record "
             "over its step).", "",
             "| variant | run | " + " | ".join(k.split(".")[-1] for k in KEYS) + " | steps | s/it | best val (epoch) | "
             + " | ".join(f"{c}" for c in classes) + " | 3D mean | per-slice mean |",
             "|" + "---|" * (len(KEYS) + 8 + len(classes))]
    csv_rows = []
    for name, runs in variants.items():
        for r in runs:
            cfg, ep = r["config"], r["epochs"]
            best = max(ep, key=lambda e: e["val_dice"]) if ep else {"val_dice": math.nan, "epoch": -1}
            steps = ep[-1]["step"] if ep else 0
            seconds = ep[-1]["elapsed_s"] / steps if steps else math.nan
            settings = [str(_get(cfg, k)) for k in KEYS]
            m3, ms = _mean(r["vol_3d"]), _mean(r["vol_slice"])
            lines.append(f"| {name} | {r['path'].name} | " + " | ".join(settings) + f" | {steps} | {seconds:.2f} | "
                         f"{best['val_dice']:.3f} ({best['epoch']}) | "
                         + " | ".join(f"{d:.3f}" for d in r["dice_3d"]) + f" | **{m3:.3f}** | {ms:.3f} |")
            csv_rows.append([name, r["path"].name, *settings, steps, seconds, best["val_dice"], *r["dice_3d"], m3, ms])
    lines += ["", "## Variants pooled over seeds", "",
              "Mean over the runs (seeds) of the per-volume class-average test Dice; *p*: paired t-test "
              "(`scipy.stats.ttest_rel`) against the reference over (seed, volume) pairs — runs are paired by "
              "seed, so only seeds both variants have count.", "",
              "| variant | seeds | 3D Dice | " + " | ".join(f"{c} 3D" for c in classes)
              + " | per-slice Dice | Δ 3D vs reference | p | pairs |", "|" + "---|" * (7 + len(classes))]
    ref = variants.get(args.reference or "", [])
    ref_by_seed = {_get(r["config"], "train.seed"): r for r in ref}
    for name, runs in variants.items():
        m3 = float(np.mean([_mean(r["vol_3d"]) for r in runs]))
        ms = float(np.mean([_mean(r["vol_slice"]) for r in runs]))
        per_class = np.nanmean(np.array([r["dice_3d"] for r in runs]), axis=0)
        delta, p, pairs = "", "", ""
        if ref and name != args.reference:
            a, b = [], []
            for r in runs:
                other = ref_by_seed.get(_get(r["config"], "train.seed"))
                if other is None:
                    continue
                for key, value in r["vol_3d"].items():
                    if key in other["vol_3d"] and math.isfinite(value) and math.isfinite(other["vol_3d"][key]):
                        a.append(value)
                        b.append(other["vol_3d"][key])
            if len(a) > 1:
                delta = f"{np.mean(a) - np.mean(b):+.3f}"
                p = f"{ttest_rel(a, b).pvalue:.2g}"
                pairs = str(len(a))
        lines.append(f"| {name} | {len(runs)} | **{m3:.3f}** | " + " | ".join(f"{v:.3f}" for v in per_class)
                     + f" | {ms:.3f} | {delta} | {p} | {pairs} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    md = args.out.with_suffix(".md")
    md.write_text("\n".join(lines) + f"\n\nValidation curves: ![curves]({args.out.name}_curves.png)\n")
    with args.out.with_suffix(".csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "run", *KEYS, "steps", "seconds_per_iteration", "best_val",
                    *[f"{c}_3d" for c in classes], "mean_3d", "mean_slice"])
        w.writerows(csv_rows)
    _plot(variants, args.out.with_name(args.out.name + "_curves.png"))
    runs_dir = args.out.with_name(args.out.name + "_runs")
    for runs in variants.values():
        for r in runs:
            dest = runs_dir / r["path"].name
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(r["path"] / "config.yaml", dest / "config.yaml")
            shutil.copy(r["path"] / "eval_test" / "per_volume.csv", dest / "per_volume.csv")
            (dest / "epochs.jsonl").write_text("".join(json.dumps(e) + "\n" for e in r["epochs"]))
    print(md.read_text())


def _plot(variants: dict[str, list[dict[str, Any]]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    for k, key in enumerate(("val_dice", "val_dice_RV")):
        ax = fig.add_subplot(1, 2, k + 1)
        for i, (name, runs) in enumerate(variants.items()):
            for j, r in enumerate(runs):
                ax.plot([e["step"] for e in r["epochs"]], [e.get(key, math.nan) for e in r["epochs"]],
                        color=f"C{i % 10}", alpha=0.85, lw=1.2, label=name if j == 0 else None)
        ax.set_xlabel("iteration")
        ax.set_ylabel("validation 3D Dice" + (" (RV)" if key.endswith("RV") else " (mean)"))
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
