"""Validation curves of a study's runs, and a copy of each finished run's small result files.

    python experiments/study_curves.py STUDY_DIR --out docs/results/acdc_fewlabel_study

Writes ``<out>_curves.png`` (validation 3D Dice and its RV part against iterations, one panel per label amount, one
colour per method, one line per seed) and copies ``result.json``, ``config.yaml`` and the epoch records of
``log.jsonl`` of every run with a study result to ``<out>_runs/<method>/<label>/<run>/``, so the numbers of the
table stay in the repository when the study folder (checkpoints) does not.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Any


def runs(study: Path) -> list[tuple[str, str, Path, list[dict[str, Any]]]]:
    out = []
    for result in sorted(study.glob("*/*/*/result.json")):
        run = result.parent
        try:
            data = json.loads(result.read_text())
        except json.JSONDecodeError:
            continue
        if data.get("schema", "").startswith("sdnet.study.run"):
            epochs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()
                      if '"event": "epoch"' in line]
            out.append((run.parent.parent.name, run.parent.name, run, epochs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--out", type=Path, required=True)
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
                    ax.plot([e["step"] for e in epochs], [e.get(key, math.nan) for e in epochs],
                            color=f"C{m_index}", lw=1.0, alpha=0.8, label=method if first else None)
                    first = False
            ax.set_ylim(0, 1)
            ax.grid(True, alpha=0.3)
            ax.set_xlabel("iteration")
            ax.set_ylabel("validation 3D Dice" + (" (RV)" if row else " (mean)"))
            ax.set_title(f"{label[1:]} labelled patient(s)", fontsize=10)
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure = args.out.with_name(args.out.name + "_curves.png")
    fig.savefig(figure, dpi=110)
    dest_root = args.out.with_name(args.out.name + "_runs")
    for method, label, run, epochs in found:
        dest = dest_root / method / label / run.name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "result.json", dest / "result.json")
        shutil.copy(run / "config.yaml", dest / "config.yaml")
        (dest / "epochs.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    print(f"{len(found)} finished runs; wrote {figure} and {dest_root}/")


if __name__ == "__main__":
    main()
