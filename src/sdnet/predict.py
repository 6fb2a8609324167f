"""What ``sdnet predict`` does, as one library function: find the scans, load the model once, segment each scan,
write its mask (and optionally probabilities), check it against anatomy, and write ``predictions.csv`` (one row per
scan), a QC figure per scan and an HTML report.

A bad input is reported by name and the others are still written; an output that cannot be written (a full or
read-only folder) stops the whole run with one line, since every later file would fail too.

Nothing is replaced silently: a scan whose mask (probabilities, QC figure) already lies in ``out`` is refused before
the model loads, unless ``overwrite`` (replace, atomically) or ``skip_existing`` (keep it, segment only the others:
resumes a half-done folder). ``predictions.csv`` keeps the rows of scans written by earlier runs. The first SIGINT or
SIGTERM finishes the scan in progress, writes ``predictions.csv`` and the report for the scans done, and stops
(exit 130 / 143); a second abandons the scan in progress. Temporary files that killed runs left in ``out`` are
removed (by their process id) and named.

Example::

    result = predict_inputs("runs/acdc", [Path("scans/")], Path("masks/"))
    print(result.written, result.failed)
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sdnet.checkpoint import LoadedRun, load_run
from sdnet.data.scans import ScanInput, find_scan_inputs
from sdnet.errors import OutputError, RunInterrupted, SDNetError
from sdnet.inference import predict_scan
from sdnet.outputs import check_writable, existing, name_some, remove_stale_temporaries
from sdnet.predict_report import (
    ScanSummary,
    anatomy_warning,
    qc_figure,
    summarise,
    write_predictions_csv,
    write_report,
)
from sdnet.utils import StopRequest, stop_signals


@dataclass
class PredictRun:
    """What :func:`predict_inputs` did.

    Attributes:
        written: (input, mask file) per scan segmented.
        failed: (input, one-line reason) per scan that could not be read or segmented.
        report: the HTML report (``None`` without QC).
        total: scans found.
        summary_csv: ``<out>/predictions.csv``.
        flagged: (input, one-line warning) per scan that failed the anatomical check.
        skipped: (input, its existing mask) per scan left as it was (``skip_existing``).
        stale: temporary files of killed runs removed from the output folder.
    """

    written: list[tuple[str, Path]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    report: Path | None = None
    total: int = 0
    summary_csv: Path | None = None
    flagged: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, Path]] = field(default_factory=list)
    stale: list[Path] = field(default_factory=list)


def scan_outputs(out: Path, scan: ScanInput, *, probabilities: bool, qc: bool) -> list[Path]:
    """The files :func:`predict_inputs` writes for one scan: its mask, probabilities (one file, or one per cine
    frame, ``_t00``...) and QC figure."""
    mask = out / scan.output
    files = [mask]
    if probabilities:
        prob = out / scan.output.replace(".nii.gz", "_prob.nii.gz")
        stem = glob.escape(prob.name.removesuffix(".nii.gz"))
        files += [prob, *sorted(out.glob(f"{stem}_t[0-9][0-9].nii.gz"))]
    if qc:
        files.append(out / "qc" / f"{scan.name}.png")
    return files


def predict_inputs(
    checkpoint: str | Path,
    inputs: list[Path],
    out: Path,
    *,
    naming: str = "auto",
    device: str = "cpu",
    batch_size: int = 16,
    probabilities: bool = False,
    qc: bool = True,
    on_line: Callable[[str], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
) -> PredictRun:
    """Segment every scan named by ``inputs`` (NIfTI files, folders, DICOM series folders) into ``out``.

    Args:
        checkpoint: a ``.pt`` file, run folder or export folder.
        inputs: files or folders (see :func:`~sdnet.data.scans.find_scan_inputs`).
        out: the output folder (masks ``<name>_seg.nii.gz`` or nnU-Net's ``<case>.nii.gz``; ``qc/``,
            ``report.html``).
        naming: ``auto``, ``suffix`` or ``nnunet`` output names.
        device: torch device.
        batch_size: slices per forward pass (≥ 1).
        probabilities: also write ``<name>_prob.nii.gz``.
        qc: write a QC figure per scan and ``report.html``.
        on_line: called with one progress line per scan written.
        on_error: called with the one-line reason of each scan that failed.
        on_warning: called with the one-line warning of each scan whose mask fails the anatomical check
            (:func:`sdnet.data.anatomy.rv_lv_check`: RV missing, or not right-anterior of the LV in world space).
        overwrite: replace outputs of earlier runs (each atomically).
        skip_existing: leave scans whose mask exists as they are and segment the others.

    Raises:
        SDNetError: no scans found, ``out`` is an input folder, an unusable batch size or checkpoint, outputs that
            exist (without ``overwrite`` / ``skip_existing``).
        OutputError: ``out`` cannot be written.
        RunInterrupted: stopped by SIGINT / SIGTERM after the scans done were written (``exit_status`` 130 / 143).
    """
    if batch_size < 1:
        raise SDNetError(f"--batch-size must be >= 1, got {batch_size}")
    if overwrite and skip_existing:
        raise SDNetError("--overwrite and --skip-existing exclude each other")
    out_dir = out.resolve()
    for item in inputs:
        if item.is_dir() and item.resolve() == out_dir:
            raise SDNetError(f"--out {out} is the input folder {item}: the masks would be read as scans by the "
                             "next run; write them to another folder")
    scans = find_scan_inputs(list(inputs), naming=naming)
    if not scans:
        raise SDNetError(f"no NIfTI files or DICOM series in {', '.join(str(i) for i in inputs)}")
    result = PredictRun(total=len(scans))
    todo = []
    for scan_input in scans:
        if skip_existing and (out / scan_input.output).exists():
            result.skipped.append((str(scan_input.path), out / scan_input.output))
        else:
            todo.append(scan_input)
    if not overwrite:
        clashes = [f for s in todo for f in existing(scan_outputs(out, s, probabilities=probabilities, qc=qc))]
        if clashes:
            raise SDNetError(f"{out} already holds {len(clashes)} output(s) of these scans ({name_some(clashes)}); "
                             "pass --overwrite to replace them, or --skip-existing to keep them and segment only the "
                             "scans without a mask")
    check_writable(out, what="output folder")  # before the model is loaded and the first scan segmented
    for folder in (out, out / "qc"):
        result.stale += remove_stale_temporaries(folder)
    if result.stale and on_line is not None:
        on_line(f"removed {len(result.stale)} temporary file(s) that killed runs left in {out}: "
                f"{name_some(result.stale)}")
    for source, mask in result.skipped:
        if on_line is not None:
            on_line(f"{source}: {mask} exists, left as it is (--skip-existing)")
    run = load_run(checkpoint, device=device)
    with stop_signals() as stop:
        summaries = _segment_all(run, todo, out, result, batch_size=batch_size,
                                 probabilities=probabilities, qc=qc, on_line=on_line, on_error=on_error,
                                 on_warning=on_warning, stop=stop)
        done = {s.name for s in summaries} | {Path(p).name for p, _ in result.failed}
        result.summary_csv = write_predictions_csv(summaries, result.failed, out / "predictions.csv",
                                                   keep_other_rows=done)
        if qc:
            result.report = write_report(summaries, result.failed, out / "report.html", checkpoint=str(checkpoint))
        if stop.signum is not None:
            left = len(todo) - len(summaries) - len(result.failed)
            raise RunInterrupted(
                f"{stop.name} after {len(summaries) + len(result.failed)} of {len(todo)} scan(s): their masks, "
                f"predictions.csv{' and report.html' if qc else ''} are written; {left} left (run the same "
                "command with --skip-existing to segment them)", exit_status=stop.exit_status)
    return result


def _segment_all(run: LoadedRun, todo: list[ScanInput], out: Path, result: PredictRun, *, batch_size: int,
                 probabilities: bool, qc: bool, on_line: Callable[[str], None] | None,
                 on_error: Callable[[str], None] | None, on_warning: Callable[[str], None] | None,
                 stop: StopRequest) -> list[ScanSummary]:
    """Segment ``todo`` one scan at a time until done or a stop signal came (checked between scans)."""
    labels = run.labels
    summaries: list[ScanSummary] = []
    for scan_input in todo:
        if stop.signum is not None:
            break
        mask_path = out / scan_input.output
        prob_path = out / scan_input.output.replace(".nii.gz", "_prob.nii.gz") if probabilities else None
        try:
            scan = scan_input.read()
            pred = predict_scan(run.model, scan, mask_path, data_config=run.config.data,
                                image_size=run.config.model.image_size, labels=labels, batch_size=batch_size,
                                probabilities_path=prob_path)
            figure = qc_figure(scan, pred.mask, labels, out / "qc" / f"{scan.name}.png") if qc else None
            summary = summarise(scan, pred.mask, pred.mask_path, labels, figure)
        except OutputError:
            raise  # a full or read-only output folder fails every later file too: stop with its one line
        except SDNetError as exc:
            result.failed.append((str(scan_input.path), str(exc)))
            if on_error is not None:
                on_error(str(exc))
            continue
        summaries.append(summary)
        result.written.append((scan.source, pred.mask_path))
        if on_line is not None:
            frames = f", {scan.n_frames} frames" if scan.n_frames > 1 else ""
            on_line(f"{scan.source} -> {pred.mask_path}{frames}")
        warning = anatomy_warning(summary)
        if warning is not None:
            result.flagged.append((scan.source, warning))
            if on_warning is not None:
                on_warning(warning)
    return summaries
