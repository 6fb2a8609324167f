"""Quality check: validation Dice after a fixed number of iterations, eager baseline vs library iteration.

Both versions start from the same weights (same seed), draw the same batches from the same streams of the same
phantom split and run the same number of iterations; only the iteration differs (see :mod:`benchmarks.eager`).
The acceptance criterion is "not worse": library Dice ≥ eager Dice − ``tolerance``. With ``precision="bf16"`` the
library trains in mixed precision (``train.precision=bf16``) against the float32 eager baseline: the check that
mixed precision keeps accuracy.

Setup: ``configs/phantom_demo.yaml`` (64 px crop, U-Net 16, 4 labelled subjects) on a phantom written to a temporary
folder (24 subjects, 96 px, as the demo's but fewer subjects); ``--quick`` uses a tiny phantom and a few steps.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.eager import EagerSDNet
from benchmarks.report import QualityResult
from benchmarks.setups import REPO_ROOT, IterationBatches, sdnet_model
from sdnet.config import RunConfig, apply_overrides, load_config
from sdnet.data.phantom import PhantomConfig, write_phantom
from sdnet.training import Trainer

DEMO_CONFIG = REPO_ROOT / "configs" / "phantom_demo.yaml"
DEFAULT_TOLERANCE = 0.02


def quality_config(root: Path, *, steps: int, seed: int, threads: int, quick: bool) -> RunConfig:
    """The phantom demo's config, run for exactly ``steps`` iterations without time budget or epochs' end."""
    overrides = [f"data.root={root}", f"train.max_steps={steps}", "train.max_minutes=0", f"train.seed={seed}",
                 f"train.num_threads={threads}", f"train.steps_per_epoch={steps}"]
    if quick:
        overrides += ["model.image_size=32", "model.unet_filters=4", "model.segmentor_filters=8",
                      "model.discriminator_filters=4", "data.labelled_subjects=2", "data.val_fraction=0.25",
                      "data.test_fraction=0.25"]
    return load_config(DEMO_CONFIG, overrides)


def run_quality(*, steps: int, seeds: list[int], threads: int, quick: bool = False,
                tolerance: float = DEFAULT_TOLERANCE, precision: str = "fp32") -> QualityResult:
    """Train the eager and the library iteration ``steps`` iterations per seed; return both validation Dice.

    ``precision`` is the library's ``train.precision`` (the eager baseline always trains in float32)."""
    start = time.perf_counter()
    phantom = (PhantomConfig(n_subjects=8, image_size=32, n_slices=3, n_phases=3, seed=0) if quick
               else PhantomConfig(n_subjects=24, image_size=96, seed=0))
    dice_eager: list[float] = []
    dice_library: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "phantom"
        write_phantom(root, phantom)
        for seed in seeds:
            config = quality_config(root, steps=steps, seed=seed, threads=threads, quick=quick)
            library_config = apply_overrides(config, [f"train.precision={precision}"])
            library = Trainer(library_config, Path(tmp) / f"library{seed}")
            for _ in range(steps):
                library.train_iteration()
            dice_library.append(library.validate())
            # same seed: the same initial weights and, after construction, the same global RNG state
            baseline = Trainer(config, Path(tmp) / f"eager{seed}", data=library.data)
            eager = EagerSDNet.create(sdnet_model(baseline), baseline.discriminator, config)
            batches = IterationBatches(baseline)
            for step in range(steps):
                eager.iteration(batches.batch(step))
            dice_eager.append(baseline.validate())
    setup = (f"configs/phantom_demo.yaml on a {phantom.n_subjects}-subject {phantom.image_size}-px phantom "
             f"(model {config.model.image_size} px, U-Net {config.model.unet_filters})")
    return QualityResult(steps=steps, seeds=list(seeds), dice_eager=dice_eager, dice_library=dice_library,
                         tolerance=tolerance, wall_s=time.perf_counter() - start, setup=setup,
                         library_precision=precision)
