"""Validation curves of a study's runs, and a copy of each finished run's small result files.

    python experiments/study_curves.py STUDY_DIR --out docs/results/acdc_fewlabel_study

Writes ``<out>_curves.png`` (validation 3D Dice and its RV part against iterations, one panel per label amount, one
colour per method, one faint line per seed and its trailing mean over 5 validations), ``<out>_flatness.md`` (has the
curve flattened: the mean validation Dice of the last third of the iterations against the third before it; the test
Dice at each snapshot budget) and copies ``result.json`` (and ``result_s<N>.json``), ``config.yaml`` and the epoch
records of ``log.jsonl`` of every run with a study result to ``<out>_runs/<method>/<label>/<run>/``, and the study's
``study.json`` to ``<out>_runs/``, so the numbers of the table stay in the repository when the study folder
(checkpoints) does not: ``sdnet experiment table <out>_runs`` remakes the table from the committed files.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
from pathlib import Path
from typing import Any


def runs(study: Path) -> list[tuple[str, str, Path, list[dict[str, Any]]]]:
    """(method, label, run folder, epoch records) of every finished run: from a study folder (``log.jsonl``) or
    from a committed copy made by this script (``epochs.jsonl``)."""
    out = []
    for result in sorted(study.glob("*/*/*/result.json")):
        run = result.parent
        try:
            data = json.loads(result.read_text())
        except json.JSONDecodeError:
            continue
        if data.get("schema", "").startswith("sdnet.study.run"):
            log = run / "log.jsonl" if (run / "log.jsonl").exists() else run / "epochs.jsonl"
            epochs = [json.loads(line) for line in log.read_text().splitlines() if '"event": "epoch"' in line]
            out.append((run.parent.parent.name, run.parent.name, run, epochs))
    return out


def smoothed(values: list[float], width: int) -> list[float]:
    """Trailing mean over the last ``width`` validations (fewer at the start)."""
    return [sum(values[max(0, i - width + 1):i + 1]) / (i + 1 - max(0, i - width + 1)) for i in range(len(values))]


def flatness(found: list[tuple[str, str, Path, list[dict[str, Any]]]]) -> str:
    """Per method and label: the mean validation Dice over the last third of the iterations against the third
    before it (averaged over the seeds), and where the best validation fell: a Markdown table."""
    lines = ["| method | labelled | runs | iterations | val Dice, middle third | last third | change | best-val "
             "iteration (per run) |", "|---|---|---|---|---|---|---|---|"]
    cells = sorted({(m, lab) for m, lab, _, _ in found})
    for method, label in cells:
        curves = [e for m, lab, _, e in found if (m, lab) == (method, label) and e]
        middle, last, best = [], [], []
        for epochs in curves:
            steps = epochs[-1]["step"]
            third = steps / 3
            window = [e["val_dice"] for e in epochs if steps - 2 * third < e["step"] <= steps - third]
            if not window:
                continue  # too few validations to compare thirds
            middle.append(statistics.mean(window))
            last.append(statistics.mean(e["val_dice"] for e in epochs if e["step"] > steps - third))
            best.append(max(epochs, key=lambda e: e["val_dice"])["step"])
        if not middle:
            continue
        m, lst = statistics.mean(middle), statistics.mean(last)
        lines.append(f"| {method} | {label[1:]} | {len(curves)} | {curves[0][-1]['step']} | {m:.3f} | {lst:.3f} | "
                     f"{lst - m:+.3f} | {', '.join(str(b) for b in best)} |")
    return "\n".join(lines) + "\n"


def budgets(found: list[tuple[str, str, Path, list[dict[str, Any]]]]) -> str:
    """Per method and label: the mean test 3D Dice (over seeds) of the best-validation checkpoint at each budget the
    runs have — their snapshots (``result_s<N>.json``, ``train.snapshot_steps``) and the end (``result.json``) — as
    a Markdown table; empty when no run has snapshots."""
    scores: dict[tuple[str, str], dict[int, list[float]]] = {}
    for method, label, run, _ in found:
        seen: set[int] = set()
        for path in sorted(run.glob("result*.json")):  # result.json first: a snapshot at the end is the same
            data = json.loads(path.read_text())
            mean = (data.get("test") or {}).get("mean_dice_3d")
            if mean is not None and int(data["steps"]) not in seen:
                seen.add(int(data["steps"]))
                scores.setdefault((method, label), {}).setdefault(int(data["steps"]), []).append(float(mean))
    steps = sorted({n for cell in scores.values() for n in cell})
    if not any(len(cell) > 1 for cell in scores.values()):
        return ""
    lines = ["| method | labelled | " + " | ".join(f"{n} it." for n in steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    for (method, label), cell in sorted(scores.items()):
        values = [f"{statistics.mean(cell[n]):.3f} ({len(cell[n])})" if n in cell else "" for n in steps]
        lines.append(f"| {method} | {label[1:]} | " + " | ".join(values) + " |")
    return ("\nTest 3D Dice of the best-validation checkpoint at each budget (mean over the runs, their number in "
            "brackets; the budgets below the runs' end are their snapshots):\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-copy", action="store_true", help="only the figure and the flatness table (for a "
                        "committed copy made earlier)")
    args = parser.parse_args()
    found = runs(args.study)
    labels = sorted({label for _, label, _, _ in found}, key=lambda s: int(s[1:]) if s[1:].isdigit() else 0)
    methods = sorted({m for m, _, _, _ in found})
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * max(len(labels), 1), 7.5))
    FigureCanvasAgg(fig)
    for col, label in enumerate(labels):
        for row, key in enumerate(("val_dice", "val_dice_RV")):
            ax = fig.add_subplot(2, max(len(labels), 1), row * len(labels) + col + 1)
            for m_index, method in enumerate(methods):
                first = True
                for m, lab, _, epochs in found:
                    if m != method or lab != label:
                        continue
                    steps = [e["step"] for e in epochs]
                    values = [e.get(key, math.nan) for e in epochs]
                    ax.plot(steps, values, color=f"C{m_index}", lw=0.6, alpha=0.25)
                    ax.plot(steps, smoothed(values, 5), color=f"C{m_index}", lw=1.4, alpha=0.9,
                            label=method if first else None)
                    first = False
            ax.set_ylim(0, 1)
            ax.grid(True, alpha=0.3)
            ax.set_xlabel("iteration")
            ax.set_ylabel("validation 3D Dice" + (" (RV)" if row else " (mean)") + ", mean of last 5")
            ax.set_title(f"{label[1:]} labelled patient(s)", fontsize=10)
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure = args.out.with_name(args.out.name + "_curves.png")
    fig.savefig(figure, dpi=110)
    table = args.out.with_name(args.out.name + "_flatness.md")
    table.write_text("Validation curves: mean validation 3D Dice over the last third of each run's iterations "
                     f"against the third before it, averaged over seeds (`python experiments/study_curves.py "
                     f"{args.study} ...`).\n\n" + flatness(found) + budgets(found))
    print(table.read_text())
    if args.no_copy:
        print(f"{len(found)} finished runs; wrote {figure} and {table}")
        return
    dest_root = args.out.with_name(args.out.name + "_runs")
    for method, label, run, epochs in found:
        dest = dest_root / method / label / run.name
        dest.mkdir(parents=True, exist_ok=True)
        for result in run.glob("result*.json"):  # result.json and the snapshots' result_s<N>.json
            shutil.copy(result, dest / result.name)
        shutil.copy(run / "config.yaml", dest / "config.yaml")
        (dest / "epochs.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    if (args.study / "study.json").exists():
        dest_root.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.study / "study.json", dest_root / "study.json")
    print(f"{len(found)} finished runs; wrote {figure} and {dest_root}/")


if __name__ == "__main__":
    main()
