"""Paired t-tests between cells of study folders on the per-volume average test Dice (what the study docs quote).

    python experiments/paired_tests.py studies/ssl4mis_cpu sdnet/l3:unet/l3 sdnet-noadv/l3:sdnet/l3
    python experiments/paired_tests.py STUDY_A/sdnetplus-mix/l3:STUDY_B/gan/l3 --metric both

Each side of a pair ``A:B`` is a cell ``<method>/<label>`` of the study (every run folder ``fold*`` under it with a
study ``result.json``: one per seed) or one run folder ``.../fold<k>[-seed<s>]``; a side is taken relative to the
optional STUDY folder (the current one when left out) and an absolute path stands for itself, so cells of two studies
(two budgets) can be compared; ``<cell>@N`` takes the runs' snapshots at iteration N (``result_s<N>.json`` of
``train.snapshot_steps``: the best checkpoint as it stood then). Volumes are paired by (seed, subject, phase) on the
seeds both sides have.

Printed per pair and Dice definition: the mean of A and B, their difference and

- ``pooled``: ``scipy.stats.ttest_rel`` over every (seed, volume) pair — what ``sdnet experiment table`` reports;
- ``volumes``: the same test after averaging each volume's Dice over the seeds (one pair per test volume, so a
  volume's seeds are not counted as independent samples);
- ``per seed``: the difference of the means for each seed on its own. Both tests see the variation between test
  volumes only; whether a difference holds across training runs is what the per-seed signs show (with 3 seeds a
  test over seeds has 2 degrees of freedom, so none is printed).
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from sdnet.analysis.volume import paired_difference
from sdnet.study import read_result
from sdnet.study.results import DiceKind, RunResult, is_study_result, result_name

Key = tuple[int, str, int]  # seed, subject, phase


def cell_runs(path: Path) -> list[RunResult]:
    """The study results under ``path``: the run folder itself, or every ``fold*`` run folder of a cell; a path
    ending in ``@N`` reads the runs' snapshots at iteration N (``result_s<N>.json``, ``train.snapshot_steps``)."""
    snapshot = None
    if "@" in path.name:
        name, _, step = path.name.rpartition("@")
        if not step.isdigit():
            raise SystemExit(f"paired_tests: {path}: a snapshot is @<iteration>, e.g. gan/l3@2000")
        path, snapshot = path.with_name(name), int(step)
    file = result_name(snapshot)
    if is_study_result(path / file):
        return [read_result(path, snapshot=snapshot)]
    runs = [read_result(p, snapshot=snapshot) for p in sorted(path.glob("fold*")) if is_study_result(p / file)]
    if not runs:
        raise SystemExit(f"paired_tests: no finished run (fold*/{file} with a study result) under {path}")
    return runs


def per_volume(runs: list[RunResult], metric: DiceKind) -> dict[Key, float]:
    return {(r.seed, v.subject, v.phase): v.mean_dice(metric) for r in runs for v in r.volumes}


@dataclass(frozen=True)
class Comparison:
    mean_a: float
    mean_b: float
    difference: float  # mean of A − B over the pooled pairs
    p_pooled: float
    pairs: int
    p_volumes: float
    volumes: int
    per_seed: dict[int, float]


def compare(a: dict[Key, float], b: dict[Key, float]) -> Comparison:
    """Mean of A and B, A − B and both tests (pooled pairs, seed-averaged volumes), per-seed differences."""
    keys = sorted(k for k in a.keys() & b.keys() if math.isfinite(a[k]) and math.isfinite(b[k]))
    if len(keys) < 2:
        raise SystemExit(f"paired_tests: only {len(keys)} common (seed, volume) pairs")
    xs, ys = [a[k] for k in keys], [b[k] for k in keys]
    difference, _, p_pooled = paired_difference(ys, xs)  # mean of A − B, ttest_rel(A, B)
    by_volume: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    by_seed: dict[int, list[float]] = defaultdict(list)
    for k in keys:
        by_volume[k[1:]].append((a[k], b[k]))
        by_seed[k[0]].append(a[k] - b[k])
    va = [sum(p[0] for p in v) / len(v) for v in by_volume.values()]
    vb = [sum(p[1] for p in v) / len(v) for v in by_volume.values()]
    _, _, p_volumes = paired_difference(vb, va)
    return Comparison(mean_a=sum(xs) / len(xs), mean_b=sum(ys) / len(ys), difference=difference, p_pooled=p_pooled,
                      pairs=len(keys), p_volumes=p_volumes, volumes=len(by_volume),
                      per_seed={s: sum(d) / len(d) for s, d in sorted(by_seed.items())})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("items", nargs="+", metavar="[STUDY] A:B", help="an optional study folder, then pairs")
    parser.add_argument("--metric", choices=("3d", "slice", "both"), default="3d",
                        help="3D Dice per volume (default), the authors' per-slice average, or both")
    args = parser.parse_args()
    study = Path(".")
    pairs = args.items
    if ":" not in args.items[0]:
        study, pairs = Path(args.items[0]), args.items[1:]
    metrics: list[DiceKind] = ["3d", "slice"] if args.metric == "both" else [args.metric]
    for pair in pairs:
        if pair.count(":") != 1:
            raise SystemExit(f"paired_tests: {pair!r} is not A:B")
        a_name, b_name = pair.split(":")
        a_runs, b_runs = cell_runs(study / a_name), cell_runs(study / b_name)
        for metric in metrics:
            c = compare(per_volume(a_runs, metric), per_volume(b_runs, metric))
            seeds = ", ".join(f"s{s} {d:+.3f}" for s, d in c.per_seed.items())
            print(f"{a_name} - {b_name} [{metric}]: {c.difference:+.3f} ({c.mean_a:.3f} vs {c.mean_b:.3f}); "
                  f"pooled p = {c.p_pooled:.2g} ({c.pairs} pairs); volumes p = {c.p_volumes:.2g} "
                  f"({c.volumes} seed-averaged); per seed: {seeds}")


if __name__ == "__main__":
    main()
