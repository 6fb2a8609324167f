"""One table over cells of several study folders (e.g. two iteration budgets), each against a reference cell.

    python experiments/cross_table.py --out docs/results/acdc_factorisation_table.md \
        --reference "GAN, 6000 it.=docs/results/acdc_factorisation_long_runs/gan" \
        "SDNet, 6000 it.=docs/results/acdc_factorisation_long_runs/sdnet" \
        "SDNet+ mix, 2000 it.=docs/results/acdc_factorisation_short_runs/sdnetplus-mix"

Each row is ``NAME=PATH`` with PATH a method folder of a study (``<study>/<method>``, holding ``l<N>/fold*/``
run folders with a study ``result.json``), or of its committed copy made by ``experiments/study_curves.py``;
``PATH@N`` takes the runs' snapshots at iteration N (``result_s<N>.json``, ``train.snapshot_steps``). For
every label amount the row gives the number of finished runs (seeds), the mean test 3D Dice per class and its class
average, the per-slice average (the authors' definition), and the difference of the class average against the
reference row's on the same (seed, subject, phase) volumes, with the p-values of ``experiments/paired_tests.py``:
pooled over every (seed, volume) pair, and over the seed-averaged volumes; then the difference in each seed. (The
Dice columns pool all of a row's runs; the differences only the seeds the reference has too.)
Markdown to ``--out`` (and stdout).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from paired_tests import cell_runs, compare, per_volume

from sdnet.study.results import RunResult, finite_mean, is_study_result, result_name


def cell_line(name: str, runs: list[RunResult], reference: list[RunResult] | None) -> str:
    classes = runs[0].class_names
    per_class = [finite_mean([v.dice_3d[c] for r in runs for v in r.volumes]) for c in range(len(classes))]
    avg3d = finite_mean([v.mean_dice("3d") for r in runs for v in r.volumes])
    avgsl = finite_mean([v.mean_dice("slice") for r in runs for v in r.volumes])
    text = (f"| {name} | {len(runs)} | {' / '.join(f'{d:.3f}' for d in per_class)} | {avg3d:.3f} | "
            f"{avgsl:.3f} |")
    if reference is None:
        return text + " | | |"
    parts = []
    try:
        for metric in ("3d", "slice"):
            c = compare(per_volume(runs, metric), per_volume(reference, metric))
            parts.append(f"{c.difference:+.3f} (p = {c.p_pooled:.2g}; {c.p_volumes:.2g})")
    except SystemExit:  # fewer than two common (seed, volume) pairs
        return text + " (no common seeds) | | |"
    c3 = compare(per_volume(runs, "3d"), per_volume(reference, "3d"))
    seeds = ", ".join(f"s{s} {d:+.3f}" for s, d in c3.per_seed.items())
    return text + f" {parts[0]} | {parts[1]} | {seeds} |"


def _finished(cell: Path, at: str) -> bool:
    """Whether the cell has a finished run (of the snapshot ``at``, ``@N``, when given)."""
    return any(is_study_result(p) for p in cell.glob(f"fold*/{result_name(int(at[1:]) if at else None)}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rows", nargs="*", metavar="NAME=PATH")
    parser.add_argument("--reference", required=True, metavar="NAME=PATH")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    specs = [args.reference, *args.rows]
    if any("=" not in s for s in specs):
        raise SystemExit("cross_table: every row is NAME=PATH")
    named = []
    for spec in specs:
        name, _, path = spec.partition("=")
        folder, _, step = path.partition("@")
        named.append((name, Path(folder), f"@{step}" if step else ""))
    labels = sorted({p.name for _, folder, _ in named for p in folder.glob("l*") if p.is_dir()},
                    key=lambda k: int(k[1:]) if k[1:].isdigit() else 0)
    ref_name = named[0][0]
    classes: tuple[str, ...] = ()
    for label in labels:
        for _, folder, at in named:
            if not classes and _finished(folder / label, at):
                classes = cell_runs(Path(f"{folder / label}{at}"))[0].class_names
    lines = []
    for label in labels:
        ref_dir, ref_at = named[0][1] / label, named[0][2]
        reference = cell_runs(Path(f"{ref_dir}{ref_at}")) if _finished(ref_dir, ref_at) else None
        lines += [f"### {label[1:]} labelled patient{'s' if label != 'l1' else ''}", "",
                  f"| method | seeds | 3D Dice {' / '.join(classes)} | 3D mean | per-slice mean | 3D − {ref_name} "
                  f"(p pooled; p seed-averaged) | per-slice − {ref_name} | 3D − {ref_name} per seed |",
                  "|---|---|---|---|---|---|---|---|"]
        for k, (name, folder, at) in enumerate(named):
            if not _finished(folder / label, at):
                lines.append(f"| {name} | 0 | (not run yet) | | | | | |")
                continue
            lines.append(cell_line(name, cell_runs(Path(f"{folder / label}{at}")),
                                   None if k == 0 or reference is None else reference))
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
