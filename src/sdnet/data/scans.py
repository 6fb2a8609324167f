"""Scans to segment, as scanners and converters write them: 3D NIfTI, 4D cine NIfTI and DICOM series folders.

A :class:`Scan` is one image series: one or more 3D frames (the phases of a cine) on one voxel grid. Its frames
are converted to float one at a time (:meth:`Scan.frame`), in the library's orientation convention
(:mod:`sdnet.data.orientation`), so a 25-phase cine never sits in memory as float data at once (an uncompressed
``.nii`` is memory-mapped and read frame by frame; a gzipped cine is decompressed once and kept in the file's own
voxel type, since a gzip stream cannot be entered at frame t without decompressing all before it); its
:meth:`Scan.to_file_order` maps a frame-shaped result back to the voxel order of the file, and the writer keeps
the input's header (NIfTI) or the affine built from the DICOM geometry.

DICOM (pydicom): every file of a folder (recursively) that pydicom reads is grouped by SeriesInstanceUID, so two
series in one folder are told apart and never stacked together. Within a series, images are grouped by position
along the slice normal (the cross product of the ImageOrientationPatient row and column cosines), and slices of
one position by TriggerTime (then InstanceNumber) into cine frames. The affine is built from ImagePositionPatient,
ImageOrientationPatient and PixelSpacing (LPS) and converted to NIfTI's RAS; voxel (i, j, k) is column i, row j of
the k-th slice along the normal, as dcm2niix orders it. RescaleSlope / RescaleIntercept are applied.

Every problem raises :class:`~sdnet.errors.DataError` naming the file or folder.

Length: the two input kinds of ``sdnet predict`` (NIfTI and DICOM) behind one :class:`Scan`, and the one function
that lists them (:func:`find_scan_inputs`); the DICOM geometry is the bulk and is only used here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from sdnet.data.nifti import check_finite
from sdnet.data.orientation import canonical_ornt, from_canonical, to_canonical
from sdnet.errors import DataError

NIFTI_ENDINGS = (".nii.gz", ".nii")
_NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
#: relative tolerance on the spacing between consecutive DICOM slice positions
SLICE_SPACING_TOLERANCE = 0.05
_LOG = logging.getLogger(__name__)


@dataclass
class Scan:
    """One image series to segment.

    Attributes:
        name: a name for outputs (file stem without ``.nii.gz``; for DICOM the folder name, plus the series number
            when the folder holds several series).
        source: where it came from (a file or a folder).
        file_shape: the voxel shape of the written mask: (X, Y, Z) or (X, Y, Z, T).
        file_affine: the (4, 4) voxel-to-world affine of that voxel order.
        spacing: (dy, dx, dz) in mm of the canonical frame's axes.
        ornt: the orientation transform from the file's voxel order to the canonical frame.
        reference: a NIfTI file whose header the outputs copy (None for DICOM: a fresh header with the affine).
        kind: ``nifti`` or ``dicom``.
    """

    name: str
    source: str
    file_shape: tuple[int, ...]
    file_affine: np.ndarray
    spacing: tuple[float, float, float]
    ornt: np.ndarray
    reference: Path | None
    kind: str
    _frames: list[np.ndarray] | None = field(default=None, repr=False)  # DICOM: (X, Y, Z) float32 file order
    _stored: np.ndarray | None = field(default=None, repr=False)  # gzipped cine: voxels in the file's dtype

    @property
    def n_frames(self) -> int:
        return 1 if len(self.file_shape) == 3 else int(self.file_shape[3])

    def _file_frame(self, t: int) -> np.ndarray:
        if self._frames is not None:
            return self._frames[t]
        assert self.reference is not None
        try:
            if self._stored is None and len(self.file_shape) == 4 and self.reference.name.endswith(".gz"):
                # a gzip stream cannot be entered at frame t without decompressing what precedes it: decompress
                # once, keep the voxels in the file's own (usually 16-bit) type, convert one frame at a time
                self._stored = np.asanyarray(nib.load(str(self.reference)).dataobj.get_unscaled())  # type: ignore[attr-defined]
            if self._stored is not None:
                header = nib.load(str(self.reference)).header
                slope, inter = header.get_slope_inter()  # type: ignore[attr-defined]
                raw = self._stored.reshape(self.file_shape)[..., t]
                data = raw.astype(np.float32) * np.float32(1.0 if slope is None else slope) + np.float32(
                    0.0 if inter is None else inter)
            else:  # uncompressed (memory-mapped) or 3D: read just this frame
                proxy = nib.load(str(self.reference)).dataobj  # type: ignore[attr-defined]
                data = np.asarray(proxy[..., t] if len(self.file_shape) == 4 else proxy[...], dtype=np.float32)
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            raise DataError(f"{self.source}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
        check_finite(data, self.source)
        out: np.ndarray = np.asarray(data).reshape(self.file_shape[:3])
        return out

    def frame_in_file_order(self, t: int = 0) -> np.ndarray:
        """Frame ``t`` as (X, Y, Z) float32 in the file's own voxel order (``legacy`` models)."""
        if not 0 <= t < self.n_frames:
            raise IndexError(f"{self.source}: frame {t} of {self.n_frames}")
        return self._file_frame(t)

    def frame(self, t: int = 0) -> np.ndarray:
        """Frame ``t`` as (H, W, S) float32 in the orientation convention (read from disk for NIfTI)."""
        if not 0 <= t < self.n_frames:
            raise IndexError(f"{self.source}: frame {t} of {self.n_frames}")
        data = self._file_frame(t)
        out, _, _ = to_canonical(data, self.file_affine)
        return np.ascontiguousarray(out)

    def frames(self) -> Iterator[np.ndarray]:
        for t in range(self.n_frames):
            yield self.frame(t)

    def to_file_order(self, canonical: np.ndarray) -> np.ndarray:
        """Map an array shaped like a canonical frame (H, W, S[, ...]) back to the file's (X, Y, Z[, ...])."""
        return from_canonical(canonical, self.ornt)


def _nifti_shape(path: Path) -> tuple[tuple[int, ...], np.ndarray, tuple[float, ...], np.dtype]:
    try:
        image = nib.load(str(path))
        shape = tuple(int(n) for n in image.shape)  # type: ignore[attr-defined]
        affine = np.asarray(image.affine, dtype=np.float64)  # type: ignore[attr-defined]
        zooms = tuple(float(z) for z in image.header.get_zooms())  # type: ignore[attr-defined]
        dtype = np.dtype(image.get_data_dtype())  # type: ignore[attr-defined]
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    return shape, affine, zooms, dtype


def read_nifti_scan(path: str | Path) -> Scan:
    """A 3D (X, Y, Z) or 4D cine (X, Y, Z, T) NIfTI scan; the data stay on disk until a frame is asked for.

    Raises:
        DataError: missing or unreadable file, a 2D image or more than 4 dimensions, RGB or complex voxels.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    shape, affine, zooms, dtype = _nifti_shape(p)
    if dtype.fields is not None or dtype.kind == "V":
        raise DataError(f"{p}: voxels of type {dtype} (RGB or another compound type); expected a grey-level scan")
    if dtype.kind == "c":
        raise DataError(f"{p}: complex-valued voxels ({dtype}); save the magnitude image instead")
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3:
        raise DataError(f"{p}: a {len(shape)}D image; expected a 3D volume (X, Y, Z) or a 4D cine (X, Y, Z, T)")
    if len(shape) > 4:
        raise DataError(f"{p}: a {len(shape)}D image of shape {shape}; expected 3D (X, Y, Z) or 4D (X, Y, Z, T)")
    ornt = canonical_ornt(affine, shape)
    zoom3 = (*zooms, 1.0, 1.0, 1.0)[:3]
    spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(ornt):
        spacing[int(target)] = float(zoom3[axis])
    return Scan(name=nifti_stem(p), source=str(p), file_shape=shape, file_affine=affine,
                spacing=(spacing[0], spacing[1], spacing[2]), ornt=ornt, reference=p, kind="nifti")


def nifti_stem(path: Path) -> str:
    """``case.nii.gz`` -> ``case`` (the ending matched in any case: ``CASE.NII.GZ`` -> ``CASE``)."""
    name = path.name
    for ending in NIFTI_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


def nnunet_case(stem: str) -> tuple[str, int] | None:
    """``case_0000`` -> (``case``, 0); None when the stem has no 4-digit channel suffix."""
    match = _NNUNET_CHANNEL.match(stem)
    return None if match is None else (match["case"], int(match["channel"]))


def is_nnunet_layout(stems: list[str]) -> bool:
    """Whether NIfTI files with these stems are an nnU-Net input folder: every stem ends in a 4-digit channel
    (``case_0000``), every case has the same channels, and channel 0000 is among them. Names such as
    ``SCD0000101_0048`` (a case and a slice or frame number) are not."""
    cases: dict[str, set[int]] = {}
    for stem in stems:
        case = nnunet_case(stem)
        if case is None:
            return False
        cases.setdefault(case[0], set()).add(case[1])
    channels = {frozenset(c) for c in cases.values()}
    return len(channels) == 1 and 0 in next(iter(channels))


# ----------------------------------------------------------------------------------------------------------- DICOM
@dataclass(frozen=True)
class _DicomImage:
    path: Path
    position: np.ndarray  # (3,) ImagePositionPatient, LPS mm
    row_cosine: np.ndarray  # (3,) direction of increasing column index
    column_cosine: np.ndarray  # (3,) direction of increasing row index
    spacing: tuple[float, float]  # (between rows, between columns) mm
    shape: tuple[int, int]
    time: float
    instance: int


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _pydicom_quiet(where: str | None) -> Iterator[None]:
    """Hold back what pydicom warns (it warns and logs every file of a series with, say, a malformed UID: 240
    lines for one cine) and, when ``where`` names the folder or series, log it once: the first message and how many
    distinct ones there were. ``where=None`` drops them (headers read a second time)."""
    logger = logging.getLogger("pydicom")
    records = _Records()
    propagate = logger.propagate
    logger.addHandler(records)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        logger.removeHandler(records)
        logger.propagate = propagate
    if where is None:
        return
    messages = list(dict.fromkeys([*records.messages, *(str(w.message) for w in caught)]))
    if messages:
        first = messages[0].split(" Please see ")[0]  # pydicom appends a link to the standard
        more = f" (and {len(messages) - 1} other message(s) of this kind)" if len(messages) > 1 else ""
        _LOG.warning("%s: pydicom: %s%s", where, first, more)


def _is_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _dicom_header(path: Path) -> object | None:
    import pydicom

    try:
        ds: object = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:  # pydicom raises many types on non-DICOM or damaged files
        return None
    return ds


def _float_list(ds: object, key: str, n: int, path: Path) -> np.ndarray:
    value = getattr(ds, key, None)
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise DataError(f"{path}: missing or malformed {key} (needed to place the slice in space)") from None
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise DataError(f"{path}: {key} must hold {n} numbers, got {value!r}")
    return out


def find_dicom_series(folder: str | Path) -> dict[str, list[Path]]:
    """SeriesInstanceUID -> its files, for every readable DICOM file under ``folder`` (recursively).

    Raises:
        DataError: the folder does not exist or holds no DICOM image.
    """
    base = Path(folder)
    if not base.is_dir():
        raise DataError(f"{base}: folder not found")
    series: dict[str, list[Path]] = {}
    with _pydicom_quiet(str(base)):  # pydicom's warnings on these headers: one line for the folder
        for path in sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if not _is_dicom(path) and path.suffix.lower() not in (".dcm", ".ima"):
                continue
            ds = _dicom_header(path)
            if ds is None or not hasattr(ds, "Rows"):
                continue
            uid = str(getattr(ds, "SeriesInstanceUID", "") or "unknown-series")
            series.setdefault(uid, []).append(path)
    if not series:
        raise DataError(f"{base}: no DICOM images found (empty folder, or no file pydicom can read as an image)")
    return series


def read_dicom_series(files: list[Path], *, name: str, source: str) -> Scan:
    """One DICOM series (its files in any order) as a scan: slices sorted along the normal, cine frames by time.
    What pydicom warns while reading it is logged once for the series.

    Raises:
        DataError: missing geometry tags, images of different size or orientation, a position with a different
            number of frames than the others, inconsistent spacing between slice positions, multi-frame files.
    """
    with _pydicom_quiet(source):
        return _read_dicom_series(files, name=name, source=source)


def _read_dicom_series(files: list[Path], *, name: str, source: str) -> Scan:
    import pydicom

    images: list[_DicomImage] = []
    for path in files:
        ds = _dicom_header(path)
        if ds is None:
            raise DataError(f"{path}: not a readable DICOM file")
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise DataError(f"{path}: multi-frame (enhanced) DICOM is not supported; export classic single-frame "
                            "images")
        iop = _float_list(ds, "ImageOrientationPatient", 6, path)
        pixel_spacing = _float_list(ds, "PixelSpacing", 2, path)
        images.append(_DicomImage(
            path=path, position=_float_list(ds, "ImagePositionPatient", 3, path), row_cosine=iop[:3],
            column_cosine=iop[3:], spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])),
            shape=(int(ds.Rows), int(ds.Columns)),  # type: ignore[attr-defined]
            time=float(getattr(ds, "TriggerTime", 0.0) or 0.0), instance=int(getattr(ds, "InstanceNumber", 0) or 0)))
    first = images[0]
    for im in images[1:]:
        if im.shape != first.shape:
            raise DataError(f"{im.path}: image size {im.shape} differs from {first.path}'s {first.shape} in one "
                            "series")
        if not (np.allclose(im.row_cosine, first.row_cosine, atol=1e-4)
                and np.allclose(im.column_cosine, first.column_cosine, atol=1e-4)):
            raise DataError(f"{im.path}: ImageOrientationPatient differs from {first.path}'s within one series")
        if not np.allclose(im.spacing, first.spacing, rtol=1e-4):
            raise DataError(f"{im.path}: PixelSpacing {im.spacing} differs from {first.path}'s {first.spacing}")
    normal = np.cross(first.row_cosine, first.column_cosine)
    # group by position along the normal (positions within 1/100 mm are one slice)
    along = np.array([float(im.position @ normal) for im in images])
    order = np.argsort(along, kind="stable")
    groups: list[list[int]] = []
    for idx in order:
        if groups and abs(along[idx] - along[groups[-1][0]]) < 1e-2:
            groups[-1].append(int(idx))
        else:
            groups.append([int(idx)])
    n_frames = len(groups[0])
    for g in groups:
        if len(g) != n_frames:
            raise DataError(f"{source}: slice position {along[g[0]]:.2f} mm has {len(g)} images, the first "
                            f"position {n_frames}: an incomplete cine or two series in one")
    if len(groups) > 1:
        steps = np.diff([along[g[0]] for g in groups])
        if np.max(steps) - np.min(steps) > SLICE_SPACING_TOLERANCE * np.median(steps):
            raise DataError(f"{source}: inconsistent spacing between slice positions ({np.min(steps):.3g} to "
                            f"{np.max(steps):.3g} mm); missing slices or a mixed series")
        slice_step = (images[groups[-1][0]].position - images[groups[0][0]].position) / (len(groups) - 1)
    else:
        thickness = 1.0
        ds0 = _dicom_header(first.path)
        for key in ("SpacingBetweenSlices", "SliceThickness"):
            try:
                thickness = float(getattr(ds0, key))
                break
            except (AttributeError, TypeError, ValueError):
                continue
        slice_step = normal * thickness
    # one volume per frame: (X = columns, Y = rows, Z = positions)
    rows, cols = first.shape
    frames = [np.empty((cols, rows, len(groups)), dtype=np.float32) for _ in range(n_frames)]
    for k, g in enumerate(groups):
        in_time = sorted(g, key=lambda i: (images[i].time, images[i].instance))
        for t, idx in enumerate(in_time):
            ds = pydicom.dcmread(str(images[idx].path))
            try:
                pixels = np.asarray(ds.pixel_array, dtype=np.float64)
            except Exception as exc:  # missing pixel data, unsupported transfer syntax, ...
                raise DataError(f"{images[idx].path}: cannot decode the pixel data ({type(exc).__name__}: "
                                f"{exc})") from None
            if pixels.ndim != 2:
                raise DataError(f"{images[idx].path}: pixel data of shape {pixels.shape}; expected a 2D grey-level "
                                "image (RGB DICOM is not supported)")
            slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
            intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
            frames[t][:, :, k] = (pixels * slope + intercept).T
    dr, dc = first.spacing
    lps = np.eye(4)
    lps[:3, 0] = first.row_cosine * dc
    lps[:3, 1] = first.column_cosine * dr
    lps[:3, 2] = slice_step
    lps[:3, 3] = images[groups[0][0]].position
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    shape: tuple[int, ...] = (cols, rows, len(groups)) if n_frames == 1 else (cols, rows, len(groups), n_frames)
    ornt = canonical_ornt(affine, shape)
    zooms = (dc, dr, float(np.linalg.norm(slice_step)))
    spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(ornt):
        spacing[int(target)] = float(zooms[axis])
    for f in frames:
        check_finite(f, source)
    return Scan(name=name, source=source, file_shape=shape, file_affine=affine,
                spacing=(spacing[0], spacing[1], spacing[2]), ornt=ornt, reference=None, kind="dicom",
                _frames=frames)


@dataclass(frozen=True)
class ScanInput:
    """One scan found by :func:`find_scan_inputs`, not read yet.

    Attributes:
        path: the NIfTI file, or the DICOM folder.
        kind: ``nifti`` or ``dicom``.
        name: the scan's name (for DICOM series of a folder with several, ``<folder>_s<SeriesNumber>``).
        output: the output file name of its mask (``<name>_seg.nii.gz``; nnU-Net naming: ``<case>.nii.gz``).
        files: the DICOM files of the series (empty for NIfTI).
    """

    path: Path
    kind: str
    name: str
    output: str
    files: tuple[Path, ...] = ()

    def read(self) -> Scan:
        if self.kind == "nifti":
            return read_nifti_scan(self.path)
        return read_dicom_series(list(self.files), name=self.name, source=f"{self.path} ({self.name})")


def find_scan_inputs(paths: list[Path], *, naming: str = "auto") -> list[ScanInput]:
    """The scans named by the command line: NIfTI files (3D or 4D), folders of NIfTI files, DICOM folders (every
    series in them, recursively).

    Args:
        paths: files or folders.
        naming: output names: ``suffix`` (``<name>_seg.nii.gz``), ``nnunet`` (``case_0000.nii.gz`` in,
            ``case.nii.gz`` out, so nnU-Net's evaluation pairs them with its reference ``case.nii.gz``) or ``auto``
            (``nnunet`` when the NIfTI inputs are laid out as nnU-Net's: see :func:`is_nnunet_layout`; else
            ``suffix``, and a ``_dddd`` ending is part of the name, as in ``SCD0000101_0048.nii.gz``).

    Raises:
        DataError: a path that does not exist, a folder with neither NIfTI nor DICOM images, two inputs with one
            output name, an nnU-Net channel other than 0000 (the models take one channel).
    """
    found: list[ScanInput] = []
    for path in paths:
        if not path.exists():
            raise DataError(f"{path}: not found")
        if path.is_file():
            if path.name.lower().endswith(NIFTI_ENDINGS):
                found.append(ScanInput(path=path, kind="nifti", name=nifti_stem(path), output=""))
                continue
            raise DataError(f"{path}: not a NIfTI file (.nii / .nii.gz); pass a DICOM series as its folder")
        # hidden files (macOS' "._scan.nii.gz" resource forks, editors' backups) are not scans
        niftis = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(NIFTI_ENDINGS)
                        and not p.name.startswith("."))
        if niftis:
            found += [ScanInput(path=p, kind="nifti", name=nifti_stem(p), output="") for p in niftis]
            continue
        series = find_dicom_series(path)
        for name, files in _series_names(path, series):
            found.append(ScanInput(path=path, kind="dicom", name=name, output="", files=tuple(files)))
    if naming not in ("auto", "suffix", "nnunet"):
        raise DataError(f"naming must be auto, suffix or nnunet, got {naming!r}")
    niftis_found = [f for f in found if f.kind == "nifti"]
    if naming == "auto":
        naming = "nnunet" if is_nnunet_layout([f.name for f in niftis_found]) else "suffix"
    out: list[ScanInput] = []
    for f in found:
        output = f"{f.name}_seg.nii.gz"
        if naming == "nnunet" and f.kind == "nifti":
            case = nnunet_case(f.name)
            if case is None:
                raise DataError(f"{f.path}: not named like an nnU-Net input (case_0000.nii.gz)")
            if case[1] != 0:
                raise DataError(f"{f.path}: nnU-Net channel {case[1]:04d}; the models take one channel (_0000)")
            output = f"{case[0]}.nii.gz"
        out.append(ScanInput(path=f.path, kind=f.kind, name=f.name, output=output, files=f.files))
    seen: dict[str, ScanInput] = {}
    for f in out:
        if f.output in seen:
            raise DataError(f"{f.path} and {seen[f.output].path} would both be written as {f.output}; "
                            "rename one or predict them into different folders")
        seen[f.output] = f
    return out


def _series_names(base: Path, series: dict[str, list[Path]]) -> list[tuple[str, list[Path]]]:
    """(name, files) per series: ``<folder>`` for one series, else ``<folder>_s<SeriesNumber>`` (or the UID's last
    component when the number is missing or repeated)."""
    if len(series) == 1:
        return [(base.name, next(iter(series.values())))]
    out: list[tuple[str, list[Path]]] = []
    names: set[str] = set()
    with _pydicom_quiet(None):
        numbers = {uid: getattr(_dicom_header(files[0]), "SeriesNumber", None) for uid, files in series.items()}

    def order(item: tuple[str, list[Path]]) -> tuple[float, str]:
        try:
            return float(numbers[item[0]]), item[0]  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return math.inf, item[0]

    for uid, files in sorted(series.items(), key=order):
        number = numbers[uid]
        name = f"{base.name}_s{number}" if number not in (None, "") else f"{base.name}_{uid.rsplit('.', 1)[-1]}"
        if name in names:
            name = f"{name}_{uid.rsplit('.', 1)[-1]}"
        names.add(name)
        out.append((name, files))
    return out


def read_dicom_folder(folder: str | Path) -> list[Scan]:
    """Every series of a DICOM folder as its own scan (named ``<folder>`` for one series, else
    ``<folder>_s<SeriesNumber>``)."""
    base = Path(folder)
    return [read_dicom_series(files, name=name, source=f"{base} ({name})")
            for name, files in _series_names(base, find_dicom_series(base))]
