"""What ``sdnet predict`` does, as one library function: find the scans, load the model once, segment each scan,
write its mask (and optionally probabilities), check it against anatomy, and write ``predictions.csv`` (one row per
scan), a QC figure per scan and an HTML report.

A bad input is reported by name and the others are still written; an output that cannot be written (a full or
read-only folder) stops the whole run with one line, since every later file would fail too.

Example::

    result = predict_inputs("runs/acdc", [Path("scans/")], Path("masks/"))
    print(result.written, result.failed)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sdnet.checkpoint import load_run
from sdnet.data.scans import find_scan_inputs
from sdnet.errors import OutputError, SDNetError
from sdnet.inference import predict_scan
from sdnet.outputs import check_writable
from sdnet.predict_report import ScanSummary, anatomy_warning, qc_figure, summarise, write_predictions_csv, write_report


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
    """

    written: list[tuple[str, Path]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    report: Path | None = None
    total: int = 0
    summary_csv: Path | None = None
    flagged: list[tuple[str, str]] = field(default_factory=list)


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

    Raises:
        SDNetError: no scans found, ``out`` is an input folder, an unusable batch size or checkpoint.
        OutputError: ``out`` cannot be written.
    """
    if batch_size < 1:
        raise SDNetError(f"--batch-size must be >= 1, got {batch_size}")
    out_dir = out.resolve()
    for item in inputs:
        if item.is_dir() and item.resolve() == out_dir:
            raise SDNetError(f"--out {out} is the input folder {item}: the masks would be read as scans by the "
                             "next run; write them to another folder")
    scans = find_scan_inputs(list(inputs), naming=naming)
    if not scans:
        raise SDNetError(f"no NIfTI files or DICOM series in {', '.join(str(i) for i in inputs)}")
    check_writable(out, what="output folder")  # before the model is loaded and the first scan segmented
    run = load_run(checkpoint, device=device)
    labels = run.labels
    result = PredictRun(total=len(scans))
    summaries: list[ScanSummary] = []
    for scan_input in scans:
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
    result.summary_csv = write_predictions_csv(summaries, result.failed, out / "predictions.csv")
    if qc:
        result.report = write_report(summaries, result.failed, out / "report.html", checkpoint=str(checkpoint))
    return result
