"""Readers for real cardiac MR datasets: the ACDC challenge layout, the SSL4MIS HDF5 release, nnU-Net raw folders,
MM-WHS; one module per format (:mod:`.acdc`, :mod:`.ssl4mis`, :mod:`.nnunet`, :mod:`.mmwhs`, shared helpers in
:mod:`.common`) and the registry :data:`READERS` (:mod:`.registry`) that maps each ``data.format`` to its reader.

Each reader returns ``(DatasetInfo, list[Volume])`` like :func:`sdnet.data.volumes.read_phantom`: images slice-first
(S, H, W) float32 raw intensities in the orientation convention of :mod:`sdnet.data.orientation` (NIfTI readers
reorient with the file's affine, the SSL4MIS reader transposes the release's slices back to the NIfTI order; a
``reorient=False`` / ``orientation="legacy"`` argument keeps the voxel order of releases before that), labels (S, H,
W) int64 in the dataset's own label values (None for an unlabelled frame), volumes sorted by (subject id, phase).
Every problem with the data raises :class:`~sdnet.errors.DataError` with a message that starts with the offending
file's (or folder's) path.
"""

from __future__ import annotations

from sdnet.data.readers.acdc import ACDC_LABELS, read_acdc
from sdnet.data.readers.mmwhs import MMWHS_LABELS, read_mmwhs
from sdnet.data.readers.nnunet import read_nnunet
from sdnet.data.readers.registry import READERS, FormatReader, ReadVolumes, reader_for
from sdnet.data.readers.ssl4mis import read_ssl4mis, ssl4mis_split_lists

__all__ = [
    "ACDC_LABELS",
    "MMWHS_LABELS",
    "READERS",
    "FormatReader",
    "ReadVolumes",
    "read_acdc",
    "read_mmwhs",
    "read_nnunet",
    "read_ssl4mis",
    "reader_for",
    "ssl4mis_split_lists",
]
