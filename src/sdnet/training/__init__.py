"""Training: the per-iteration schedule, optimisers and the loop. Checkpoint files and loading a stored model live
one floor below, in :mod:`sdnet.checkpoint`."""

from sdnet.training.trainer import Trainer, TrainResult

__all__ = ["TrainResult", "Trainer"]
