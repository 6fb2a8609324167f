"""Synthetic cardiac phantom: short-axis cine stacks of a 3D heart with known anatomy, rendered as MR and as CT.

The phantom is the package's built-in dataset (demo, tests) and the ground truth for disentanglement studies: the
*same* tissue maps are rendered in several modalities with known, per-subject rendering parameters, so anatomy and
imaging factors are separable by construction.

Geometry lives in normalised image coordinates (``x`` to the right, ``y`` downwards, both in [-1, 1] across the field
of view; the image centre is 0). Each subject has

* a body (ellipse) with subcutaneous fat, a chest-wall muscle layer with ribs and a sternum, both lungs with
  pulmonary vessels, a mediastinum (fat), the spine (vertebral body: cortical bone around marrow; posterior arch,
  spinal canal), paraspinal muscles, the descending aorta next to the spine, and the liver in the basal slices;
* a heart: LV blood pool with two papillary muscles (labelled LV, as in ACDC), LV myocardium, an RV crescent on the
  septal side (thin RV wall rendered but not labelled), epicardial fat around it;
* ``n_slices`` slices from base (slice 0) to apex (slice S-1): LV/RV radii shrink towards the apex, the RV vanishes
  before the apex, the liver only appears in the basal slices;
* ``n_phases`` frames from ED (phase 0) to ES (phase P-1): the LV cavity area shrinks by the subject's ejection
  fraction, the myocardium thickens (its area is conserved), the RV shrinks.

Images are rendered from tissue fractions computed on a 2x supersampled grid (anti-aliased edges); labels are the
geometry sampled at pixel centres. Everything is vectorised numpy; a subject is a pure function of
``(config.seed, index)`` and the rendering settings, not of ``n_subjects``.

Modalities (:data:`MODALITY_RENDERERS`): ``MR`` (bSSFP-like, arbitrary units ~0-1000, bias field, Rician noise),
``CT`` (contrast-enhanced, Hounsfield units, additive Gaussian noise), ``BOLD`` (``MR`` with a subtle, local change of
the myocardial intensity, mimicking cine vs CP-BOLD).

Sub-modules, each importing only from the ones listed before it:

* :mod:`~sdnet.data.phantom.datatypes`: :data:`LABELS`, :data:`TISSUES`, :class:`PhantomSubject`,
  :class:`TissueMaps` and the :data:`RngFactory` / :data:`Renderer` signatures;
* :mod:`~sdnet.data.phantom.anatomy`: anatomy sampling and the heart / static-structure masks;
* :mod:`~sdnet.data.phantom.render`: the modality renderers, :data:`MODALITY_RENDERERS`;
* :mod:`~sdnet.data.phantom.config`: :class:`PhantomConfig` (validated against :data:`MODALITY_RENDERERS`);
* :mod:`~sdnet.data.phantom.tissues`: :func:`render_tissue_maps` and the per-subject random streams;
* :mod:`~sdnet.data.phantom.subjects`: :func:`render_subject`, :func:`generate_phantom`, :func:`write_phantom`,
  :func:`phantom_matches`.
"""

from __future__ import annotations

from sdnet.data.phantom.config import PhantomConfig
from sdnet.data.phantom.datatypes import LABELS, TISSUES, PhantomSubject, Renderer, RngFactory, TissueMaps
from sdnet.data.phantom.render import MODALITY_RENDERERS
from sdnet.data.phantom.subjects import generate_phantom, phantom_matches, render_subject, write_phantom
from sdnet.data.phantom.tissues import render_tissue_maps

__all__ = [
    "LABELS",
    "MODALITY_RENDERERS",
    "TISSUES",
    "PhantomConfig",
    "PhantomSubject",
    "Renderer",
    "RngFactory",
    "TissueMaps",
    "generate_phantom",
    "phantom_matches",
    "render_subject",
    "render_tissue_maps",
    "write_phantom",
]
