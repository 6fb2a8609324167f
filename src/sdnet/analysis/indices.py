"""Cardiac indices from label maps: ventricular volumes per phase, EDV, ESV, SV, EF and LV myocardial mass, and
their agreement with a reference (Bland–Altman).

Volumes are voxel counts times the true voxel volume (mm³ → mL); without a known voxel size no volume in mL is
given, while the ejection fraction (a ratio of volumes) still is. ED and ES are the ACDC ``Info.cfg`` frames when
given, else the phases of the largest and smallest LV volume. Myocardial mass = myocardial volume at ED × 1.05
g/mL (the density the CMR literature uses). The indices:

* EDV, ESV: LV (RV) cavity volume at ED and ES; SV = EDV − ESV; EF = SV / EDV × 100 (%);
* LV mass: 1.05 g/mL × myocardial volume at ED.

Agreement (:func:`bland_altman`): bias (mean of test − reference), the 95 % limits of agreement (bias ± 1.96 SD of
the differences), Pearson's r (``scipy.stats.pearsonr``) and the mean absolute difference.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import stats

from sdnet.data.scans import NIFTI_ENDINGS, nifti_stem
from sdnet.errors import DataError
from sdnet.outputs import atomic_output, save_figure, write_text

MYOCARDIAL_DENSITY_G_PER_ML = 1.05
#: ACDC's (and the phantom's) label values
DEFAULT_LABELS: dict[str, int] = {"RV": 1, "MYO": 2, "LV": 3}
_ACDC_FRAME = re.compile(r"^(?P<subject>.+?)_frame(?P<phase>\d+)")
_PHASE = re.compile(r"^(?P<subject>.+?)_(?:phase|t)(?P<phase>\d+)")
INDEX_NAMES = ("LV_EDV", "LV_ESV", "LV_SV", "LV_EF", "LV_mass", "RV_EDV", "RV_ESV", "RV_SV", "RV_EF")
UNITS = {"LV_EDV": "mL", "LV_ESV": "mL", "LV_SV": "mL", "LV_EF": "%", "LV_mass": "g", "RV_EDV": "mL",
         "RV_ESV": "mL", "RV_SV": "mL", "RV_EF": "%", "LV_volume_all_phases": "mL", "RV_volume_all_phases": "mL"}


@dataclass(frozen=True)
class PhaseVolumes:
    """Structure volumes of one phase: mL when the voxel size is known, else voxel counts (``unit``)."""

    phase: int
    volumes: dict[str, float]
    unit: str
    source: str


@dataclass
class SubjectSeries:
    """The label maps of one subject, one per phase, with the voxel volume (None when unknown)."""

    subject: str
    phases: list[PhaseVolumes] = field(default_factory=list)
    ed: int | None = None
    es: int | None = None
    ed_es_from: str = "volume curve"


@dataclass(frozen=True)
class SubjectIndices:
    """Indices of one subject; volumes and mass are NaN when the voxel size is unknown (EF is still given).
    ``warnings`` names results that are not findings: ED and ES the same phase, an EF of 0 (or below, or undefined)
    — what masks without a beating LV give."""

    subject: str
    ed: int
    es: int
    ed_es_from: str
    values: dict[str, float]
    volume_unit: str
    warnings: tuple[str, ...] = ()


def voxel_volume_ml(path: Path, zooms: tuple[float, ...], units: str, *, spacing: Sequence[float] | None = None
                    ) -> float | None:
    """The voxel volume in mL, or None when the file does not tell it: no spatial unit in the header *and*
    unit voxel sizes (what converters write when they know nothing, e.g. the SSL4MIS release re-saved).

    Args:
        zooms: the header's voxel sizes (≥ 3 values).
        units: the header's spatial unit (``mm``, ``meter``, ``micron`` or ``unknown``).
        spacing: the voxel size in mm given by the user, which overrides the header.
    """
    if spacing is not None:
        dims = [float(v) for v in spacing]
    else:
        dims = [float(v) for v in zooms[:3]]
        if units == "unknown" and all(abs(d - 1.0) < 1e-6 for d in dims):
            return None
        scale = {"meter": 1000.0, "micron": 1e-3}.get(units, 1.0)
        dims = [d * scale for d in dims]
    if len(dims) != 3 or not all(math.isfinite(d) and d > 0 for d in dims):
        raise DataError(f"{path}: voxel size {dims} is not three positive numbers")
    return float(np.prod(dims)) / 1000.0


def structure_volumes(mask: np.ndarray, labels: Mapping[str, int], voxel_ml: float | None) -> dict[str, float]:
    """Volume of every named structure of a label map (mL, or voxels when ``voxel_ml`` is None)."""
    return {name: float(np.count_nonzero(mask == value)) * (voxel_ml if voxel_ml is not None else 1.0)
            for name, value in labels.items()}


def _read_mask(path: Path) -> tuple[np.ndarray, tuple[float, ...], str]:
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)  # type: ignore[attr-defined]
        zooms = tuple(float(z) for z in image.header.get_zooms())  # type: ignore[attr-defined]
        units = str(image.header.get_xyzt_units()[0])  # type: ignore[attr-defined]
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim < 3:
        raise DataError(f"{path}: a {data.ndim}D label map; indices need 3D masks (X, Y, Z) or a 4D cine mask "
                        "(X, Y, Z, T) with the true slice thickness")
    if data.ndim > 4:
        raise DataError(f"{path}: a {data.ndim}D label map; expected 3D (X, Y, Z) or 4D (X, Y, Z, T)")
    if not np.issubdtype(data.dtype, np.integer):
        as_float = np.asarray(data, dtype=np.float64)
        if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
            raise DataError(f"{path}: not a label map (non-integer values)")
        data = as_float.astype(np.int64)
    return np.asarray(data), zooms, units


def read_acdc_info(path: Path) -> tuple[int, int]:
    """(ED, ES) 0-based phases from an ACDC ``Info.cfg`` (1-based frames ``ED: 1``, ``ES: 12``)."""
    try:
        entries = dict(line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
        return int(float(entries["ED"])) - 1, int(float(entries["ES"])) - 1
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: no readable ED / ES entries ({type(exc).__name__}: {exc})") from None


def read_mask_series(
    inputs: Sequence[Path], labels: Mapping[str, int], *, spacing: Sequence[float] | None = None,
    pattern: str | None = None, info_root: Path | None = None, ed_es: tuple[int, int] | None = None,
) -> list[SubjectSeries]:
    """Group label maps into subjects and measure every phase.

    A 4D file is one subject (its name) with one phase per frame. 3D files are grouped by ``pattern`` (a regular
    expression with groups ``subject`` and ``phase``; default: ACDC's ``<subject>_frameNN`` or
    ``<subject>_phaseNN`` / ``_tNN``); a file that matches none is a subject with one phase.

    Args:
        inputs: label-map files or folders of them (``*.nii[.gz]``; ``_prob`` files are skipped).
        labels: structure name -> label value; must include ``LV``.
        spacing: voxel size (dy, dx, dz) in mm overriding the headers.
        pattern: see above.
        info_root: a folder with ACDC ``<subject>/Info.cfg`` files giving ED and ES.
        ed_es: the (ED, ES) phases of every subject, e.g. (0, 1) for the SSL4MIS release (frame01 = ED, frame02 =
            ES); an ``Info.cfg`` found under ``info_root`` still takes precedence.

    Raises:
        DataError: no files, unreadable or non-label files, 2D maps, maps without the LV label anywhere, label
            values that ``labels`` does not name (they would be dropped silently).
    """
    if "LV" not in labels:
        raise DataError(f"labels {dict(labels)} name no LV; pass e.g. --labels RV=1,MYO=2,LV=3")
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.name.endswith(NIFTI_ENDINGS) and "_prob" not in p.name)
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item}: not found")
    if not files:
        raise DataError(f"no label maps (*.nii, *.nii.gz) in {', '.join(map(str, inputs))}")
    regex = re.compile(pattern) if pattern else None
    subjects: dict[str, SubjectSeries] = {}
    known = {0, *(int(v) for v in labels.values())}
    for path in files:
        data, zooms, units = _read_mask(path)
        unexpected = sorted(int(v) for v in np.unique(data) if int(v) not in known)
        if unexpected:
            named = ",".join(f"{n}={v}" for n, v in labels.items())
            raise DataError(f"{path}: label values {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} are not "
                            f"in --labels {named} (0 = background); name them (e.g. --labels {named},OTHER="
                            f"{unexpected[0]}) or fix the masks")
        voxel_ml = voxel_volume_ml(path, zooms, units, spacing=spacing)
        unit = "mL" if voxel_ml is not None else "voxels"
        stem = nifti_stem(path).removesuffix("_seg")
        if data.ndim == 4:
            series = subjects.setdefault(stem, SubjectSeries(subject=stem))
            for t in range(data.shape[3]):
                series.phases.append(PhaseVolumes(t, structure_volumes(data[..., t], labels, voxel_ml), unit,
                                                  str(path)))
            continue
        match = regex.match(stem) if regex else (_ACDC_FRAME.match(stem) or _PHASE.match(stem))
        subject, phase = (match["subject"], int(match["phase"])) if match else (stem, 0)
        if match and _ACDC_FRAME.match(stem) and not regex:
            phase -= 1  # ACDC frames are 1-based
        series = subjects.setdefault(subject, SubjectSeries(subject=subject))
        if any(p.phase == phase for p in series.phases):
            raise DataError(f"{path}: subject {subject} phase {phase} given twice")
        series.phases.append(PhaseVolumes(phase, structure_volumes(data, labels, voxel_ml), unit, str(path)))
    for series in subjects.values():
        series.phases.sort(key=lambda p: p.phase)
        if len({p.unit for p in series.phases}) > 1:
            raise DataError(f"subject {series.subject}: some phases have a known voxel size, others not "
                            f"({', '.join(p.source for p in series.phases)})")
        if not any(p.volumes["LV"] > 0 for p in series.phases):
            raise DataError(f"{series.phases[0].source}: no voxel has the LV label {labels['LV']} in any phase of "
                            f"subject {series.subject} (wrong --labels?)")
        if ed_es is not None:
            series.ed, series.es = ed_es
            series.ed_es_from = "given"
        if info_root is not None:
            cfg = info_root / series.subject / "Info.cfg"
            if cfg.is_file():
                series.ed, series.es = read_acdc_info(cfg)
                series.ed_es_from = "Info.cfg"
    return sorted(subjects.values(), key=lambda s: s.subject)


def subject_indices(series: SubjectSeries) -> SubjectIndices:
    """EDV, ESV, SV, EF (LV and RV) and LV mass of one subject (see the module docstring).

    Raises:
        DataError: fewer than two phases, or ED / ES phases that the subject does not have.
    """
    if len(series.phases) < 2:
        raise DataError(f"subject {series.subject}: one phase only ({series.phases[0].source}); indices need ED "
                        "and ES (a 4D mask, or several 3D masks named <subject>_frameNN)")
    by_phase = {p.phase: p for p in series.phases}
    lv = {p.phase: p.volumes["LV"] for p in series.phases}
    ed = series.ed if series.ed is not None else max(lv, key=lambda k: lv[k])
    es = series.es if series.es is not None else min(lv, key=lambda k: lv[k])
    for name, phase in (("ED", ed), ("ES", es)):
        if phase not in by_phase:
            raise DataError(f"subject {series.subject}: {name} phase {phase} ({series.ed_es_from}) is not among its "
                            f"phases {sorted(by_phase)}")
    unit = series.phases[0].unit
    known = unit == "mL"
    values: dict[str, float] = {}
    for structure in ("LV", "RV"):
        edv, esv = by_phase[ed].volumes.get(structure, math.nan), by_phase[es].volumes.get(structure, math.nan)
        ef = 100.0 * (edv - esv) / edv if edv > 0 else math.nan
        values[f"{structure}_EDV"] = edv if known else math.nan
        values[f"{structure}_ESV"] = esv if known else math.nan
        values[f"{structure}_SV"] = edv - esv if known else math.nan
        values[f"{structure}_EF"] = ef
    myo = by_phase[ed].volumes.get("MYO", math.nan)
    values["LV_mass"] = MYOCARDIAL_DENSITY_G_PER_ML * myo if known else math.nan
    warnings: list[str] = []
    if ed == es:
        warnings.append(f"ED and ES are the same phase ({ed}): the LV volume does not change over the phases")
    ef = values["LV_EF"]
    if not math.isfinite(ef):
        warnings.append("LV EF undefined (no LV at ED)")
    elif ef <= 0:
        warnings.append(f"LV EF {ef:.1f} %: the ES volume is not below the ED volume")
    return SubjectIndices(subject=series.subject, ed=ed, es=es, ed_es_from=series.ed_es_from, values=values,
                          volume_unit=unit, warnings=tuple(warnings))


@dataclass(frozen=True)
class Agreement:
    """Bland–Altman agreement of one index between test and reference over ``n`` subjects."""

    index: str
    n: int
    mean_reference: float
    mean_test: float
    bias: float
    sd: float
    loa_low: float
    loa_high: float
    mean_absolute_difference: float
    pearson_r: float
    pearson_p: float


def bland_altman(index: str, test: Sequence[float], reference: Sequence[float]) -> Agreement:
    """Bias, 95 % limits of agreement, mean absolute difference and Pearson's r of ``test`` against
    ``reference`` (pairs with a non-finite value are left out)."""
    a, b = np.asarray(test, dtype=float), np.asarray(reference, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = int(a.size)
    if n == 0:
        nan = math.nan
        return Agreement(index, 0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    d = a - b
    bias = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    r, p = (math.nan, math.nan)
    if n > 2 and np.std(a) > 0 and np.std(b) > 0:
        result = stats.pearsonr(a, b)
        r, p = float(result.statistic), float(result.pvalue)
    return Agreement(index=index, n=n, mean_reference=float(b.mean()), mean_test=float(a.mean()), bias=bias, sd=sd,
                     loa_low=bias - 1.96 * sd, loa_high=bias + 1.96 * sd,
                     mean_absolute_difference=float(np.abs(d).mean()), pearson_r=r, pearson_p=p)


# ------------------------------------------------------------------------------------------------------ reports
def _fmt(x: float, digits: int = 1) -> str:
    return "—" if not math.isfinite(x) else f"{x:.{digits}f}"


def write_indices(results: Sequence[SubjectIndices], series: Sequence[SubjectSeries], out: Path) -> list[Path]:
    """``indices.csv`` (one row per subject), ``volumes.csv`` (one row per subject and phase), ``indices.md`` and
    ``volume_curves.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "indices.csv", out / "volumes.csv", out / "indices.md", out / "volume_curves.png"]
    with atomic_output(paths[0]) as tmp_path, tmp_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "ED", "ES", "ED_ES_from", *[f"{k}_{UNITS[k]}" for k in INDEX_NAMES], "warnings"])
        for r in results:
            w.writerow([r.subject, r.ed, r.es, r.ed_es_from, *[_num(r.values[k]) for k in INDEX_NAMES],
                        "; ".join(r.warnings)])
    with atomic_output(paths[1]) as tmp_path, tmp_path.open("w", newline="") as f:
        w = csv.writer(f)
        names = list(series[0].phases[0].volumes) if series else []
        w.writerow(["subject", "phase", "unit", *names, "source"])
        for s in series:
            for p in s.phases:
                w.writerow([s.subject, p.phase, p.unit, *[_num(p.volumes[n]) for n in names], p.source])
    lines = ["# Cardiac indices", "",
             "Volumes in mL from the voxel size (— where the files give none; EF is still computed), LV mass = "
             f"{MYOCARDIAL_DENSITY_G_PER_ML} g/mL × myocardial volume at ED. ED/ES: from `Info.cfg` where given, "
             "else the phases of largest / smallest LV volume.", "",
             "| subject | ED | ES | " + " | ".join(f"{k} ({UNITS[k]})" for k in INDEX_NAMES) + " |",
             "|" + "---|" * (3 + len(INDEX_NAMES))]
    for r in results:
        flag = " ⚠" if r.warnings else ""
        lines.append(f"| {r.subject}{flag} | {r.ed} | {r.es} | "
                     + " | ".join(_fmt(r.values[k]) for k in INDEX_NAMES) + " |")
    flagged = [r for r in results if r.warnings]
    if flagged:
        lines += ["", "⚠ not findings — check these masks:", ""]
        lines += [f"- {r.subject}: {'; '.join(r.warnings)}" for r in flagged]
    write_text(paths[2], "\n".join(lines) + "\n")
    _plot_curves(series, results, paths[3])
    return paths


def _num(x: float) -> str:
    return f"{x:.6g}" if math.isfinite(x) else ""


def _plot_curves(series: Sequence[SubjectSeries], results: Sequence[SubjectIndices], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    marks = {r.subject: r for r in results}
    for s in series[:20]:
        phases = [p.phase for p in s.phases]
        lv = [p.volumes["LV"] for p in s.phases]
        (line,) = ax.plot(phases, lv, marker=".", label=s.subject)
        r = marks.get(s.subject)
        if r is not None:
            by = {p.phase: p.volumes["LV"] for p in s.phases}
            ax.scatter([r.ed, r.es], [by[r.ed], by[r.es]], color=line.get_color(), marker="o", s=40,
                       edgecolors="k", zorder=3)
    unit = series[0].phases[0].unit if series else "mL"
    ax.set_xlabel("phase")
    ax.set_ylabel(f"LV cavity volume ({unit})")
    ax.set_title("LV volume curves (circles: ED and ES)" + (" — first 20 subjects" if len(series) > 20 else ""),
                 fontsize=10)
    if len(series) <= 12:
        ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def write_agreement(test: Sequence[SubjectIndices], reference: Sequence[SubjectIndices], out: Path,
                    *, title: str = "test vs reference", test_series: Sequence[SubjectSeries] = (),
                    reference_series: Sequence[SubjectSeries] = ()) -> tuple[list[Agreement], list[Path]]:
    """Bland–Altman of every index over the subjects both have: ``agreement.csv``, ``agreement.md`` and
    ``bland_altman.png`` in ``out``. With the series, also of the LV and RV volume of every (subject, phase) both
    have (``LV_volume_all_phases``, ``RV_volume_all_phases``)."""
    ref = {r.subject: r for r in reference}
    pairs = [(t, ref[t.subject]) for t in test if t.subject in ref]
    if not pairs:
        raise DataError("the test and reference label maps share no subject (names must match)")
    agreements = [bland_altman(k, [t.values[k] for t, _ in pairs], [r.values[k] for _, r in pairs])
                  for k in INDEX_NAMES]
    if test_series and reference_series and test_series[0].phases[0].unit == "mL":
        by_key = {(s.subject, p.phase): p for s in reference_series for p in s.phases}
        matched = [(p, by_key[(s.subject, p.phase)]) for s in test_series for p in s.phases
                   if (s.subject, p.phase) in by_key]
        for structure in ("LV", "RV"):
            agreements.append(bland_altman(f"{structure}_volume_all_phases",
                                           [a.volumes.get(structure, math.nan) for a, _ in matched],
                                           [b.volumes.get(structure, math.nan) for _, b in matched]))
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = out / "agreement.csv", out / "agreement.md", out / "bland_altman.png"
    fields = ["index", "unit", "n", "mean_reference", "mean_test", "bias", "sd", "loa_low", "loa_high",
              "mean_absolute_difference", "pearson_r", "pearson_p"]
    with atomic_output(csv_path) as tmp_path, tmp_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for a in agreements:
            w.writerow([a.index, UNITS[a.index], a.n, *[_num(getattr(a, k)) for k in fields[3:]]])
    lines = [f"# Agreement of cardiac indices: {title}", "",
             f"{len(pairs)} subjects in both. Bias = mean(test − reference); limits of agreement = bias ± 1.96 SD "
             "of the differences; r = Pearson correlation (scipy.stats.pearsonr).", "",
             "| index | n | reference mean | test mean | bias | 95 % limits of agreement | mean abs. difference | r |",
             "|---|---|---|---|---|---|---|---|"]
    for a in agreements:
        if a.n == 0:
            continue
        lines.append(f"| {a.index} ({UNITS[a.index]}) | {a.n} | {_fmt(a.mean_reference)} | {_fmt(a.mean_test)} | "
                     f"{_fmt(a.bias, 2)} | {_fmt(a.loa_low, 2)} to {_fmt(a.loa_high, 2)} | "
                     f"{_fmt(a.mean_absolute_difference, 2)} | {_fmt(a.pearson_r, 3)} |")
    write_text(md_path, "\n".join(lines) + "\n")
    _plot_bland_altman(agreements, pairs, png_path, title)
    return agreements, [csv_path, md_path, png_path]


def _plot_bland_altman(agreements: Sequence[Agreement], pairs: Sequence[tuple[SubjectIndices, SubjectIndices]],
                       path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [a for a in agreements if a.n > 0 and a.index in ("LV_EF", "LV_EDV", "LV_ESV", "LV_mass", "RV_EF")]
    fig = Figure(figsize=(4.0 * max(len(shown), 1), 3.6))
    FigureCanvasAgg(fig)
    for k, a in enumerate(shown, start=1):
        ax = fig.add_subplot(1, max(len(shown), 1), k)
        t = np.array([p[0].values[a.index] for p in pairs])
        r = np.array([p[1].values[a.index] for p in pairs])
        keep = np.isfinite(t) & np.isfinite(r)
        ax.scatter((t[keep] + r[keep]) / 2, t[keep] - r[keep], s=14)
        for y, style in ((a.bias, "-"), (a.loa_low, "--"), (a.loa_high, "--")):
            if math.isfinite(y):
                ax.axhline(y, color="k", linestyle=style, lw=0.8)
        ax.set_xlabel(f"mean of both ({UNITS[a.index]})")
        ax.set_ylabel(f"test − reference ({UNITS[a.index]})")
        ax.set_title(f"{a.index}: bias {_fmt(a.bias, 2)}, LoA {_fmt(a.loa_low, 1)}…{_fmt(a.loa_high, 1)}, "
                     f"r {_fmt(a.pearson_r, 2)}", fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
