"""Paired t-tests between runs of a study folder on the per-volume average test Dice (what the study doc quotes).

    python experiments/paired_tests.py studies/ssl4mis_cpu sdnet/l3:unet/l3 sdnet-noadv/l3:sdnet/l3

Each pair ``A:B`` names two run folders (``<method>/<label>``, fold 0, or a full ``.../fold<k>`` path) of the study;
volumes are paired by (subject, phase); the test is ``scipy.stats.ttest_rel`` of A against B
(:func:`sdnet.analysis.volume.paired_difference`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sdnet.analysis.volume import paired_difference
from sdnet.study import read_result


def per_volume(study: Path, name: str) -> dict[tuple[str, int], float]:
    run = study / name if name.rsplit("/", 1)[-1].startswith("fold") else study / name / "fold0"
    return {(v.subject, v.phase): v.mean_dice("3d") for v in read_result(run).volumes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("pairs", nargs="+", metavar="A:B")
    args = parser.parse_args()
    for pair in args.pairs:
        a, b = pair.split(":")
        x, y = per_volume(args.study, a), per_volume(args.study, b)
        keys = sorted(set(x) & set(y))
        xs, ys = [x[k] for k in keys], [y[k] for k in keys]
        difference, t, p = paired_difference(ys, xs)  # mean of A − B, ttest_rel(A, B)
        print(f"{a} - {b}: {difference:+.3f} ({sum(xs) / len(xs):.3f} vs {sum(ys) / len(ys):.3f}), t = {t:.2f}, "
              f"p = {p:.2g}, {len(keys)} pairs")


if __name__ == "__main__":
    main()
