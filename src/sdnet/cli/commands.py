"""One ``cmd_<name>(args) -> exit status`` per sub-command: each turns parsed arguments into one call of a library
function and prints what it did. Anything a test would need (set-up, file listing, dispatch) lives in the library;
the imports below are the CLI's arrows into it.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Literal

from sdnet.analysis import runs
from sdnet.analysis.gradients import analyse_gradients
from sdnet.analysis.indices import read_mask_series, subject_indices, write_agreement, write_indices
from sdnet.analysis.report import analyse_report
from sdnet.checkpoint import stored_config
from sdnet.config import config_yaml
from sdnet.data.phantom import PhantomConfig, phantom_matches, write_phantom
from sdnet.errors import SDNetError
from sdnet.evaluation import evaluate_checkpoint, example_slices, write_volume_masks
from sdnet.export import export_model
from sdnet.outputs import check_writable
from sdnet.predict import predict_inputs
from sdnet.study import run_state, run_study
from sdnet.study.slurm import array_task_index, write_sbatch
from sdnet.study.variants import plan_kind, write_study_table
from sdnet.training import Trainer
from sdnet.training.distributed import exit_worker, shutdown
from sdnet.training.start import check_new_run_dir, default_run_dir, machine_note, new_run_config, restarted_run
from sdnet.visualise import decomposition_figure, training_curves


def cmd_phantom(args: argparse.Namespace) -> int:
    try:
        config = PhantomConfig(
            n_subjects=args.subjects, image_size=args.size, n_slices=args.slices, n_phases=args.phases,
            pixel_spacing_mm=args.spacing, slice_thickness_mm=args.thickness,
            modalities=tuple(m.strip() for m in args.modalities.split(",") if m.strip()), seed=args.seed,
        )
    except ValueError as exc:
        raise SDNetError(f"phantom: {exc}") from None
    if phantom_matches(args.out, config):
        print(f"{args.out} already holds this phantom ({config.n_subjects} subjects); nothing to write")
        return 0
    t0 = time.perf_counter()
    path = write_phantom(args.out, config, progress=True, force=args.force)
    print(f"wrote {config.n_subjects} phantom subjects ({', '.join(config.modalities)}) to {path.parent} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    try:
        code = _train(args)
    except BaseException:
        shutdown(together=False)  # a peer may never arrive after an error
        raise
    if shutdown():  # a torchrun worker leaves its process group together with the others, then ends at once
        exit_worker(code)
    return code


def _train(args: argparse.Namespace) -> int:
    if args.resume is None and restarted_run(args.out):  # torchrun --max-restarts brought the workers back
        print(f"restarted by torchrun: continuing {args.out} from its last.pt", file=sys.stderr)
        args.resume, args.config, args.data, args.init_from = args.out, None, None, None
    if args.resume is not None:
        if args.config is not None or args.data is not None or args.init_from is not None:
            raise SDNetError("--resume takes the config, data and weights of the run; drop --config/--data/--init-from")
        if args.print_config:
            print(config_yaml(stored_config(args.resume, args.overrides)), end="")
            return 0
        trainer = Trainer.resume(args.resume, overrides=args.overrides, progress=not args.no_progress)
        if trainer.is_main:
            print(f"resuming {args.resume} at step {trainer.step} (epoch {trainer.epoch})")
    else:
        config, split = new_run_config(args.config, args.overrides, data_root=args.data, init_from=args.init_from)
        if args.print_config:
            print(config_yaml(config), end="")
            return 0
        note = machine_note(config)
        if note:
            print(note, file=sys.stderr)
        run_dir = default_run_dir(args.out)
        check_new_run_dir(run_dir)
        trainer = Trainer(config, run_dir, progress=not args.no_progress, split=split, init_from=args.init_from)
    if trainer.is_main:  # one process prints (torchrun runs several)
        print(trainer.data_summary())
    result = trainer.fit()
    if not trainer.is_main:
        return 0
    when = f"epoch {result.best_epoch}" if result.best_epoch >= 0 else "at the end, before a whole epoch"
    print(f"stopped ({result.stop_reason}) after {result.epochs} epochs / {result.steps} iterations "
          f"in {trainer.elapsed / 60:.1f} min; best validation 3D Dice {result.best_val_dice:.4f} "
          f"({when}); checkpoints: {result.best_checkpoint}, {result.last_checkpoint}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    ckpt = Path(args.checkpoint)
    run_dir = ckpt if ckpt.is_dir() else ckpt.parent
    out = args.out or run_dir / f"eval_{args.split}"
    if ckpt.exists():  # a missing checkpoint is reported by evaluate_checkpoint, naming the file
        check_writable(out, what="evaluation folder")  # before the volumes are read and segmented
    evaluation = evaluate_checkpoint(args.checkpoint, part=args.split, data_root=args.data)
    report, volumes, class_names = evaluation.report, evaluation.volumes, list(evaluation.class_names)
    csv_path, md_path = report.write(out, title=f"SDNet {args.split} evaluation ({ckpt})")
    if args.save_masks:
        pred_dir, truth_dir = write_volume_masks(evaluation.model, volumes, out / "masks")
        print(f"masks: {pred_dir} and {truth_dir}")
    subjects = sorted({v.subject_id for v in volumes})
    print(f"{args.split}: {len(volumes)} volumes of {len(subjects)} subjects")
    for line in report.summary_lines():
        print(line)
    means, _ = report.mean_std("3d")
    print("held-out " + args.split + " 3D Dice per class: "
          + ", ".join(f"{n}={m:.3f}" for n, m in zip(class_names, means, strict=True))
          + f"; mean Dice {report.mean_dice('3d'):.3f}")
    if args.figures > 0:
        images, labels = example_slices(volumes, args.figures)
        fig = decomposition_figure(evaluation.model, images, labels, out / "decomposition.png",
                                   class_names=class_names,
                                   title=f"{args.split} subjects: input, anatomy channels s, reconstruction, masks")
        print(f"figure: {fig}")
    if evaluation.history:
        training_curves(list(evaluation.history), out / "training_curves.png")
    print(f"wrote {csv_path} and {md_path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    result = predict_inputs(args.checkpoint, list(args.input), args.out, naming=args.naming, device=args.device,
                            batch_size=args.batch_size, probabilities=args.probabilities, qc=not args.no_qc,
                            on_line=print, on_error=lambda msg: print(f"sdnet: error: {msg}", file=sys.stderr),
                            on_warning=lambda msg: print(f"sdnet: warning: {msg}", file=sys.stderr),
                            overwrite=args.overwrite, skip_existing=args.skip_existing)
    if result.summary_csv is not None:
        print(f"summary: {result.summary_csv}"
              + (f" ({len(result.flagged)} scan(s) failed the anatomical check)" if result.flagged else ""))
    if result.report is not None:
        print(f"report: {result.report}")
    if result.failed:
        print(f"sdnet: {len(result.failed)} of {result.total} input(s) failed: "
              f"{', '.join(p for p, _ in result.failed)}", file=sys.stderr)
        return 1
    return 0


def _parse_labels(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = int(value)
        except ValueError:
            raise SDNetError(f"--labels must be NAME=VALUE pairs such as RV=1,MYO=2,LV=3, got {text!r}") from None
        if not sep or not name.strip():
            raise SDNetError(f"--labels must be NAME=VALUE pairs such as RV=1,MYO=2,LV=3, got {text!r}")
    return out


def cmd_indices(args: argparse.Namespace) -> int:
    labels = _parse_labels(args.labels)
    spacing = None
    if args.spacing:
        try:
            spacing = [float(v) for v in args.spacing.split(",")]
        except ValueError:
            raise SDNetError(f"--spacing must be dy,dx,dz in mm, got {args.spacing!r}") from None
        if len(spacing) != 3:
            raise SDNetError(f"--spacing must be dy,dx,dz in mm, got {args.spacing!r}")
    if args.pattern:
        try:
            groups = re.compile(args.pattern).groupindex
        except re.error as exc:
            raise SDNetError(f"--pattern is not a regular expression ({exc})") from None
        if not {"subject", "phase"} <= set(groups):
            raise SDNetError("--pattern needs the named groups (?P<subject>...) and (?P<phase>...)")
    ed_es = None
    if args.ed_es:
        try:
            ed, es = (int(v) for v in args.ed_es.split(","))
        except ValueError:
            raise SDNetError(f"--ed-es must be two phase numbers ED,ES, got {args.ed_es!r}") from None
        ed_es = (ed, es)
    kwargs = {"spacing": spacing, "pattern": args.pattern, "info_root": args.info, "ed_es": ed_es}
    series = read_mask_series(args.masks, labels, **kwargs)
    results = [subject_indices(s) for s in series]
    paths = write_indices(results, series, args.out)
    print(paths[2].read_text(), end="")
    for r in results:
        for warning in r.warnings:
            print(f"sdnet: warning: subject {r.subject}: {warning}", file=sys.stderr)
    if results and results[0].volume_unit != "mL":
        print("note: the label maps give no voxel size: volumes and mass are not reported (EF is); pass --spacing")
    if args.reference:
        ref_series = read_mask_series(args.reference, labels, **kwargs)
        reference = [subject_indices(s) for s in ref_series]
        _, agreement_paths = write_agreement(results, reference, args.out, title="predicted vs reference",
                                             test_series=series, reference_series=ref_series)
        print(agreement_paths[1].read_text(), end="")
        paths += agreement_paths
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    paths = export_model(args.checkpoint, args.out, onnx=args.onnx, name=args.name, overwrite=args.overwrite)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    if args.study == "table":
        metrics: tuple[Literal["3d", "slice"], ...] = ("3d", "slice") if args.metric == "both" else (args.metric,)
        markdown, files = write_study_table(args.study_dir, metrics=metrics, reference=args.reference,
                                            snapshot=args.snapshot)
        print(markdown.read_text(), end="")
        print("wrote " + ", ".join(str(f) for f in files))
        return 0
    if args.study == "semi":
        labelled = args.labelled
    else:
        labelled = [args.labelled] if args.study == "factors" and args.labelled else None
    plan = plan_kind(args.study, config_path=args.config, methods=getattr(args, "methods", ("sdnet",)),
                     labelled=labelled, fractions=getattr(args, "fractions", None) or (),
                     mixes=getattr(args, "mixes", ()), channels=getattr(args, "channels", ()),
                     n_z=getattr(args, "nz", ()), protocol=args.protocol, folds=args.folds, seeds=args.seeds,
                     data_root=args.data, overrides=args.overrides)
    if args.slurm:
        script = write_sbatch(plan, args.out, args.argv, cpus=args.slurm_cpus, max_parallel=args.slurm_max_parallel)
        print(f"wrote {script} ({len(plan.runs)} tasks); submit with: sbatch {script}")
        return 0
    if args.dry_run:
        width = len(str(len(plan.runs) - 1))
        for spec in plan.runs:
            state = run_state(args.out / spec.name)
            print(f"{spec.index:>{width}}  {spec.name:<32} {state:<8} {' '.join(spec.grid_overrides)}")
        print(f"{len(plan.runs)} runs; nothing trained (--dry-run)")
        return 0
    run_index = args.run_index if args.run_index is not None else array_task_index()
    summary = run_study(plan, args.out, jobs=args.jobs, run_index=run_index,
                        on_event=lambda event: print(event.line(), flush=True))
    print(f"study {args.out}: {len(summary.finished)} finished, {len(summary.skipped)} skipped, "
          f"{len(summary.failed)} failed; table: sdnet experiment table {args.out}")
    if summary.failed:
        raise SDNetError(f"{len(summary.failed)} run(s) failed: "
                         + "; ".join(f"{name} ({msg})" for name, msg in summary.failed[:3]))
    return 0


def _modality_pair(text: str) -> tuple[str, str]:
    """``--modalities MR,CT`` -> ("MR", "CT"); exactly two names."""
    pair = [m.strip() for m in text.split(",") if m.strip()]
    if len(pair) != 2:
        raise SDNetError(f"--modalities needs two names, got {text!r}")
    return pair[0], pair[1]


def cmd_analyse(args: argparse.Namespace) -> int:
    ckpt = Path(args.checkpoint)
    out = args.out or (ckpt if ckpt.is_dir() else ckpt.parent) / "analysis"
    if args.analysis == "report":
        analyse_report(ckpt, out, data_root=args.data)
        print(f"wrote {out / 'report.html'}")
        return 0
    if args.analysis == "transfer":
        runs.analyse_transfer(ckpt, out, data_root=args.data, modalities=_modality_pair(args.modalities))
    elif args.analysis == "disentanglement":
        runs.analyse_disentanglement(ckpt, out, data_root=args.data, modalities=_modality_pair(args.modalities))
    elif args.analysis == "modality":
        runs.analyse_modality(ckpt, out, data_root=args.data, modality=args.modality)
    elif args.analysis == "volume":
        runs.analyse_volume(ckpt, out, data_root=args.data, baseline=args.baseline)
    elif args.analysis == "gradients":
        analyse_gradients(ckpt, out, data_root=args.data, batches=args.batches, batch_size=args.batch_size,
                          seed=args.seed)
    else:
        runs.analyse_arithmetic(ckpt, out, data_root=args.data, images=args.images)
    name = args.analysis
    print((out / f"{name}.md").read_text(), end="")
    print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")
    return 0


COMMANDS = {"phantom": cmd_phantom, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "indices": cmd_indices, "export": cmd_export, "experiment": cmd_experiment, "analyse": cmd_analyse}
