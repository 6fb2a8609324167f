"""One HTML page for a trained run: every analysis of :mod:`sdnet.analysis.runs` that applies to its data
(``sdnet analyse report``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import markdown

from sdnet.analysis.run_io import dataset_modalities
from sdnet.analysis.runs import (
    analyse_arithmetic,
    analyse_disentanglement,
    analyse_modality,
    analyse_transfer,
    analyse_volume,
)
from sdnet.checkpoint import load_model
from sdnet.outputs import write_text


def analyse_report(checkpoint: str | Path, out: str | Path, *, data_root: str | Path | None = None
                   ) -> dict[str, Any]:
    """Run every analysis that applies to the checkpoint's data and write one HTML page, ``report.html``.

    Latent arithmetic always applies; on a phantom with MR and CT renderings also modality transfer, modality
    estimation and the disentanglement measures; the LV volume when the model has an area regressor; and modality
    estimation of the subtle MR / BOLD pair when the phantom has it. Each analysis keeps its own JSON, Markdown and
    figures beside the page; the page shows the Markdown summaries (rendered with the ``markdown`` package) and
    the figures.

    Returns:
        analysis name -> its numbers (as in its JSON file).
    """
    out_dir = Path(out)
    _, config, _ = load_model(checkpoint)
    root = data_root if data_root is not None else config.data.root
    available = dataset_modalities(root)
    numbers: dict[str, Any] = {}
    sections: list[tuple[str, str, list[str]]] = []  # (title, markdown file, figures)
    numbers["arithmetic"] = analyse_arithmetic(checkpoint, out_dir, data_root=data_root)
    sections.append(("Latent arithmetic (paper §5.5)", "arithmetic.md", []))
    if {"MR", "CT"} <= set(available):
        numbers["transfer"] = analyse_transfer(checkpoint, out_dir, data_root=data_root)
        sections.append(("Modality transfer (paper §5.3.2)", "transfer.md", ["transfer.png"]))
        numbers["modality"] = analyse_modality(checkpoint, out_dir, data_root=data_root, modality="MR+CT")
        sections.append(("Modality estimation, MR vs CT (paper §5.4)", "modality.md", []))
        numbers["disentanglement"] = analyse_disentanglement(checkpoint, out_dir, data_root=data_root)
        sections.append(("Disentanglement measures", "disentanglement.md", []))
    if config.model.area_regressor:
        numbers["volume"] = analyse_volume(checkpoint, out_dir, data_root=data_root)
        sections.append(("LV volume (paper §5.2)", "volume.md", ["volume.png"]))
    if {"MR", "BOLD"} <= set(available):
        bold_dir = out_dir / "bold"
        numbers["modality_bold"] = analyse_modality(checkpoint, bold_dir, data_root=data_root, modality="MR+BOLD")
        sections.append(("Modality estimation, MR vs BOLD-like (paper §5.4)", "bold/modality.md", []))
    body = [f"<h1>SDNet analysis report</h1><p>Checkpoint <code>{checkpoint}</code>, data <code>{root}</code>.</p>"]
    for title, md_file, figures in sections:
        text = (out_dir / md_file).read_text().split("\n", 1)[1]  # drop the file's own title
        body.append(f"<h2>{title}</h2>")
        body.append(markdown.markdown(text, extensions=["tables"]))
        body += [f'<img src="{fig}" alt="{fig}">' for fig in figures]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px}img{max-width:100%}")
    html = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>SDNet analysis</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "report.html", html)
    return numbers
