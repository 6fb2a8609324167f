"""Analyses of a trained checkpoint on its own data split, written to a folder (what ``sdnet analyse`` runs).

Each ``analyse_*`` function loads what it needs (model, saved config and subject split, preprocessed volumes),
calls the analysis functions of :mod:`sdnet.analysis`, and writes a JSON file with the numbers, a short Markdown
summary and its figures. Training images (of the saved split's training subjects) fit anything that is fitted (the
modality probe); numbers are reported on held-out subjects (the split's test subjects) only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from sdnet.analysis.arithmetic import (
    channel_arithmetic,
    match_channels,
    z_interpolation,
)
from sdnet.analysis.arithmetic_figures import arithmetic_figure, interpolation_figure
from sdnet.analysis.probes import (
    FactorStatistics,
    distance_correlation,
    factor_statistics,
    linear_probe,
    modality_probe,
)
from sdnet.analysis.run_io import (
    anatomy_maps,
    encode_batches,
    encode_mu,
    evenly_spaced,
    image_grid,
    jsonable,
    load_analysis_input,
    mean_std_text,
    phantom_truth,
    prepared_volumes,
    slice_labels,
    volume_images,
    write_numbers,
)
from sdnet.analysis.transfer import histogram_matched, score_transfer, transfer
from sdnet.analysis.volume import compare_volumes, lv_volumes, paired_difference
from sdnet.data.pipeline import PreprocessedVolume
from sdnet.errors import SDNetError
from sdnet.evaluation import evaluate_checkpoint, most_foreground_slice
from sdnet.models import SDNet
from sdnet.outputs import atomic_output, save_figure


def analyse_transfer(checkpoint: str | Path, out: str | Path, *, data_root: str | Path | None = None,
                     modalities: tuple[str, str] = ("MR", "CT"), figure_slices: int = 4) -> dict[str, Any]:
    """Modality transfer both ways between two renderings of the same test subjects (the phantom), scored against
    the true rendering, beside the histogram-matching baseline; writes ``transfer.json``, ``transfer.md`` and
    ``transfer.png``.

    Returns:
        The numbers written to ``transfer.json``: one entry per direction (see
        :class:`~sdnet.analysis.transfer.TransferScores`).
    """
    a, b = modalities
    data = load_analysis_input(checkpoint, data_root=data_root, modality=f"{a}+{b}")
    test = prepared_volumes(data.test)
    n_classes = len(data.class_names) + 1
    results = {f"{src}->{dst}": asdict(score_transfer(data.model, test, source=src, target=dst, n_classes=n_classes))
               for src, dst in ((a, b), (b, a))}
    lines = [f"# Modality transfer ({checkpoint})", "",
             f"Test subjects of the saved split ({len({v.subject_id for v in test})}), every labelled phase and "
             "slice; the modality image is the same slice of the next test subject. PSNR (dB) / SSIM against the "
             "true rendering of the anatomy in the target modality, mean ± std over slices; Dice: the model's "
             "segmentation of the transferred image vs. the anatomy's mask (of the source image, for reference).", "",
             "| direction | slices | PSNR transfer | PSNR hist. matching | SSIM transfer | SSIM hist. matching "
             "| Dice transferred | Dice source |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['n_slices']} | {mean_std_text(r['psnr'], 2)} | "
                     f"{mean_std_text(r['baseline_psnr'], 2)} | {mean_std_text(r['ssim'])} | "
                     f"{mean_std_text(r['baseline_ssim'])} | {r['dice_transfer']:.3f} | {r['dice_source']:.3f} |")
    out_dir = Path(out)
    write_numbers(out_dir, "transfer", {"checkpoint": str(checkpoint), "directions": results}, lines)
    # figure: anatomy image A, modality image B, g(s_A, z_B), histogram matching, truth
    by_key = {(v.subject_id, v.phase, v.modality): v for v in test}
    subjects = sorted({v.subject_id for v in test})
    rows: list[list[np.ndarray]] = []
    for src, dst in ((a, b), (b, a)):
        for sid in subjects[: max(1, figure_slices // 2)]:
            other = subjects[(subjects.index(sid) + 1) % len(subjects)]
            phase = next(v.phase for v in test if v.subject_id == sid and v.modality == src)
            va, vb, vt = by_key[(sid, phase, src)], by_key.get((other, phase, dst)), by_key[(sid, phase, dst)]
            if vb is None:
                continue
            k = most_foreground_slice(va.label)
            moved = transfer(data.model, va.image[k:k + 1], vb.image[k:k + 1])[0, 0].numpy()
            hm = histogram_matched(va.image[k, 0].numpy(), vb.image[k, 0].numpy())
            rows.append([va.image[k, 0].numpy(), vb.image[k, 0].numpy(), moved, hm, vt.image[k, 0].numpy()])
    image_grid(rows, ["anatomy image A", "modality image B", "g(s_A, z_B)", "histogram matching", "truth"],
                out_dir / "transfer.png")
    return results


def posterior_statistics(checkpoint: str | Path, *, data_root: str | Path | None = None) -> FactorStatistics:
    """Per-dimension posterior variance, variance of μ and KL (paper §5.6, Burgess et al.) of the modality factor
    on every slice of the checkpoint's test subjects: a :class:`~sdnet.analysis.probes.FactorStatistics`."""
    return factor_sizes(checkpoint, data_root=data_root)[0]


def factor_sizes(checkpoint: str | Path, *, data_root: str | Path | None = None) -> tuple[FactorStatistics, np.ndarray]:
    """How much of each factor a trained model uses (paper §5.6), on every slice of the checkpoint's test subjects.

    Returns:
        The modality factor's :class:`~sdnet.analysis.probes.FactorStatistics` (posterior variance per z dimension)
        and the anatomy factor's channel usage, (C,) float: the fraction of test pixels at which channel c of s is
        on (sums to 1 with argmax binarisation; an all-zero channel, as the paper finds for C > 8, has 0).
    """
    data = load_analysis_input(checkpoint, data_root=data_root)
    return _test_factors(data.model, data.test)


def _test_factors(model: SDNet, volumes: Sequence[PreprocessedVolume], *,
                  max_slices: int | None = None) -> tuple[FactorStatistics, np.ndarray]:
    """:func:`~sdnet.analysis.probes.factor_statistics` of μ and log σ² on the volumes' slices (at most
    ``max_slices``, evenly spaced), and the mean of each anatomy channel over the same slices' pixels, (C,)."""
    images = volume_images(volumes)
    if max_slices is not None:
        images = images[torch.from_numpy(evenly_spaced(len(images), max_slices))]
    with torch.inference_mode():
        mu, logvar, anatomy = encode_batches(model, images, pool=1)  # anatomy: (N, C, 1, 1) per-slice means
    usage: np.ndarray = anatomy.flatten(1).mean(dim=0).numpy().astype(np.float64)  # equal-size slices
    return factor_statistics(mu.numpy(), logvar.numpy()), usage


def analyse_modality(checkpoint: str | Path, out: str | Path, *, data_root: str | Path | None = None,
                     modality: str = "MR+CT", max_train_slices: int = 4000, seed: int = 0) -> dict[str, Any]:
    """Predict the modality from z (paper §5.4) and describe the factors (§5.6 and beyond); writes
    ``modality.json`` and ``modality.md``.

    * a logistic-regression probe on μ fitted on the training subjects' slices (all phases, labelled or not;
      at most ``max_train_slices``, evenly spaced) and scored on the test subjects': all dimensions and each alone;
    * per-dimension posterior variance, variance of μ and KL (Burgess et al. 2018) on the test slices;
    * distance correlation between the anatomy maps s (average-pooled to 16×16) and μ on the test slices (Liu et
      al. 2021): near 0 when z carries no anatomy.
    """
    data = load_analysis_input(checkpoint, data_root=data_root, modality=modality)
    names = data.config.data.modalities
    if len(names) < 2:
        raise SDNetError(f"modality estimation needs two or more modalities, got data.modality={modality!r}")
    mu_train, _, _ = encode_mu(data.model, data.train)
    y_train = slice_labels(data.train, "modality")
    keep = evenly_spaced(len(y_train), max_train_slices)
    mu_test, logvar_test, s_test = encode_mu(data.model, data.test)
    y_test = slice_labels(data.test, "modality")
    probe = modality_probe(mu_train[keep], y_train[keep], mu_test, y_test, seed=seed)
    stats = factor_statistics(mu_test, logvar_test)
    dcor_s_z = distance_correlation(s_test, mu_test, seed=seed)
    numbers = {"checkpoint": str(checkpoint), "modalities": list(names), "probe": jsonable(asdict(probe)),
               "factors": jsonable(asdict(stats)), "distance_correlation_s_z": dcor_s_z}
    lines = [f"# Modality estimation from z ({checkpoint})", "",
             f"Logistic regression on μ: fitted on {probe.n_train} training slices, scored on {probe.n_test} slices "
             f"of {len(data.split.test)} held-out subjects ({', '.join(names)}).", "",
             f"- accuracy, all {mu_test.shape[1]} dimensions: **{probe.accuracy:.3f}** (chance {probe.chance:.3f})",
             f"- best single dimension: z{probe.best_dimension} with {max(probe.per_dimension_accuracy):.3f}; all: "
             + ", ".join(f"z{i} {a:.2f}" for i, a in enumerate(probe.per_dimension_accuracy)),
             f"- distance correlation between s and z on the test slices: {dcor_s_z:.3f}", "",
             "| z dimension | mean posterior variance | variance of μ | KL (nats) |", "|---|---|---|---|"]
    for i in range(mu_test.shape[1]):
        lines.append(f"| z{i} | {stats.mean_variance[i]:.3f} | {stats.mu_variance[i]:.3f} | {stats.kl[i]:.3f} |")
    write_numbers(Path(out), "modality", numbers, lines)
    return numbers


def analyse_arithmetic(checkpoint: str | Path, out: str | Path, *, data_root: str | Path | None = None,
                       source: str = "MYO", target: str = "LV", images: int = 3, seed: int = 0,
                       max_match_slices: int = 400) -> dict[str, Any]:
    """The latent-arithmetic figures of paper §5.5 on test images: anatomy-channel operations (Figure 7,
    ``arithmetic.png``) and the z-interpolation grid with correlation and difference images (Figure 8,
    ``interpolation.png``). Channels are matched to classes on the *training* subjects' labelled slices (at most
    ``max_match_slices``, evenly spaced)."""
    data = load_analysis_input(checkpoint, data_root=data_root)
    labelled = [v for v in data.train if v.label is not None]
    if not labelled:
        raise SDNetError("no labelled training slices to match anatomy channels to classes")
    x_train = torch.from_numpy(np.concatenate([v.image for v in labelled]))
    y_train = torch.from_numpy(np.concatenate([v.label for v in labelled if v.label is not None]))
    keep = torch.from_numpy(evenly_spaced(len(x_train), max_match_slices))
    x_train, y_train = x_train[keep], y_train[keep]  # evenly spaced: s of every slice would not fit in memory
    s_train = encode_batches(data.model, x_train)[2]
    channels = match_channels(s_train, y_train, data.class_names)
    picks = []
    for image, label in [(v.image, v.label) for v in data.test if v.label is not None][:images]:
        k = most_foreground_slice(label)
        picks.append(torch.from_numpy(image[k:k + 1]))
    if not picks:
        raise SDNetError("no labelled test slices")
    x = torch.cat(picks)
    result = channel_arithmetic(data.model, x, channels, source=source, target=target, seed=seed)
    out_dir = Path(out)
    arithmetic_figure(result, out_dir / "arithmetic.png",
                      title=f"anatomy arithmetic: {source} -> {target}, swap, random permutation")
    grid = z_interpolation(data.model, x[:1])
    interpolation_figure(grid, out_dir / "interpolation.png", title="z interpolation, -3 to 3 per dimension")
    factors, _ = _test_factors(data.model, data.test, max_slices=2000)
    numbers: dict[str, Any] = {
        "checkpoint": str(checkpoint), "channels": channels,
        "permutation": [int(p) for p in result.permutation],
        "mean_abs_correlation_per_dimension": [float(c.abs().mean()) for c in grid.correlation],
        "mean_abs_difference_per_dimension": [float(d.abs().mean()) for d in grid.difference],
        "posterior_variance_per_dimension": list(factors.mean_variance),
        "kl_per_dimension": list(factors.kl), "factor_slices": factors.n_samples}
    lines = [f"# Latent arithmetic ({checkpoint})", "",
             "Anatomy channels matched to classes on the training subjects' labelled slices: "
             + ", ".join(f"{k} = s[{c}]" for k, c in channels.items()) + ".", "",
             "![channel operations](arithmetic.png)", "", "![z interpolation](interpolation.png)", "",
             "Per z dimension: mean absolute Pearson correlation and difference of the interpolation grid (one test "
             f"image), and the mean posterior variance and KL on {factors.n_samples} test slices (paper §5.6: small "
             "variance = informative; an unused dimension keeps the prior's 1 and a KL near 0).", "",
             "| z dimension | mean abs. correlation | mean abs. difference | posterior variance | KL |",
             "|---|---|---|---|---|"]
    for i, (c, d) in enumerate(zip(numbers["mean_abs_correlation_per_dimension"],
                                   numbers["mean_abs_difference_per_dimension"], strict=True)):
        lines.append(f"| z{i} | {c:.3f} | {d:.3f} | {factors.mean_variance[i]:.3f} | {factors.kl[i]:.3f} |")
    write_numbers(out_dir, "arithmetic", numbers, lines)
    return numbers


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _channel_dice(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Per-channel Dice of two stacks of binary maps (N, C, H, W), pooled over N; NaN where both are empty."""
    inter = (a * b).sum(dim=(0, 2, 3))
    total = a.sum(dim=(0, 2, 3)) + b.sum(dim=(0, 2, 3))
    return [float(2 * i / t) if t > 0 else float("nan") for i, t in zip(inter, total, strict=True)]


def _partition(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) anatomy maps -> the one-hot of their channel argmax (each pixel in exactly one channel)."""
    return torch.nn.functional.one_hot(maps.argmax(dim=1), maps.shape[1]).permute(0, 3, 1, 2).to(maps.dtype)


def _per_slice_targets(volumes: Sequence[PreprocessedVolume], truth: dict[str, dict[str, Any]],
                       key: str, names: Sequence[str]) -> np.ndarray:
    rows = []
    for v in volumes:
        entry = truth[v.subject_id]
        values = entry["anatomy"] if key == "anatomy" else entry["modality_params"][v.modality]
        rows.append(np.tile([float(values[n]) for n in names], (v.image.shape[0], 1)))
    return np.concatenate(rows)


ANATOMY_TARGETS: tuple[str, ...] = ("lv_radius_mm", "wall_thickness_mm", "heart_rotation_deg", "heart_offset_x_mm",
                                    "heart_offset_y_mm", "body_semi_x_mm", "rv_scale", "ejection_fraction")
"""The phantom's true anatomical parameters probed from z (should be unpredictable) and from s."""


def analyse_disentanglement(checkpoint: str | Path, out: str | Path, *, data_root: str | Path | None = None,
                            modalities: tuple[str, str] = ("MR", "CT"), seed: int = 0) -> dict[str, Any]:
    """How well s and z separate anatomy from imaging, measured against the phantom's known factors; writes
    ``disentanglement.json`` and ``disentanglement.md``. Beyond the paper (issue: disentanglement measures):

    * **invariance of s**: per-channel Dice between the anatomy maps of the *same* anatomy rendered in the two
      modalities (test subjects, every phase and slice), beside the same number for *different* anatomies at the
      same slice position in one modality (the level that means "no more alike than any two hearts"). On soft
      (unbinarised) maps that Dice is below 1 even for identical maps (Σa² / Σa), so it is also given on the
      partition each model's s makes (the one-hot of its channel argmax): comparable between soft and binary s;
    * **what z predicts**: held-out R² of ridge probes (fitted on the training subjects' slices, scored on the test
      subjects') from μ to each modality's true rendering parameters, and to the true anatomical parameters
      (:data:`ANATOMY_TARGETS`), with the anatomy also probed from s (average-pooled to 8×8) for contrast;
    * **distance correlation** between s (pooled to 16×16) and μ on the test slices.
    """
    a, b = modalities
    data = load_analysis_input(checkpoint, data_root=data_root, modality=f"{a}+{b}")
    truth = phantom_truth(data.config.data.root)
    by_key = {(v.subject_id, v.phase, v.modality): v for v in data.test}
    pairs = sorted({(sid, ph) for sid, ph, m in by_key if m == a and (sid, ph, b) in by_key})
    if len(pairs) < 2:
        raise SDNetError(f"no test subjects rendered in both {a} and {b}")
    s_a = anatomy_maps(data.model, [by_key[(sid, ph, a)] for sid, ph in pairs])
    s_b = anatomy_maps(data.model, [by_key[(sid, ph, b)] for sid, ph in pairs])
    subjects = sorted({sid for sid, _ in pairs})
    same = _channel_dice(s_a, s_b)
    unrelated = []  # (anatomy X in modality a, another subject's anatomy at the same phase and slices)
    for sid, ph in pairs:
        other = by_key.get((subjects[(subjects.index(sid) + 1) % len(subjects)], ph, a))
        if other is not None and other.image.shape == by_key[(sid, ph, a)].image.shape:
            unrelated.append((by_key[(sid, ph, a)], other))
    different = _channel_dice(anatomy_maps(data.model, [x for x, _ in unrelated]),
                              anatomy_maps(data.model, [y for _, y in unrelated])) if unrelated else []
    results: dict[str, Any] = {"checkpoint": str(checkpoint), "modalities": [a, b],
                               "s_invariance": {"same_anatomy_dice": same, "different_anatomy_dice": different,
                                                "same_anatomy_mean": _nanmean(same),
                                                "different_anatomy_mean": _nanmean(different)}}
    same_hard = _channel_dice(_partition(s_a), _partition(s_b))
    different_hard = _channel_dice(_partition(anatomy_maps(data.model, [x for x, _ in unrelated])),
                                   _partition(anatomy_maps(data.model, [y for _, y in unrelated]))) if unrelated else []
    results["s_invariance_partition"] = {"same_anatomy_dice": same_hard, "different_anatomy_dice": different_hard,
                                         "same_anatomy_mean": _nanmean(same_hard),
                                         "different_anatomy_mean": _nanmean(different_hard)}
    mu_train, _, s_train = encode_mu(data.model, data.train)
    mu_test, _, s_test = encode_mu(data.model, data.test)
    results["distance_correlation_s_z"] = distance_correlation(s_test, mu_test, seed=seed)
    train_modality, test_modality = slice_labels(data.train, "modality"), slice_labels(data.test, "modality")
    r2_params: dict[str, dict[str, float]] = {}
    for m in (a, b):
        tr = [v for v in data.train if v.modality == m]
        te = [v for v in data.test if v.modality == m]
        names = sorted(truth[tr[0].subject_id]["modality_params"][m]) if tr else []
        if not tr or not te or not names:
            continue
        r2_params[m] = linear_probe(mu_train[train_modality == m], _per_slice_targets(tr, truth, m, names),
                                    mu_test[test_modality == m], _per_slice_targets(te, truth, m, names), names)
    anatomy_train = _per_slice_targets(data.train, truth, "anatomy", ANATOMY_TARGETS)
    anatomy_test = _per_slice_targets(data.test, truth, "anatomy", ANATOMY_TARGETS)
    pooled_train = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(s_train).view(
        len(s_train), -1, 16, 16), 8).flatten(1).numpy()
    pooled_test = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(s_test).view(
        len(s_test), -1, 16, 16), 8).flatten(1).numpy()
    results["r2_z_to_modality_params"] = r2_params
    results["r2_z_to_anatomy"] = linear_probe(mu_train, anatomy_train, mu_test, anatomy_test, ANATOMY_TARGETS)
    results["r2_s_to_anatomy"] = linear_probe(pooled_train, anatomy_train, pooled_test, anatomy_test,
                                              ANATOMY_TARGETS)

    def median(values: dict[str, float]) -> float:
        finite = [v for v in values.values() if math.isfinite(v)]
        return float(np.median(finite)) if finite else float("nan")

    inv = results["s_invariance"]
    lines = [f"# Disentanglement on the phantom ({checkpoint})", "",
             f"Test subjects: {len(subjects)}; training subjects fit the probes. Ridge R² on held-out subjects "
             "(1 = perfectly predicted, ≤ 0 = not at all).", "",
             f"- s invariance: Dice of the anatomy channels between the {a} and {b} renderings of the same anatomy "
             f"**{inv['same_anatomy_mean']:.3f}** (mean over channels), vs. {inv['different_anatomy_mean']:.3f} "
             "between different anatomies at the same slice position",
             f"- the same on the partition s makes (one-hot of its channel argmax; comparable between soft and binary "
             f"s): **{results['s_invariance_partition']['same_anatomy_mean']:.3f}** vs. "
             f"{results['s_invariance_partition']['different_anatomy_mean']:.3f}",
             f"- distance correlation of s and z: {results['distance_correlation_s_z']:.3f}",
             "- median R², z -> true rendering parameters: "
             + ", ".join(f"{m} {median(r):.3f}" for m, r in r2_params.items()),
             f"- median R², z -> true anatomy: {median(results['r2_z_to_anatomy']):.3f}; s -> true anatomy: "
             f"{median(results['r2_s_to_anatomy']):.3f}", "",
             "| anatomical parameter | R² from z | R² from s |", "|---|---|---|"]
    for n in ANATOMY_TARGETS:
        lines.append(f"| {n} | {results['r2_z_to_anatomy'][n]:.3f} | {results['r2_s_to_anatomy'][n]:.3f} |")
    for m, r in r2_params.items():
        lines += ["", f"| {m} rendering parameter | R² from z |", "|---|---|"]
        lines += [f"| {n} | {v:.3f} |" for n, v in r.items()]
    write_numbers(Path(out), "disentanglement", jsonable(results), lines)
    return results


def analyse_volume(checkpoint: str | Path, out: str | Path, *, data_root: str | Path | None = None,
                   baseline: str | Path | None = None) -> dict[str, Any]:
    """LV volume on the checkpoint's test subjects (paper §5.2): true LVV vs the area regressor's and vs the model's
    own segmentation, with paired t-tests; with ``baseline`` (e.g. the model before fine-tuning with volume labels)
    also the change of test Dice it brings, per class and on average, with a paired t-test over volumes. Writes
    ``volume.json``, ``volume.md``, ``volumes.csv`` and ``volume.png``.

    Raises:
        SDNetError: not an SDNet checkpoint, no area regressor and no LV label, or a baseline with other test subjects.
    """
    ev = evaluate_checkpoint(checkpoint, data_root=data_root, with_hd95=False)
    model = ev.model
    if not isinstance(model, SDNet):
        raise SDNetError(f"{checkpoint}: LV volume from s needs an SDNet checkpoint (train.method=sdnet)")
    name = ev.config.data.volume_class
    lower = [n.lower() for n in ev.class_names]
    if name.lower() not in lower:
        raise SDNetError(f"{checkpoint}: no label called {name!r} among {list(ev.class_names)} (data.volume_class)")
    class_index = lower.index(name.lower()) + 1
    estimates = lv_volumes(model, ev.volumes, class_index)
    unit = estimates[0].unit
    results: dict[str, Any] = {"checkpoint": str(checkpoint), "unit": unit, "class": name,
                               "has_regressor": model.area_regressor is not None,
                               "segmented": asdict(compare_volumes(estimates, "segmented")),
                               "test_dice": ev.report.mean_dice("3d")}
    if model.area_regressor is not None:
        results["regressed"] = asdict(compare_volumes(estimates, "regressed"))
    lines = [f"# LV volume ({checkpoint})", "",
             f"{len(estimates)} test volumes of {len({e.subject_id for e in estimates})} held-out subjects. LVV = Σ "
             f"over slices of LV area × pixel area × slice thickness ({unit}); mean ± std over volumes, error = "
             "estimate − truth, paired t-test (scipy.stats.ttest_rel) of estimate vs truth.", "",
             "| LVV from | mean ± std | mean error | mean abs. error | t | p |", "|---|---|---|---|---|---|"]

    def row(label: str, c: dict[str, Any], mean: str, std: str) -> str:
        return (f"| {label} | {c[mean]:.1f} ± {c[std]:.1f} | {c.get('mean_error', 0.0):+.1f} | "
                f"{c.get('mean_abs_error', 0.0):.1f} | {c.get('t', math.nan):.2f} | {c.get('p', math.nan):.3g} |")

    seg = results["segmented"]
    lines.append(row("ground truth", {"true_mean": seg["true_mean"], "true_std": seg["true_std"], "t": math.nan,
                                      "p": math.nan}, "true_mean", "true_std"))
    if "regressed" in results:
        lines.append(row("area regressor on s", results["regressed"], "estimate_mean", "estimate_std"))
    lines.append(row("model's segmentation", seg, "estimate_mean", "estimate_std"))
    lines += ["", f"Test 3D Dice (mean over classes): {results['test_dice']:.3f}"]
    if baseline is not None:
        base = evaluate_checkpoint(baseline, volumes=ev.volumes, with_hd95=False)
        if set(base.split.test) != set(ev.split.test):
            raise SDNetError(f"{baseline}: its test subjects differ from {checkpoint}'s; compare runs of one split")
        after = [float(np.nanmean(v.dice_3d)) for v in ev.report.volumes]
        before = [float(np.nanmean(v.dice_3d)) for v in base.report.volumes]
        change, t, p = paired_difference(before, after)
        per_class = {}
        for k, cname in enumerate(ev.class_names):
            d, tk, pk = paired_difference([float(v.dice_3d[k]) for v in base.report.volumes],
                                          [float(v.dice_3d[k]) for v in ev.report.volumes])
            per_class[cname] = {"before": float(np.nanmean([v.dice_3d[k] for v in base.report.volumes])),
                                "after": float(np.nanmean([v.dice_3d[k] for v in ev.report.volumes])),
                                "change": d, "t": tk, "p": pk}
        results["dice_change"] = {"baseline": str(baseline), "before": base.report.mean_dice("3d"),
                                  "after": ev.report.mean_dice("3d"), "mean_change": change, "t": t, "p": p,
                                  "per_class": per_class}
        lines += ["", f"Dice change against `{baseline}` (paired t-test over the {len(after)} volumes' mean Dice):",
                  "", "| class | before | after | change | p |", "|---|---|---|---|---|"]
        for cname, c in per_class.items():
            lines.append(f"| {cname} | {c['before']:.3f} | {c['after']:.3f} | {c['change']:+.3f} | {c['p']:.3g} |")
        lines.append(f"| mean | {results['dice_change']['before']:.3f} | {results['dice_change']['after']:.3f} | "
                     f"{change:+.3f} | {p:.3g} |")
    out_dir = Path(out)
    write_numbers(out_dir, "volume", jsonable(results), lines)
    with atomic_output(out_dir / "volumes.csv") as tmp_path, tmp_path.open("w") as f:
        f.write(f"subject,phase,modality,true_{unit},regressed_{unit},segmented_{unit}\n")
        for e in estimates:
            f.write(f"{e.subject_id},{e.phase},{e.modality},{e.true:.3f},{e.regressed:.3f},{e.segmented:.3f}\n")
    fig = Figure(figsize=(4.5, 4.5), dpi=110)
    ax = fig.subplots()
    true = [e.true for e in estimates]
    if model.area_regressor is not None:
        ax.scatter(true, [e.regressed for e in estimates], s=14, label="area regressor on s")
    ax.scatter(true, [e.segmented for e in estimates], s=14, marker="x", label="model's segmentation")
    top = max(max(true), *(e.segmented for e in estimates), *(e.regressed for e in estimates
                                                            if math.isfinite(e.regressed))) * 1.05
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set(xlabel=f"true LVV ({unit})", ylabel=f"estimated LVV ({unit})", xlim=(0, top), ylim=(0, top),
           title="LV volume, test volumes")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_dir / "volume.png")
    return results
