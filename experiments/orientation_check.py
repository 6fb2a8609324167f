"""Test Dice of a checkpoint with its test data read in each orientation convention (docs/orientation.md).

    python experiments/orientation_check.py RUN_OR_CHECKPOINT [--data DIR]

``legacy`` reads the SSL4MIS slices as stored (j, i) and NIfTI files in their voxel order; ``canonical`` is issue
15's convention (SSL4MIS slices only transposed); ``ras`` is the convention of sdnet.data.orientation (issue 23: a
half turn from ``canonical`` for SSL4MIS). A model scores well only in the frame it was trained in; the other rows
show what feeding it another frame costs.
"""

from __future__ import annotations

import argparse
import dataclasses

from sdnet.checkpoint import load_model
from sdnet.data.pipeline import prepare_data
from sdnet.data.splits import Split
from sdnet.evaluation import evaluate_volumes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", help="dataset folder, if it moved since training")
    args = parser.parse_args()
    model, config, state = load_model(args.checkpoint)
    print(f"{args.checkpoint}: trained in data.orientation={config.data.orientation}")
    split = Split.from_dict(state["split"])
    for orientation in ("legacy", "canonical", "ras"):
        data_config = dataclasses.replace(config.data, orientation=orientation, root=args.data or config.data.root)
        data = prepare_data(data_config, image_size=config.model.image_size, n_classes=config.model.n_classes,
                            split=split)
        report = evaluate_volumes(model, data.test, class_names=list(state["class_names"]), with_hd95=False)
        means, _ = report.mean_std("3d")
        per_class = " / ".join(f"{m:.3f}" for m in means)
        print(f"test data read as {orientation:9s}: 3D Dice {per_class} -> {report.mean_dice('3d'):.3f} "
              f"({len(data.test)} volumes)")


if __name__ == "__main__":
    main()
