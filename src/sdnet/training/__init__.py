"""Training: the per-iteration schedule, optimisers, checkpoints and the loop."""

from sdnet.training.checkpoint import load_checkpoint, save_checkpoint
from sdnet.training.trainer import Trainer, TrainResult, load_model

__all__ = ["TrainResult", "Trainer", "load_checkpoint", "load_model", "save_checkpoint"]
