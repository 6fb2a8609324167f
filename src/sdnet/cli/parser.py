"""The ``sdnet`` argument parser: one ``_add_<command>`` per sub-command, assembled by :func:`build_parser`.

Nothing here imports torch or the library's heavy modules, so ``sdnet --help`` is fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sdnet import __version__

_T = TypeVar("_T")

EPILOG_TRAIN = """examples:
  sdnet phantom --out data/phantom
  sdnet train --config configs/phantom_demo.yaml --data data/phantom --out runs/demo
  sdnet train --config configs/phantom_demo.yaml --data data/phantom \
      --set train.max_minutes=5 --set data.labelled_subjects=2
  sdnet train --resume runs/demo                       # continue a killed run from runs/demo/last.pt
  torchrun --standalone --nproc_per_node 2 -m sdnet train --config ... --out runs/ddp   # data parallel
"""

EPILOG_EVAL = """examples:
  sdnet evaluate --checkpoint runs/demo                # best.pt of the run, its own test subjects
  sdnet evaluate --checkpoint runs/demo/last.pt --split val --figures 4
"""


def _add_phantom(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "phantom",
        help="write the built-in synthetic cardiac phantom (NIfTI + JSON)",
        description="Write a synthetic short-axis cardiac phantom: per subject, ED..ES phases of a base-to-apex "
        "stack, rendered as cine-MR-like and CT-like images of the same anatomy, with LV/MYO/RV labels, known "
        "spacing and the true rendering parameters in phantom.json.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--subjects", type=int, default=40, help="number of subjects (default 40)")
    p.add_argument("--size", type=int, default=96, help="image height = width in pixels (default 96)")
    p.add_argument("--slices", type=int, default=8, help="slices per volume, base to apex (default 8)")
    p.add_argument("--phases", type=int, default=5, help="cardiac phases from ED to ES (default 5)")
    p.add_argument("--spacing", type=float, default=2.0, help="in-plane pixel spacing in mm (default 2.0)")
    p.add_argument("--thickness", type=float, default=8.0, help="slice thickness in mm (default 8.0)")
    p.add_argument("--modalities", default="MR,CT", help="comma-separated renderings: MR, CT, BOLD (default MR,CT)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier phantom in --out (its subject folders are removed first); without it a "
                   "non-empty --out is refused unless it already holds this very phantom")


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="train SDNet (semi-supervised when unlabelled images are available)",
        description="Train SDNet with the authors' schedule. Settings come from a YAML config (defaults: the "
        "paper's ACDC configuration) plus --set overrides; the resolved config, the subject split, logs "
        "(log.jsonl, TensorBoard in tb/) and checkpoints (best.pt, last.pt) go to the run folder.",
        epilog=EPILOG_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path,
                   help="YAML run config (see configs/: phantom_demo.yaml, acdc_cpu.yaml, acdc_paper.yaml); "
                   "'default' = the built-in paper-size ACDC model (224 px, 64 base filters: meant for a GPU)")
    p.add_argument("--data", help="dataset folder (overrides data.root)")
    p.add_argument("--out", type=Path, help="run folder (default runs/<date-time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=500 (repeatable)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    p.add_argument("--init-from", type=Path, metavar="CHECKPOINT",
                   help="fine-tune: start from this checkpoint's network weights, subject split and (unless --data) "
                        "dataset, with a fresh optimiser and budget, e.g. to add the LV-volume task: "
                        "--set model.area_regressor=true --set loss.vol=1 --set data.volume_subjects=17")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (file + --set overrides, or the resumed run's) as YAML and exit")


def _add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evaluate",
        help="Dice per class on the held-out test subjects of a run",
        description="Segment the test (or validation) subjects of a run's split and report Dice per class per "
        "volume (3D and the authors' per-slice average), as mean ± std over volumes; writes per_volume.csv and "
        "summary.md, and optional PNG figures.",
        epilog=EPILOG_EVAL,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="a .pt checkpoint or a run folder (uses best.pt)")
    p.add_argument("--data", help="dataset folder (default: the one the run was trained on)")
    p.add_argument("--split", choices=["test", "val"], default="test", help="which subjects (default test)")
    p.add_argument("--out", type=Path, help="output folder (default <run>/eval_<split>)")
    p.add_argument("--figures", type=int, default=4, help="number of example slices in the PNG figure (0 = none)")
    p.add_argument("--save-masks", action="store_true",
                   help="also write predicted and true class maps as NIfTI (<out>/masks/pred, <out>/masks/truth; "
                   "class indices on the model's grid) for `sdnet indices`")


def _add_predict(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "predict",
        help="segment scans (3D / 4D cine NIfTI, DICOM series); masks on each input's own grid and header",
        description="Segment scans with a trained model: 3D NIfTI, 4D cine NIfTI (every phase, one at a time), "
        "folders of them (nnU-Net imagesTs layout: case_0000.nii.gz in, case.nii.gz out) and DICOM series folders "
        "(every series in the folder, told apart by SeriesInstanceUID). Each frame is brought to the model's "
        "orientation convention, preprocessed as in training, segmented slice by slice, and the mask mapped back to "
        "the input's voxel grid and written as uint8 NIfTI in the dataset's label values, with the input's header "
        "(qform and sform; DICOM: the affine of the series). A bad input is reported by name and the others are "
        "still written; the exit status is 1 if any failed.",
        epilog="examples:\n  sdnet predict --checkpoint runs/acdc --input scans/ --out masks/\n"
        "  sdnet predict --checkpoint runs/acdc --input patient001_4d.nii.gz --out masks/ --probabilities\n"
        "  sdnet predict --checkpoint runs/acdc --input dicom/study1 --out masks/ --device cuda",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="a .pt checkpoint or a run folder (uses best.pt)")
    p.add_argument("--input", required=True, nargs="+", type=Path,
                   help="NIfTI files, folders of NIfTI files, or DICOM series folders")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda, cuda:1)")
    p.add_argument("--batch-size", type=int, default=16, help="slices per forward pass (default 16)")
    p.add_argument("--probabilities", action="store_true",
                   help="also write the class probabilities (<name>_prob.nii.gz, float32 X x Y x Z x classes)")
    p.add_argument("--naming", choices=["auto", "suffix", "nnunet"], default="auto",
                   help="output names: <name>_seg.nii.gz (suffix), case_0000 -> case.nii.gz (nnunet); auto "
                   "(default) picks nnunet when every input is named *_0000")
    p.add_argument("--no-qc", action="store_true",
                   help="skip the QC figure per scan (<out>/qc/<name>.png) and the HTML page (<out>/report.html)")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true",
                          help="replace masks (probabilities, QC figures) that earlier runs wrote to --out; without it "
                          "such a run is refused before anything is segmented")
    existing.add_argument("--skip-existing", action="store_true",
                          help="leave scans whose mask is already in --out as they are and segment the others "
                          "(resumes an interrupted run)")


EPILOG_EXPERIMENT = """examples:
  sdnet experiment semi --config experiments/configs/acdc_semi_cpu.yaml --data ../shared/data/acdc_ssl4mis \
      --out studies/ssl4mis --methods unet,gan,selftrain,sdnet --labelled 1,3,7,70 --protocol ssl4mis
  sdnet experiment semi ... --dry-run                  # list the grid with run indices
  sdnet experiment semi ... --run-index $SLURM_ARRAY_TASK_ID   # one run per cluster job
  sdnet experiment semi ... --slurm                    # write <out>/sbatch.sh: a job array, one task per run
  sdnet experiment table studies/ssl4mis               # table.md, table.csv, dice_vs_labels.png
  sdnet experiment mix --config configs/phantom_mrct.yaml --data data/phantom_mrct --out studies/mix \
      --mixes MR:1,CT:1 MR:1,CT:0.125 MR:0.125,CT:1 MR:0.125,CT:0 MR:1,CT:0 --folds 1
  sdnet experiment factors --config configs/phantom_demo.yaml --data data/phantom --out studies/factors --folds 1
"""


def _comma_list(kind: Callable[[str], _T], name: str) -> Callable[[str], list[_T]]:
    def parse(text: str) -> list[_T]:
        try:
            return [kind(item) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a comma-separated list, got {text!r}") from None

    return parse


def _add_runner_options(s: argparse.ArgumentParser, *, default_protocol: str = "paper") -> None:
    """Options every study command shares: config, data, output, protocol, folds, seeds and how to run."""
    s.add_argument("--config", type=Path, help="YAML run config (see configs/ and experiments/configs/)")
    s.add_argument("--data", help="dataset folder (overrides data.root)")
    s.add_argument("--out", required=True, type=Path, help="study folder (created; reused to continue a study)")
    s.add_argument("--protocol", choices=["paper", "ssl4mis"], default=default_protocol,
                   help="paper: seeded 70/15/15 subject split, one fold per test block (default); ssl4mis: the "
                   "release's fixed 70/10/20 lists, one fold")
    s.add_argument("--folds", type=int, help="folds 0..k-1 (default 3 for paper, 1 for ssl4mis)")
    s.add_argument("--seeds", type=int, default=1, help="training seeds per cell (default 1)")
    s.add_argument("--jobs", type=int, default=1,
                   help="runs at a time, each in its own process with cores/jobs threads (default 1)")
    s.add_argument("--run-index", type=int, metavar="K",
                   help="run only run K of the grid (see --dry-run); default: $SLURM_ARRAY_TASK_ID when set")
    s.add_argument("--slurm", action="store_true",
                   help="write <out>/sbatch.sh, a Slurm job array with one task per run, and exit (submit it with "
                   "sbatch; see docs/usage.md)")
    s.add_argument("--slurm-cpus", type=int, default=4, metavar="N", help="--cpus-per-task of each task (default 4)")
    s.add_argument("--slurm-max-parallel", type=int, default=0, metavar="N",
                   help="at most N tasks at once (default: no limit)")
    s.add_argument("--dry-run", action="store_true", help="list the grid with run indices and states; train nothing")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value of every run, e.g. --set train.max_minutes=10 (repeatable)")


def _add_experiment(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "experiment",
        help="studies: grids of training runs (semi, mix, factors) and their result tables (table)",
        description="Reproduce the paper's studies as grids of ordinary runs in one study folder: `semi` the "
        "semi-supervised study (Tables 1 and 2), `mix` the MR/CT mixtures (Table 3), `factors` the factor sizes "
        "(§5.6); `table` summarises a study folder.",
        epilog=EPILOG_EXPERIMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    esub = p.add_subparsers(dest="study", required=True, metavar="STUDY")
    s = esub.add_parser(
        "semi", allow_abbrev=False,
        help="run the semi-supervised grid: methods x label amounts x folds (x seeds)",
        description="Train every method x label amount x fold (x seed) as a run folder "
        "<out>/<method>/l<N>/fold<k> (f<F> for fractions), then test best.pt on the run's test subjects only "
        "and write result.json. Finished runs are skipped, interrupted ones resumed; study.json records the grid.",
        epilog=EPILOG_EXPERIMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--methods", required=True, type=_comma_list(str, "--methods"),
                   help="comma-separated: unet, gan, gan-intensity (GAN + random gamma/contrast), selftrain, sdnet, "
                   "the ablations sdnet-nozrec, sdnet-norec, "
                   "sdnet-nokl, sdnet-nobin, sdnet-round, sdnet-argmax, sdnet-joint, sdnet-noadv and SDNet+ "
                   "(re-rendered images: loss.mix, loss.acons) sdnetplus, sdnetplus-mix, sdnetplus-acons and "
                   "its controls sdnetplus-own (re-rendered with each image's own z) and sdnetplus-input (the "
                   "extra update on the input images, no decoder), sdnetplus-teacher (targets from an EMA "
                   "teacher, train.plus_teacher=0.99), and ganplus-input (sdnetplus-input's step on the GAN's U-Net)")
    amounts = s.add_mutually_exclusive_group(required=True)
    amounts.add_argument("--labelled", type=_comma_list(int, "--labelled"), metavar="N,N,...",
                         help="labelled training subjects per run, e.g. 1,3,7,70 (data.labelled_subjects)")
    amounts.add_argument("--fractions", type=_comma_list(float, "--fractions"), metavar="F,F,...",
                         help="labelled fractions of the training subjects, e.g. 0.1,0.5 (data.labelled_fraction)")
    _add_runner_options(s)
    m = esub.add_parser(
        "mix", allow_abbrev=False,
        help="train SDNet on mixtures of two modalities (paper Table 3); table: Dice per test modality",
        description="One SDNet run per mixture (x fold x seed) in <out>/<mixture>/f1/fold<k>, each with "
        "data.modality_mix set, every training subject labelled (the paper's mixtures are fully supervised; "
        "use a config with data.use_unlabelled false). The config's data.modality must name the modalities "
        "(e.g. MR+CT).",
        epilog=EPILOG_EXPERIMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("--mixes", required=True, nargs="+", metavar="MOD:F,MOD:F",
                   help="mixtures as fractions of the training subjects per modality, e.g. MR:1,CT:1 MR:1,CT:0.125 "
                   "MR:0.125,CT:0")
    _add_runner_options(m)
    f = esub.add_parser(
        "factors", allow_abbrev=False,
        help="train SDNet for every anatomy-channel count C x modality-factor size n_z (paper §5.6)",
        description="One SDNet run per C x n_z (x fold x seed) in <out>/C<C>-nz<n>/...; table: test Dice and the "
        "posterior variance of every z dimension.",
        epilog=EPILOG_EXPERIMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("--channels", type=_comma_list(int, "--channels"), default=[4, 8, 16], metavar="C,C,...",
                   help="anatomy channels C (default 4,8,16)")
    f.add_argument("--nz", type=_comma_list(int, "--nz"), default=[4, 8, 32], metavar="N,N,...",
                   help="modality-factor sizes n_z (default 4,8,32)")
    f.add_argument("--labelled", type=int, default=0, metavar="N",
                   help="labelled training subjects per run (default 0: all, data.labelled_fraction 1)")
    _add_runner_options(f)
    t = esub.add_parser(
        "table",
        help="write the result table of a study folder (table.md, table.csv; semi also dice_vs_labels.png)",
        description="Summarise a study folder. semi: Dice per class and average (mean ± std over test volumes and "
        "folds) per method and label amount, the best average in bold, a paired t-test of the best method against "
        "the second best, and a Dice-vs-labelled-subjects figure (missing runs appear as '—'). mix: Dice per test "
        "modality per mixture. factors: Dice and posterior variances per C x n_z.",
    )
    t.add_argument("study_dir", type=Path, metavar="STUDY_DIR", help="a folder written by `sdnet experiment ...`")
    t.add_argument("--metric", choices=["both", "3d", "slice"], default="both",
                   help="semi: 3D Dice per volume and the authors' per-slice average (default both), or one")
    t.add_argument("--reference", default="unet", metavar="METHOD",
                   help="semi: report every method's paired difference against this one (default unet)")
    t.add_argument("--snapshot", type=int, default=None, metavar="N",
                   help="semi: the table of the runs' best checkpoints as they stood at iteration N "
                   "(train.snapshot_steps; result_s<N>.json) -> table_s<N>.md")


EPILOG_ANALYSE = """examples:
  sdnet analyse transfer --checkpoint runs/mrct --out runs/mrct/analysis     # phantom MR <-> CT, vs the truth
  sdnet analyse modality --checkpoint runs/mrct --modality MR+CT --out runs/mrct/analysis
  sdnet analyse disentanglement --checkpoint runs/mrct                       # phantom: s invariance, probes
  sdnet analyse arithmetic --checkpoint runs/acdc_cpu --out runs/acdc_cpu/analysis
  sdnet analyse volume --checkpoint runs/l1_vol --baseline runs/l1            # LV volume; Dice change it brought
  sdnet analyse report --checkpoint runs/mrct                                 # all of the above, report.html
  sdnet analyse gradients --checkpoint runs/l1 --batches 16                   # which loss term drives which network
"""


def _add_analyse(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "analyse",
        help="analyses of the factors s and z: modality transfer, modality estimation, latent arithmetic",
        description="Analyse a trained SDNet on its own subject split (paper §5.3-5.6): numbers on the split's "
        "test subjects, JSON + Markdown + figures in --out.",
        epilog=EPILOG_ANALYSE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    asub = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    helps = {
        "transfer": "render each test anatomy with another subject's z of the other modality (g(s_A, z_B)); on a "
        "multi-modality dataset (the phantom) score it against the true rendering, beside histogram matching",
        "modality": "predict the modality from z with logistic regression (all dimensions and each alone), the "
        "per-dimension posterior variance and KL, and the distance correlation of s and z",
        "disentanglement": "on the phantom: invariance of s across the two renderings of one anatomy, what z "
        "predicts of the true rendering and anatomical parameters (ridge R² on held-out subjects), dCor(s, z)",
        "report": "every analysis that applies to the checkpoint's data, on one HTML page (report.html)",
        "arithmetic": "anatomy-channel operations (move MYO into LV, swap, permute) and the z-interpolation grid "
        "with its correlation and difference images (paper Figures 7 and 8)",
        "volume": "LV volume of the test volumes from the area regressor on s and from the model's segmentation, "
        "vs the truth (mL when the voxel size is known; paired t-tests); with --baseline, the Dice change "
        "(paper §5.2)",
        "gradients": "which loss term drives which network: per-term gradient norms, shares of each generator "
        "step's gradient and cosines, on f_anatomy, f_modality, g and h (our diagnostic); on training batches",
    }
    for name, text in helps.items():
        a = asub.add_parser(name, help=text.split(";")[0], description=text)
        a.add_argument("--checkpoint", required=True, type=Path, help="a run folder (best.pt) or a .pt file")
        a.add_argument("--data", help="dataset folder, if it moved since training")
        a.add_argument("--out", type=Path, help="output folder (default: <run>/analysis)")
        if name in ("transfer", "disentanglement"):
            a.add_argument("--modalities", default="MR,CT", help="the two renderings, comma-separated (default MR,CT)")
        if name == "modality":
            a.add_argument("--modality", default="MR+CT",
                           help="renderings to tell apart, joined by '+' (default MR+CT; MR+BOLD for the subtle pair)")
        if name == "arithmetic":
            a.add_argument("--images", type=int, default=3, help="test images in the channel figure (default 3)")
        if name == "volume":
            a.add_argument("--baseline", type=Path, help="checkpoint to compare test Dice with (e.g. before "
                           "fine-tuning with volume labels); must share the test subjects")
        if name == "gradients":
            a.add_argument("--batches", type=int, default=8, help="batches to average over (default 8)")
            a.add_argument("--batch-size", type=int, help="images per batch (default: the run's train.batch_size)")
            a.add_argument("--seed", type=int, default=0, help="seed of the batch draw and the VAE noise (default 0)")


def _add_indices(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "indices",
        help="cardiac indices (EDV, ESV, SV, EF, LV mass) from label maps; Bland-Altman against a reference",
        description="Per subject: LV, RV and myocardial volume per phase (mL from the true voxel size), LV/RV EDV, "
        "ESV, SV and EF, and LV myocardial mass (1.05 g/mL x myocardial volume at ED). ED/ES come from ACDC "
        "Info.cfg files (--info) when given, else they are the phases of largest and smallest LV volume. Input: "
        "the output of `sdnet predict` or any label maps: 4D cine masks (one subject each) or 3D masks named "
        "<subject>_frameNN / <subject>_phaseNN (or --pattern). Without a known voxel size no mL is reported; EF "
        "still is. With --reference, every index is compared with the reference label maps' (Bland-Altman: bias, "
        "95%% limits of agreement, Pearson r, and a plot).",
        epilog="examples:\n  sdnet indices --masks masks/ --out indices/ --info ACDC/training\n"
        "  sdnet indices --masks pred/ --reference truth/ --out agreement/\n"
        "  sdnet indices --masks pred/ --reference phantom/ --pattern '(?P<subject>phantom_\\d+)_.*phase(?P<phase>"
        "\\d+)' --out ind/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--masks", required=True, nargs="+", type=Path, help="label-map files or folders")
    p.add_argument("--reference", nargs="+", type=Path, help="reference label maps (e.g. ground truth)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--labels", default="RV=1,MYO=2,LV=3",
                   help="structure=value pairs (default ACDC's RV=1,MYO=2,LV=3)")
    p.add_argument("--spacing", help="voxel size dy,dx,dz in mm, overriding the files' headers")
    p.add_argument("--pattern", help="regular expression with groups 'subject' and 'phase' for 3D file names")
    p.add_argument("--info", type=Path, help="folder with ACDC <subject>/Info.cfg files (ED and ES frames)")
    p.add_argument("--ed-es", metavar="ED,ES",
                   help="the ED and ES phase of every subject (0-based), e.g. 0,1 for the SSL4MIS release's frame01 / "
                   "frame02; default: Info.cfg, else the phases of largest / smallest LV volume")


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained model alone (safetensors + config + model card; optionally ONNX) to share it",
        description="Write the network of a checkpoint without optimiser state or pickles: model.safetensors, "
        "model.json (the resolved config, labels, split, seed, test scores found in the run folder, orientation "
        "convention) and MODEL_CARD.md; with --onnx also model.onnx (image -> class probabilities), checked "
        "against PyTorch with onnxruntime. `predict`, `evaluate` and the analyses take the folder as --checkpoint.",
        epilog="examples:\n  sdnet evaluate --checkpoint runs/acdc && sdnet export --checkpoint runs/acdc --out "
        "models/acdc --onnx",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="a .pt checkpoint or a run folder (uses best.pt)")
    p.add_argument("--out", required=True, type=Path, help="the export folder")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (needs pip install 'sdnet[onnx]')")
    p.add_argument("--name", default="", help="the model's name in the card (default: the run folder's name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export in --out (without it a folder holding one is refused)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdnet",
        description="SDNet: disentangle cardiac images into a binary anatomy factor s and a modality factor z "
        "(Chartsias et al., MedIA 2019). Start with `sdnet phantom`, then `sdnet train`, then `sdnet evaluate`.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"sdnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_phantom(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_indices(sub)
    _add_export(sub)
    _add_experiment(sub)
    _add_analyse(sub)
    return parser
