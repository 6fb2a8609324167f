"""The one registry of dataset readers: each ``data.format`` of :class:`~sdnet.config.DataConfig` and its reader.

:func:`sdnet.data.pipeline.read_volumes` picks the reader here; a new layout is a reader module and one entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sdnet.config import DataConfig
from sdnet.data.orientation import CONVENTION, LEGACY
from sdnet.data.readers.acdc import read_acdc
from sdnet.data.readers.mmwhs import read_mmwhs
from sdnet.data.readers.nnunet import read_nnunet
from sdnet.data.readers.ssl4mis import read_ssl4mis
from sdnet.data.volumes import DatasetInfo, Volume, read_phantom
from sdnet.errors import DataError

ReadVolumes = Callable[[DataConfig, bool], tuple[DatasetInfo, list[Volume]]]
"""``read(config, reorient)``: every volume of ``config.root``, in the orientation convention when ``reorient`` (else
in the files' voxel order: ``data.orientation=legacy``)."""


@dataclass(frozen=True)
class FormatReader:
    """How one ``data.format`` is read.

    Attributes:
        read: reads the dataset named by a :class:`~sdnet.config.DataConfig` (see :data:`ReadVolumes`).
        multimodal: the layout holds several modalities, so ``data.modality`` may name more than one (``MR+CT``).
    """

    read: ReadVolumes
    multimodal: bool = False


def _phantom(config: DataConfig, reorient: bool) -> tuple[DatasetInfo, list[Volume]]:
    return read_phantom(config.root, modality=config.modalities, labelled_phases=config.labelled_phases,
                        reorient=reorient)


def _acdc(config: DataConfig, reorient: bool) -> tuple[DatasetInfo, list[Volume]]:
    return read_acdc(config.root, include_unlabelled=config.use_unlabelled,
                     unlabelled_frames=config.unlabelled_frames, reorient=reorient)


def _ssl4mis(config: DataConfig, reorient: bool) -> tuple[DatasetInfo, list[Volume]]:
    return read_ssl4mis(config.root, orientation=CONVENTION if reorient else LEGACY)


def _nnunet(config: DataConfig, reorient: bool) -> tuple[DatasetInfo, list[Volume]]:
    return read_nnunet(config.root, subject_pattern=config.subject_pattern or None, reorient=reorient)


def _mmwhs(config: DataConfig, reorient: bool) -> tuple[DatasetInfo, list[Volume]]:
    return read_mmwhs(config.root, modalities=config.modalities, reorient=reorient)


#: ``data.format`` -> its reader, in the order of the values allowed by :class:`~sdnet.config.DataConfig`.
READERS: Mapping[str, FormatReader] = MappingProxyType({
    "phantom": FormatReader(_phantom, multimodal=True),
    "acdc": FormatReader(_acdc),
    "ssl4mis": FormatReader(_ssl4mis),
    "nnunet": FormatReader(_nnunet),
    "mmwhs": FormatReader(_mmwhs, multimodal=True),
})


def reader_for(name: str) -> FormatReader:
    """The reader of ``data.format`` ``name``.

    Raises:
        DataError: no reader is registered under ``name``.
    """
    try:
        return READERS[name]
    except KeyError:
        raise DataError(f"unknown data.format {name!r}") from None
