"""The benchmark suite's correctness (never its speed: no timing assertions here, DESIGN.md §9).

* the eager baseline (``benchmarks/eager.py``) and the library iteration compute the same losses on a fixed batch
  from the same weights — exactly for the supervised step; within stated tolerances where the library
  legitimately differs (reused pre-update anatomy and predictions, BatchNorm batch statistics);
* :class:`~sdnet.training.optim.KerasAdam` with the fused / foreach kernels updates parameters as the
  per-parameter loop did;
* ``python -m benchmarks --quick`` runs and prints the table.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.cli import main as bench_main
from benchmarks.eager import EagerSDNet
from benchmarks.setups import IterationBatch, IterationBatches, build_trainer, run_config, sdnet_model
from sdnet.config import ModelConfig, OptimConfig
from sdnet.models import build_sdnet, fold_batch_norm
from sdnet.training.optim import AdamImplementation, KerasAdam

ROOT = Path(__file__).resolve().parents[1]  # `benchmarks` is importable from the root (pytest pythonpath ".")

SUPERVISED = ("sup_segm", "sup_rec", "sup_kl", "sup_total")
UNSUPERVISED = ("unsup_rec", "unsup_kl", "unsup_adv", "unsup_total")
DIFFERING = ("sup_zrec", "unsup_zrec", "disc")


def _first_iteration(tmp_path: Path, *extra: str) -> tuple[dict[str, float], dict[str, float]]:
    """Losses of the first iteration of the library and of the eager baseline: same weights, batch and RNG.

    The eager version's fake masks are predicted from the unlabelled batch (not a separate batch), so that the
    discriminator terms are comparable.
    """
    config = run_config("paper", quick=True, threads=1, extra=extra)
    trainer = build_trainer(config, tmp_path / "run")
    eager = EagerSDNet.create(sdnet_model(trainer), trainer.discriminator, config, copy_modules=True)
    b = IterationBatches(trainer).batch(0)
    batch = IterationBatch(images=b.images, masks=b.masks, unlabelled=b.unlabelled, real_masks=b.real_masks,
                           discriminator_images=b.unlabelled)
    torch.manual_seed(5)
    eager_logs = eager.iteration(batch)
    torch.manual_seed(5)
    library_logs = trainer.train_iteration()
    assert set(eager_logs) == set(library_logs)
    assert all(math.isfinite(v) for v in [*eager_logs.values(), *library_logs.values()])
    return library_logs, eager_logs


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def test_supervised_step_identical_and_documented_tolerances(tmp_path: Path) -> None:
    library, eager = _first_iteration(tmp_path)
    for key in SUPERVISED:  # same weights, same batch, same RNG, same code path: identical
        assert abs(library[key] - eager[key]) <= 1e-6, key
    # The unsupervised step follows one z-regressor update whose input anatomy differs between the versions; one
    # Adam step moves each decoder / modality-encoder weight by at most ~lr (1e-4), hence a small difference.
    for key in UNSUPERVISED:
        assert _relative(library[key], eager[key]) <= 2e-2, key
    # z-reconstruction and discriminator terms legitimately differ: the library uses the pre-update anatomy and
    # predictions with BatchNorm batch statistics, the eager (Keras) version post-update ones with running
    # statistics, which at initialisation (momentum 0.01) are still ~ (0, 1). Both are O(1) L1 / LSGAN values.
    for key in DIFFERING:
        assert _relative(library[key], eager[key]) <= 0.5, key


def test_all_terms_agree_once_the_two_differences_are_switched_off(tmp_path: Path) -> None:
    """lr 1e-12 removes the pre- vs post-update difference; BatchNorm momentum 1 makes the running statistics the
    last batch's; a soft anatomy keeps the comparison continuous (argmax would turn 1e-4 into pixel flips). What
    remains is PyTorch's unbiased running variance vs the biased batch variance: a relative factor n/(n−1), n the
    smallest BatchNorm sample count of the anatomy encoder (batch · bottleneck pixels)."""
    size, depth = 64, 2
    library, eager = _first_iteration(
        tmp_path, "optim.lr=1e-12", "model.bn_momentum=1.0", f"model.image_size={size}", f"model.unet_depth={depth}",
        "model.binarisation=none")
    n = 4 * (size // 2**depth) ** 2
    for key in library:
        assert _relative(library[key], eager[key]) <= 3.0 / n, (key, library[key], eager[key])


def _train_steps(implementation: AdamImplementation, steps: int = 6) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = build_sdnet(ModelConfig(image_size=32, anatomy_channels=4, n_z=4, unet_filters=4, unet_depth=2,
                                    modality_filters=4, modality_layers=3, modality_hidden=8, decoder_blocks=2,
                                    segmentor_filters=8))
    optimiser = KerasAdam(model.parameters(), OptimConfig(lr=1e-3, decay=5e-2), implementation=implementation)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        optimiser.zero_grad()
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        optimiser.step()
    assert optimiser.updates == steps
    assert optimiser.lr == pytest.approx(1e-3 / (1 + 5e-2 * steps))
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("implementation", ["auto", "fused", "foreach"])
def test_keras_adam_kernels_match_the_per_parameter_loop(implementation: AdamImplementation) -> None:
    reference = _train_steps("loop")
    for a, b in zip(reference, _train_steps(implementation), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), float((a - b).abs().max())


def test_keras_adam_uses_the_fused_kernel_on_cpu_and_loads_any_checkpoint() -> None:
    params = [torch.nn.Parameter(torch.randn(3, 3))]
    fused = KerasAdam(params, OptimConfig())
    assert fused.implementation in ("fused", "foreach")
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    if "cpu" in _get_fused_kernels_supported_devices():  # torch >= 2.4
        assert fused.implementation == "fused"
    # a checkpoint written by the per-parameter loop (the library before) keeps this optimiser's kernel
    loop = KerasAdam(params, OptimConfig(), implementation="loop")
    params[0].grad = torch.ones(3, 3)
    loop.step()
    fused.load_state_dict(loop.state_dict())
    assert fused.updates == 1
    assert fused.optimizer.param_groups[0]["fused"] is (fused.implementation == "fused")
    fused.step()  # the loaded state is usable by the fused kernel
    assert fused.updates == 2


def test_folded_batch_norm_computes_the_same_segmentation() -> None:
    torch.manual_seed(0)
    model = build_sdnet(ModelConfig(image_size=32, unet_filters=4, unet_depth=2, segmentor_filters=8)).eval()
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = model.segment(x).probabilities
        folded = fold_batch_norm(model).segment(x).probabilities
    assert torch.allclose(expected, folded, atol=1e-5)


def test_quick_training_section_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "performance.md"
    status = bench_main(["--quick", "--in-process", "--threads", "1", "--sections", "train", "--configs", "cpu",
                         "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0
    assert "| cpu | eager |" in printed and "| cpu | library |" in printed and "speed-up vs eager" in printed
    assert "library / eager" in printed
    assert "alternated in one process" in printed and "per-pair range" in printed  # the interleaved case
    text = out.read_text()
    assert text.startswith("# Performance") and "python -m benchmarks --quick" in text


@pytest.mark.slow
def test_quick_benchmark_end_to_end(tmp_path: Path) -> None:
    """Every section, each case in its own process, at tiny sizes (a minute or more: many interpreter starts)."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--threads", "1", "--sections",
         "reference,train,encoder,inference,levers,quality", "--max-minutes", "1000", "--out",
         str(tmp_path / "perf.md")],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for heading in ("Machine reference", "Training iteration", "Anatomy encoder", "Inference", "Validation Dice",
                    "Acceptance summary"):
        assert heading in proc.stdout, heading
