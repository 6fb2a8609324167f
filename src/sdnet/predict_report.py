"""A look at what ``sdnet predict`` wrote: a QC figure per scan (slices with the mask overlaid), one HTML page
per run (the figures embedded, the structure volumes per frame, the cardiac indices of cines, the anatomical check)
and ``predictions.csv``, one row per scan (frames, classes present, volumes, the anatomical check, warnings).

The anatomical check (:func:`sdnet.data.anatomy.rv_lv_check`) runs on every predicted frame in world coordinates
from the written mask's own affine: a scan whose RV is missing or does not lie right-anterior of its LV is flagged,
the tell-tale of an image the model saw turned or mirrored (a wrong header, or a model trained in another frame).

Volumes are in mL from the scan's voxel size (the NIfTI header's, or the DICOM series' geometry); a NIfTI file
without a spatial unit and with unit voxel sizes has none, and then only voxel counts and EF are shown.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from sdnet.analysis.indices import PhaseVolumes, SubjectSeries, structure_volumes, subject_indices, voxel_volume_ml
from sdnet.data.anatomy import FrameCheck, rv_lv_check
from sdnet.data.orientation import radiological_view
from sdnet.data.scans import Scan
from sdnet.errors import DataError
from sdnet.outputs import save_figure, write_text

_COLOURS = {"RV": (0.89, 0.10, 0.11), "MYO": (0.30, 0.69, 0.29), "LV": (0.22, 0.49, 0.72)}
_FALLBACK = [(1.0, 0.5, 0.0), (0.6, 0.3, 0.64), (1.0, 1.0, 0.2), (0.65, 0.34, 0.16)]


@dataclass(frozen=True)
class ScanSummary:
    """What the report shows of one predicted scan."""

    name: str
    source: str
    mask_path: Path
    figure: Path | None
    shape: tuple[int, ...]
    spacing: tuple[float, float, float]
    unit: str
    volumes: list[dict[str, float]]  # per frame, structure -> volume (unit)
    indices: dict[str, float]  # LV/RV EDV, ESV, SV, EF, LV mass (cines only; else empty)
    checks: tuple[FrameCheck, ...] = ()  # the anatomical check per frame

    @property
    def anatomy_ok(self) -> bool | None:
        """All frames passed (True), one failed (False), the check does not apply to these labels (None)."""
        verdicts = [c.ok for c in self.checks if c.ok is not None]
        return None if not verdicts else all(verdicts)

    @property
    def warnings(self) -> list[str]:
        """One line per problem found (frames that failed the anatomical check, grouped by reason)."""
        by_problem: dict[str, list[int]] = {}
        for t, check in enumerate(self.checks):
            if check.ok is False:
                by_problem.setdefault(check.problem, []).append(t)
        out = []
        for problem, frames in by_problem.items():
            where = "" if len(self.checks) == 1 else (
                f" in {'all' if len(frames) == len(self.checks) else len(frames)} of {len(self.checks)} frames"
                f" ({_frame_list(frames)})")
            out.append(f"{problem}{where}")
        return out


def _frame_list(frames: list[int], limit: int = 8) -> str:
    text = ", ".join(str(t) for t in frames[:limit])
    return text + (", ..." if len(frames) > limit else "")


def anatomy_warning(summary: ScanSummary) -> str | None:
    """The one log line for a scan that failed the anatomical check (None when it passed or does not apply)."""
    if summary.anatomy_ok is not False:
        return None
    return (f"{summary.source}: anatomical check failed: {'; '.join(summary.warnings)} — check the scan's header "
            "(orientation) and that the model was trained on this kind of scan")


def scan_voxel_ml(scan: Scan) -> float | None:
    """The voxel volume of a scan in mL (None when its file gives no voxel size)."""
    if scan.reference is None:  # DICOM: PixelSpacing and the slice positions are in mm
        return float(abs(np.linalg.det(scan.file_affine[:3, :3]))) / 1000.0
    header = nib.load(str(scan.reference)).header
    zooms = tuple(float(z) for z in header.get_zooms())  # type: ignore[attr-defined]
    return voxel_volume_ml(Path(scan.source), zooms, str(header.get_xyzt_units()[0]))  # type: ignore[attr-defined]


def qc_figure(scan: Scan, mask: np.ndarray, labels: dict[int, str], path: Path, *, max_slices: int = 6) -> Path:
    """Slices of the scan with the mask overlaid, shown as a radiologist reads a short-axis view (anterior up, the
    patient's right on the image's left: :func:`sdnet.data.orientation.radiological_view`): for a cine the frames of
    largest and smallest LV volume (ED, ES), else the one frame; up to ``max_slices`` slices spread over those with
    any foreground."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lv_value = next((v for v, n in labels.items() if n == "LV"), None)
    frames = [0]
    if mask.ndim == 4:
        counts = [int(np.count_nonzero(mask[..., t] == lv_value)) if lv_value is not None else 0
                  for t in range(mask.shape[3])]
        frames = sorted({int(np.argmax(counts)), int(np.argmin(counts))})
    rows = []
    for t in frames:
        frame_mask = mask[..., t] if mask.ndim == 4 else mask
        canonical_mask = _to_canonical(frame_mask, scan)
        image = scan.frame(t)
        fg = np.flatnonzero((canonical_mask > 0).any(axis=(0, 1)))
        pool = fg if fg.size else np.arange(image.shape[2])
        picks = pool[np.unique(np.linspace(0, pool.size - 1, min(max_slices, pool.size)).round().astype(int))]
        rows.append((t, image, canonical_mask, picks))
    n_cols = max(len(r[3]) for r in rows)
    fig = Figure(figsize=(2.2 * n_cols, 2.4 * len(rows)))
    FigureCanvasAgg(fig)
    colours = {v: _COLOURS.get(n, _FALLBACK[i % len(_FALLBACK)]) for i, (v, n) in enumerate(labels.items()) if v}
    for r, (t, image, canonical_mask, picks) in enumerate(rows):
        lo, hi = np.percentile(image, (1, 99.5))
        for c, k in enumerate(picks):
            ax = fig.add_subplot(len(rows), n_cols, r * n_cols + c + 1)
            grey = np.clip((image[:, :, k] - lo) / max(hi - lo, 1e-6), 0, 1)
            rgb = np.repeat(grey[..., None], 3, axis=-1)
            for value, colour in colours.items():
                on = canonical_mask[:, :, k] == value
                rgb[on] = 0.55 * rgb[on] + 0.45 * np.asarray(colour)
            ax.imshow(radiological_view(rgb), interpolation="nearest")
            ax.set_title(f"frame {t}, slice {k}" if mask.ndim == 4 else f"slice {k}", fontsize=7)
            ax.axis("off")
    legend = ", ".join(f"{n} ({'red' if n == 'RV' else 'green' if n == 'MYO' else 'blue' if n == 'LV' else '·'})"
                       for v, n in labels.items() if v)
    fig.suptitle(f"{scan.name}: {legend}; anterior up, patient's right on the left", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=100)
    return path


def _to_canonical(file_order: np.ndarray, scan: Scan) -> np.ndarray:
    from nibabel.orientations import apply_orientation

    return np.ascontiguousarray(apply_orientation(file_order, scan.ornt))


def summarise(
    scan: Scan, mask: np.ndarray, mask_path: Path, labels: dict[int, str], figure: Path | None
) -> ScanSummary:
    """Volumes per frame, indices for cines and the anatomical check of every frame, for one predicted scan.

    Args:
        scan: the input.
        mask: the written mask on the input's voxel grid ((X, Y, Z) or (X, Y, Z, T)).
        mask_path: where it was written.
        labels: label value -> name (background 0 included).
        figure: its QC figure, or None.
    """
    named = {n: v for v, n in labels.items() if v}
    try:
        voxel_ml = scan_voxel_ml(scan)
    except DataError:
        voxel_ml = None
    frames = [mask[..., t] for t in range(mask.shape[3])] if mask.ndim == 4 else [mask]
    volumes = [structure_volumes(f, named, voxel_ml) for f in frames]
    unit = "mL" if voxel_ml is not None else "voxels"
    indices: dict[str, float] = {}
    if len(frames) > 1 and "LV" in named and any(v["LV"] > 0 for v in volumes):
        series = SubjectSeries(subject=scan.name,
                               phases=[PhaseVolumes(t, v, unit, scan.source) for t, v in enumerate(volumes)])
        indices = subject_indices(series).values
    checks = tuple(rv_lv_check(f, scan.file_affine, labels) for f in frames)
    return ScanSummary(name=scan.name, source=scan.source, mask_path=mask_path, figure=figure,
                       shape=tuple(scan.file_shape), spacing=scan.spacing, unit=unit, volumes=volumes,
                       indices=indices, checks=checks)


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def write_predictions_csv(summaries: list[ScanSummary], failed: list[tuple[str, str]], path: Path, *,
                          keep_other_rows: set[str] | None = None) -> Path:
    """``predictions.csv``: one row per scan written (and per input that failed, with its reason).

    With ``keep_other_rows`` (the names this run wrote or failed), the rows of an existing ``path`` for other
    scans (earlier runs into the same folder, scans skipped with ``--skip-existing``) are kept after the new ones.

    Columns: ``name``, ``input``, ``mask``, ``frames``, ``classes_present`` (the classes found in every frame,
    space-separated; ``classes_missing_in_some_frames`` the others found somewhere), ``<class>_<unit>_max`` /
    ``_min`` (the structure volume over the frames; unit mL, or voxels without a voxel size), ``anatomy_check``
    (``ok``, ``FAILED`` or ``n/a``), ``rv_lv_dR_mm`` / ``rv_lv_dA_mm`` / ``rv_lv_dS_mm`` / ``rv_lv_angle_deg``
    (median over frames of the world RV−LV centroid offset and its axial direction from +R towards +A),
    ``frames_failed``, ``warnings``.
    """
    names: list[str] = []
    for summary in summaries:
        for name in (summary.volumes[0] if summary.volumes else {}):
            if name not in names:
                names.append(name)
    units = sorted({s.unit for s in summaries}) or ["mL"]
    unit = units[0] if len(units) == 1 else "unit"
    header = ["name", "input", "mask", "frames", "classes_present", "classes_missing_in_some_frames"]
    header += [f"{n}_{unit}_{k}" for n in names for k in ("max", "min")]
    header += ["anatomy_check", "rv_lv_dR_mm", "rv_lv_dA_mm", "rv_lv_dS_mm", "rv_lv_angle_deg", "frames_failed",
               "warnings"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for s in summaries:
        everywhere = [n for n in names if s.checks and all(c.present.get(n, False) for c in s.checks)]
        somewhere = [n for n in names if n not in everywhere and any(c.present.get(n, False) for c in s.checks)]
        row: list[object] = [s.name, s.source, str(s.mask_path), len(s.volumes), " ".join(everywhere),
                             " ".join(somewhere)]
        for n in names:
            series = [v[n] for v in s.volumes if n in v]
            row += [f"{max(series):.2f}", f"{min(series):.2f}"] if series else ["", ""]
        vectors = [c.rv_minus_lv_mm for c in s.checks if c.rv_minus_lv_mm is not None]
        angles = [c.angle_deg for c in s.checks if c.angle_deg is not None]
        verdict = {True: "ok", False: "FAILED", None: "n/a"}[s.anatomy_ok]
        row += [verdict] + [f"{_median([v[k] for v in vectors]):.1f}" if vectors else "" for k in range(3)]
        row += [f"{_median(angles):.0f}" if angles else "", sum(1 for c in s.checks if c.ok is False),
                "; ".join(s.warnings)]
        writer.writerow(row)
    for source, reason in failed:
        writer.writerow([Path(source).name, source, "", 0, "", ""] + [""] * (2 * len(names))
                        + ["n/a", "", "", "", "", 0, f"not segmented: {reason}"])
    if keep_other_rows is not None and path.is_file():
        try:
            old_rows = list(csv.DictReader(path.open(newline="")))
        except (OSError, csv.Error, UnicodeDecodeError):
            old_rows = []
        for old in old_rows:
            if old.get("name") not in keep_other_rows:
                writer.writerow([old.get(column, "") for column in header])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, buffer.getvalue())
    return path


def _f(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:.1f}"


def _check_html(s: ScanSummary) -> str:
    if s.anatomy_ok is None:
        return "Anatomical check: not applicable (the labels name no RV and LV)."
    if s.anatomy_ok:
        return ("Anatomical check: <span style='color:#070'>ok</span> (RV right-anterior of the LV in every frame; "
                "direction from +R towards +A, 45° = right-anterior).")
    return ("Anatomical check: <b style='color:#b00'>FAILED</b> — " + html.escape("; ".join(s.warnings)) + ".")


def write_report(summaries: list[ScanSummary], failed: list[tuple[str, str]], path: Path, *, checkpoint: str) -> Path:
    """One self-contained HTML page (figures embedded as PNG data) for a run of ``predict``."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>sdnet predict</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}"
        "img{max-width:100%}h2{margin-top:2em}</style></head><body>",
        f"<h1>sdnet predict</h1><p>Model: <code>{html.escape(checkpoint)}</code>; {len(summaries)} scan(s) written"
        + (f", {len(failed)} failed" if failed else "") + ".</p>",
    ]
    cines = [s for s in summaries if s.indices]
    if cines:
        keys = list(cines[0].indices)
        parts.append("<h2>Cardiac indices (cines)</h2><table><tr><th>scan</th>"
                     + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>")
        for s in cines:
            parts.append(f"<tr><td>{html.escape(s.name)}</td>" + "".join(f"<td>{_f(s.indices[k])}</td>" for k in keys)
                         + "</tr>")
        parts.append("</table><p>EDV/ESV/SV in mL, EF in %, LV mass in g (1.05 g/mL × myocardium at ED); ED/ES = "
                     "frames of largest / smallest LV volume; — where the voxel size is unknown.</p>")
    flagged = [s for s in summaries if s.anatomy_ok is False]
    if flagged:
        parts.append("<h2 style='color:#b00'>Anatomical check failed</h2><p>The RV is missing or does not lie "
                     "right-anterior of the LV in world coordinates: the model probably saw these images turned or "
                     "mirrored (a wrong header, or a model trained on another kind of scan). Do not use these masks "
                     "before looking at them.</p><ul>" + "".join(
                         f"<li><b>{html.escape(s.name)}</b>: {html.escape('; '.join(s.warnings))}</li>"
                         for s in flagged) + "</ul>")
    elif any(s.anatomy_ok for s in summaries):
        parts.append("<p>Anatomical check: in every frame of every scan the RV lies right-anterior of the LV in "
                     "world coordinates.</p>")
    for s in summaries:
        names = list(s.volumes[0])
        parts.append(f"<h2>{html.escape(s.name)}</h2><p>{html.escape(s.source)} → "
                     f"<code>{html.escape(str(s.mask_path))}</code>; voxels {s.shape}, spacing "
                     f"{', '.join(f'{v:.3g}' for v in s.spacing)} mm</p>")
        parts.append(f"<p>{_check_html(s)}</p>")
        parts.append(f"<table><tr><th>frame</th>{''.join(f'<th>{n} ({s.unit})</th>' for n in names)}"
                     "<th>RV−LV (R, A, S) mm</th><th>direction</th></tr>")
        for t, v in enumerate(s.volumes):
            check = s.checks[t] if t < len(s.checks) else None
            vec = check.rv_minus_lv_mm if check is not None else None
            direction = "" if check is None or check.angle_deg is None else f"{check.angle_deg:.0f}°"
            parts.append(f"<tr><td>{t}</td>" + "".join(f"<td>{_f(v[n])}</td>" for n in names)
                         + f"<td>{'' if vec is None else ', '.join(f'{x:.0f}' for x in vec)}</td>"
                         + f"<td>{direction}</td></tr>")
        parts.append("</table>")
        if s.figure is not None:
            figure = base64.b64encode(s.figure.read_bytes()).decode("ascii")
            parts.append(f"<img src='data:image/png;base64,{figure}' alt='QC figure of {html.escape(s.name)}'>")
    if failed:
        parts.append("<h2>Failed inputs</h2><ul>" + "".join(
            f"<li><code>{html.escape(p)}</code>: {html.escape(m)}</li>" for p, m in failed) + "</ul>")
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "\n".join(parts))
    return path
