"""Mixed precision (train.precision=bf16): what it computes in bf16, what stays float32, and that its losses track
float32's on the same weights and batch."""

from pathlib import Path

import pytest
import torch

from sdnet.checkpoint import load_checkpoint
from sdnet.config import ConfigError, apply_overrides
from sdnet.losses import dice_loss, kl_divergence, l1_reconstruction
from sdnet.training import Trainer

from ..helpers import tiny_config


def test_unknown_precision_is_a_config_error(tiny_phantom: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.precision"):
        apply_overrides(tiny_config(tiny_phantom), ["train.precision=fp8"])


def test_losses_promote_half_precision_inputs_to_float32() -> None:
    p = torch.rand(2, 3, 8, 8).to(torch.bfloat16)
    assert dice_loss(p, (p > 0.5).to(torch.bfloat16)).dtype == torch.float32
    assert kl_divergence(torch.zeros(2, 4, dtype=torch.bfloat16), torch.zeros(2, 4, dtype=torch.bfloat16)).dtype \
        == torch.float32
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    assert l1_reconstruction(x, x).dtype == torch.float64  # float64 is left alone


def _pair(root: Path, tmp_path: Path, *extra: str) -> dict[str, tuple[Trainer, list[dict[str, float]]]]:
    """fp32 and bf16 trainers from the same seed (same weights, same batches), 3 iterations each."""
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = apply_overrides(tiny_config(root), [f"train.precision={precision}", *extra])
        trainer = Trainer(cfg, tmp_path / f"{precision}{len(extra)}")
        runs[precision] = (trainer, [trainer.train_iteration() for _ in range(3)])
    return runs


def test_bf16_loss_terms_track_fp32_on_the_same_batch(tiny_phantom: Path, tmp_path: Path) -> None:
    # Soft anatomy (binarisation=none): at initialisation the softmax is nearly uniform, so with binarisation bf16
    # rounding flips many argmax decisions and s itself differs; without it every term is a smooth function of
    # the same inputs. bf16 keeps ~3 significant digits; the tolerances allow for that through ~20 layers.
    runs = _pair(tiny_phantom, tmp_path, "model.binarisation=none", "loss.ce=1")
    fp32, bf16 = runs["fp32"][1][0], runs["bf16"][1][0]
    for term, tolerance in (("sup_segm", 0.01), ("sup_kl", 0.03), ("sup_rec", 0.08), ("sup_ce", 0.03),
                            ("sup_total", 0.02), ("disc", 0.02)):
        assert abs(fp32[term] - bf16[term]) <= tolerance * abs(fp32[term]), (term, fp32[term], bf16[term])
    assert fp32["sup_rec"] != bf16["sup_rec"]  # autocast did run: bf16 rounding shows in the terms


def test_bf16_training_keeps_float32_state(tiny_phantom: Path, tmp_path: Path) -> None:
    runs = _pair(tiny_phantom, tmp_path)
    fp32_trainer, fp32_logs = runs["fp32"]
    bf16_trainer, bf16_logs = runs["bf16"]
    assert all(torch.isfinite(torch.tensor(list(log.values()))).all() for log in bf16_logs)
    assert abs(fp32_logs[0]["sup_total"] - bf16_logs[0]["sup_total"]) <= 0.02 * fp32_logs[0]["sup_total"]
    # Parameters, the fake pool and the checkpoint stay float32.
    assert all(p.dtype == torch.float32 for p in bf16_trainer.model.parameters())
    assert bf16_trainer.pool.masks is not None and bf16_trainer.pool.masks.dtype == torch.float32
    bf16_trainer.save("last.pt")
    state = load_checkpoint(bf16_trainer.run_dir / "last.pt")
    assert all(v.dtype in (torch.float32, torch.int64) for v in state["model"].values())
    assert state["config"]["train"]["precision"] == "bf16"
    # Validation runs in float32 whatever the training precision: identical weights give identical scores.
    bf16_trainer.model.load_state_dict(fp32_trainer.model.state_dict())
    assert bf16_trainer.validate_per_class() == fp32_trainer.validate_per_class()
