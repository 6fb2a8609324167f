"""SDNet+'s EMA teacher (``train.plus_teacher`` > 0; our addition, not in the paper).

The issue-24 probes found that SDNet+'s gain comes from its unlabelled rows: segmenting a decoded copy of an
unlabelled image against the model's *own* detached segmentation of the original (docs/results/
acdc_factorisation_study.md). Those targets come from the same network that is being trained, one update earlier.
A mean teacher (Tarvainen & Valpola, NeurIPS 2017) gives steadier targets: an exponential moving average of the
segmentation path's weights,

    θ_teacher ← α θ_teacher + (1 − α) θ_student      after every factor step,

run in eval mode (its BatchNorm running statistics are the student's, copied at each update). With a teacher, the
factor step's unlabelled rows are segmented against the teacher's segmentation of their input images, and λ_acons
asks f_anatomy(x̃) to equal the teacher's anatomy of x_i (:func:`sdnet.training.methods.teacher_targets`). The
labelled rows keep their true masks. Only the segmentation path is averaged — f_anatomy and h, the networks the
factor step updates (:func:`sdnet.training.steps.factor_parameters`); the re-rendering still uses the student's
anatomy and the student's decoder. Validation and the saved model are the student's.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from sdnet.models import SDNet


class AnatomyTeacher(nn.Module):
    """An exponential moving average of SDNet's segmentation path: f_anatomy and the segmentor h.

    Args:
        model: the student; the teacher starts as a copy of its ``anatomy_encoder`` and ``segmentor``.
        decay: α in [0, 1): the weight of the teacher's own weights at each update (0: the teacher is the student
            as of the last update).
    """

    def __init__(self, model: SDNet, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the teacher's EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.anatomy_encoder = copy.deepcopy(model.anatomy_encoder)
        self.segmentor = copy.deepcopy(model.segmentor)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> AnatomyTeacher:
        """The teacher always runs in eval mode (BatchNorm on its running statistics); ``mode`` is ignored."""
        return super().train(False)

    @torch.no_grad()
    def update(self, model: SDNet) -> None:
        """θ_teacher ← α θ_teacher + (1 − α) θ_student for the parameters; the buffers (BatchNorm running
        statistics) are copied from the student."""
        for mine, source in ((self.anatomy_encoder, model.anatomy_encoder), (self.segmentor, model.segmentor)):
            for p_t, p_s in zip(mine.parameters(), source.parameters(), strict=True):
                p_t.lerp_(p_s.detach().to(p_t.dtype), 1.0 - self.decay)
            for b_t, b_s in zip(mine.buffers(), source.buffers(), strict=True):
                b_t.copy_(b_s)

    @torch.no_grad()
    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """The teacher's anatomy and segmentation of ``image``.

        Args:
            image: (B, 1, H, W) float in [-1, 1].

        Returns:
            anatomy (B, C, H, W) float and class indices (B, H, W) int64 (argmax over the classes).
        """
        anatomy: Tensor = self.anatomy_encoder(image)
        logits: Tensor = self.segmentor(anatomy)
        return anatomy, logits.argmax(dim=1)
