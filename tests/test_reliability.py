"""Faults a trusted tool survives (issue 16): read-only and full output folders, signals, resumed epochs, refusals.

Where the fault is about processes and files, the test uses real ones: ``sdnet`` subprocesses, a read-only bind
mount and a small full tmpfs inside an unprivileged mount namespace (``unshare -rm``; skipped where the kernel does
not allow one), and a file-size limit (``RLIMIT_FSIZE``, as ``ulimit -f``). Each asserts the one-line message, the
exit status and that no earlier result changed. docs/reliability.md lists every case with its test (checked by
``test_reliability_doc_names_real_tests``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from sdnet.checkpoint import load_checkpoint, save_checkpoint
from sdnet.config import ConfigError, apply_overrides, to_dict
from sdnet.errors import CheckpointError, SDNetError
from sdnet.training import Trainer

from .helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------- helpers
def _sdnet(args: list[str], *, limit_bytes: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m sdnet.cli ARGS`` (optionally under a file-size limit) and return the finished process."""
    def preexec() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "sdnet.cli", *args], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The process failed with exit status 2 and exactly one stderr line that starts with ``sdnet: error:`` and
    contains every needle (no traceback)."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("sdnet: error:"), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _tree_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _config_file(path: Path, **train: object) -> Path:
    cfg = to_dict(tiny_config("", **train))
    del cfg["data"]["root"]
    path.write_text(yaml.safe_dump(cfg))
    return path


def _scan(phantom: Path) -> Path:
    sid = json.loads((phantom / "phantom.json").read_text())["subjects"][0]["id"]
    return phantom / sid / f"{sid}_MR_phase00.nii.gz"


def _debris(folder: Path) -> list[str]:
    """Temporary or empty files a failed write might have left."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and (".tmp" in p.name or p.stat().st_size == 0)]


@pytest.fixture(scope="module")
def run(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run (best.pt, last.pt, result.json) to predict with, evaluate and resume."""
    out = tmp_path_factory.mktemp("reliability") / "run"
    Trainer(tiny_config(tiny_phantom, epochs=1, steps_per_epoch=3), out).fit()
    return out


def _unshare_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


needs_unshare = pytest.mark.skipif(not _unshare_available(),
                                   reason="needs an unprivileged mount namespace (unshare -rm) for real mounts")


def _in_namespace(script: str, commands: list[list[str]], tmp_path: Path, *, watch: Path | None = None
                  ) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Run ``script`` (shell: the mounts), then each ``sdnet`` command inside one mount namespace; return each
    command's exit status, stdout and stderr, and the files under ``watch`` before and after the commands (size and
    SHA-256; a tmpfs mounted by ``script`` is gone once the namespace ends)."""
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import hashlib, json, pathlib, subprocess, sys\n"
        f"commands, watch = {commands!r}, {str(watch) if watch else None!r}\n"
        "def files():\n"
        "    if watch is None: return {}\n"
        "    return {str(p): [p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()]\n"
        "            for p in sorted(pathlib.Path(watch).rglob('*')) if p.is_file()}\n"
        "before, out = files(), []\n"
        "for c in commands:\n"
        "    p = subprocess.run([sys.executable, '-m', 'sdnet.cli', *c], capture_output=True, text=True)\n"
        "    out.append({'rc': p.returncode, 'stdout': p.stdout, 'stderr': p.stderr})\n"
        "print(json.dumps([out, {'before': before, 'after': files()}]))\n")
    proc = subprocess.run(["unshare", "-rm", "sh", "-ec", f"{script}\n{sys.executable} {driver}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results, listing = json.loads(proc.stdout.strip().splitlines()[-1])
    return results, listing


class _Done:
    def __init__(self, result: dict[str, object]) -> None:
        self.returncode, self.stdout, self.stderr = result["rc"], result["stdout"], result["stderr"]


# ------------------------------------------------------------------------------------------ 3: read-only / full
@needs_unshare
def test_read_only_output_folder(run: Path, tiny_phantom: Path, tmp_path: Path):
    ro = tmp_path / "ro"
    shutil.copytree(run, ro / "run")  # an earlier result that must stay as it is
    before = _tree_digest(ro)
    config = _config_file(tmp_path / "c.yaml")
    commands = [
        ["train", "--config", str(config), "--data", str(tiny_phantom), "--out", str(ro / "new"), "--no-progress"],
        ["train", "--resume", str(ro / "run"), "--set", "train.epochs=2", "--no-progress"],
        ["predict", "--checkpoint", str(run), "--input", str(_scan(tiny_phantom)), "--out", str(ro / "masks")],
        ["evaluate", "--checkpoint", str(run), "--out", str(ro / "eval")],
        ["phantom", "--out", str(ro / "phantom"), "--subjects", "2", "--size", "32"],
        ["export", "--checkpoint", str(run), "--out", str(ro / "export")],
    ]
    results, _ = _in_namespace(f"mount --bind {ro} {ro}\nmount -o remount,ro,bind {ro}", commands, tmp_path)
    for command, result in zip(commands, results, strict=True):
        err = _one_line_error(_Done(result), "read-only file system")  # type: ignore[arg-type]
        assert str(ro) in err, (command, err)
    assert _tree_digest(ro) == before  # nothing written, nothing changed


@needs_unshare
def test_full_filesystem_leaves_no_finished_looking_file(run: Path, tiny_phantom: Path, tmp_path: Path):
    full = tmp_path / "full"
    full.mkdir()
    config = _config_file(tmp_path / "c.yaml", epochs=1, steps_per_epoch=3)
    # a 256 KiB tmpfs with an earlier result, filled to 32 KiB free: room for the write checks and the small files,
    # not for a checkpoint (~0.5 MB) or a QC figure
    script = (f"mount -t tmpfs -o size=256k sdnet-full {full}\n"
              f"mkdir {full}/earlier && echo kept > {full}/earlier/result.txt\n"
              f"dd if=/dev/zero of={full}/filler bs=1k count=216 2>/dev/null\n")
    commands = [
        ["train", "--config", str(config), "--data", str(tiny_phantom), "--out", str(full / "run"), "--no-progress"],
        ["predict", "--checkpoint", str(run), "--input", str(_scan(tiny_phantom)), "--out", str(full / "masks"),
         "--probabilities"],
    ]
    results, listing = _in_namespace(script, commands, tmp_path, watch=full)
    train, predict = (_Done(r) for r in results)
    _one_line_error(train, "no space left on the device", "last.pt")  # type: ignore[arg-type]
    _one_line_error(predict, "no space left on the device")  # type: ignore[arg-type]
    before, after = listing["before"], listing["after"]  # type: ignore[index]
    assert {k: v for k, v in after.items() if k in before} == before  # the earlier result is untouched
    new = {Path(k): v for k, v in after.items() if k not in before}
    assert not [p for p in new if ".tmp" in p.name or p.name == ".lock"], new  # no debris, no stale lock
    assert not [p for p, (size, _) in new.items() if size == 0 and p.suffix in (".gz", ".pt", ".json")], new
    assert not [p for p in new if p.name in ("last.pt", "best.pt", "result.json")]  # nothing looks finished


def test_file_size_limit_fails_in_one_line_and_keeps_the_previous_checkpoint(run: Path, tmp_path: Path):
    """``ulimit -f``: the first checkpoint larger than the limit fails; the earlier ``last.pt`` stays loadable and no
    temporary file is left; predicting under the limit leaves no truncated mask."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    last = hashlib.sha256((copy / "last.pt").read_bytes()).hexdigest()
    size = (copy / "last.pt").stat().st_size
    proc = _sdnet(["train", "--resume", str(copy), "--set", "train.epochs=2", "--no-progress"],
                  limit_bytes=size // 2)
    _one_line_error(proc, "file too large", "last.pt")
    assert hashlib.sha256((copy / "last.pt").read_bytes()).hexdigest() == last
    assert load_checkpoint(copy / "last.pt")["step"] == 3
    assert not _debris(copy), _debris(copy)


def test_file_size_limit_during_predict_leaves_no_truncated_output(run: Path, tiny_phantom: Path, tmp_path: Path):
    out = tmp_path / "masks"
    proc = _sdnet(["predict", "--checkpoint", str(run), "--input", str(_scan(tiny_phantom)), "--out", str(out),
                   "--no-qc", "--probabilities"], limit_bytes=2000)  # room for a mask, not for the probabilities
    _one_line_error(proc, "_prob.nii.gz", "file too large")
    assert not list(out.glob("*_prob.nii.gz")) and not _debris(out)
    for mask in out.glob("*.nii.gz"):  # whatever is there is complete
        assert nib.load(str(mask)).get_fdata().shape[:2] == (32, 32)


# -------------------------------------------------------------------------------------- 6: resumed epoch means
def test_resume_mid_epoch_keeps_the_epoch_means(tiny_phantom: Path, tmp_path: Path):
    config = tiny_config(tiny_phantom, epochs=2, steps_per_epoch=6, checkpoint_every=1, log_every=1)
    whole = Trainer(config, tmp_path / "whole").fit()
    first = Trainer(apply_overrides(config, ["train.max_steps=4"]), tmp_path / "cut").fit()  # stops mid-epoch
    assert first.epochs == 0 and load_checkpoint(tmp_path / "cut" / "last.pt")["epoch_count"] == 4
    resumed = Trainer.resume(tmp_path / "cut", overrides=["train.max_steps=0"]).fit()
    for a, b in zip(whole.history, resumed.history, strict=True):
        means = {k: v for k, v in a.items() if k.startswith("mean_")}
        assert means and means == {k: b[k] for k in means}


# ----------------------------------------------------------------------------------------------- Ctrl-C / SIGTERM
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_last_pt_and_names_resume(tiny_phantom: Path, tmp_path: Path, sig: signal.Signals):
    config = _config_file(tmp_path / "c.yaml", epochs=1, steps_per_epoch=100000, checkpoint_every=100000,
                          log_every=1)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "sdnet.cli", "train", "--config", str(config), "--data",
                             str(tiny_phantom), "--out", str(out), "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        log = out / "log.jsonl"
        if log.is_file() and log.read_text().count('"event": "step"') >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{sig.name} at step" in err and f"sdnet train --resume {out}" in err
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert load_checkpoint(out / "last.pt")["step"] == steps[-1]  # the state of the last whole iteration
    assert not (out / ".lock").exists()


# ---------------------------------------------------------------------------------- 5: bad numbers and devices
def test_unknown_device_is_one_line(tiny_phantom: Path, tmp_path: Path):
    config = _config_file(tmp_path / "c.yaml")
    _one_line_error(_sdnet(["train", "--config", str(config), "--data", str(tiny_phantom), "--out",
                            str(tmp_path / "run"), "--set", "train.device=banana"]), "'banana' is not a torch device")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_divergence_is_one_line_naming_step_and_term_and_keeps_last_pt(run: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = hashlib.sha256((copy / "last.pt").read_bytes()).hexdigest()
    proc = _sdnet(["train", "--resume", str(copy), "--set", "train.epochs=2", "--set", "optim.lr=1e6", "--no-progress"])
    err = _one_line_error(proc, "step 4:", "non-finite term(s):", "last.pt keeps the last periodic checkpoint")
    assert re.search(r"non-finite term\(s\): \w+=(nan|inf)", err), err
    assert hashlib.sha256((copy / "last.pt").read_bytes()).hexdigest() == before


def test_two_inputs_with_one_output_name_are_refused(run: Path, tiny_phantom: Path, tmp_path: Path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(_scan(tiny_phantom), tmp_path / folder / "scan.nii.gz")
    _one_line_error(_sdnet(["predict", "--checkpoint", str(run), "--input", str(tmp_path / "a" / "scan.nii.gz"),
                            str(tmp_path / "b" / "scan.nii.gz"), "--out", str(tmp_path / "out")]),
                    "would both be written as scan_seg.nii.gz")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.nii.gz"))


# ------------------------------------------------------------------- issue 25: nothing overwritten, nothing left behind
def test_a_second_predict_into_one_folder_is_refused_unless_overwrite_or_skip_existing(
    run: Path, tiny_phantom: Path, tmp_path: Path
):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    shutil.copy(_scan(tiny_phantom), first / "scan.nii.gz")
    other = sorted(tiny_phantom.glob("*/*_MR_phase01.nii.gz"))[-1]  # another subject's scan, the same file name
    shutil.copy(other, second / "scan.nii.gz")
    out = tmp_path / "out"
    base = ["predict", "--checkpoint", str(run), "--out", str(out), "--input"]
    assert _sdnet([*base, str(first)]).returncode == 0
    before = _tree_digest(out)
    err = _one_line_error(_sdnet([*base, str(second)]), "already holds", "scan_seg.nii.gz", "--overwrite",
                          "--skip-existing")
    assert "qc" not in err.split("(")[0]
    assert _tree_digest(out) == before  # nothing replaced, nothing added
    skipped = _sdnet([*base, str(second), "--skip-existing"])
    assert skipped.returncode == 0 and "left as it is (--skip-existing)" in skipped.stdout
    assert _tree_digest(out)["scan_seg.nii.gz"] == before["scan_seg.nii.gz"]
    replaced = _sdnet([*base, str(second), "--overwrite"])
    assert replaced.returncode == 0, replaced.stderr
    assert nib.load(str(out / "scan_seg.nii.gz")).shape == nib.load(str(other)).shape
    assert not _debris(out)
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 2 and str(second / "scan.nii.gz") in rows[1]  # one row for the one name, the new scan
    both = _sdnet([*base, str(second), "--overwrite", "--skip-existing"])  # argparse's usage error
    assert both.returncode == 2 and "not allowed with argument --overwrite" in both.stderr


def test_export_into_a_used_folder_is_refused_unless_overwrite_and_files_follow_the_umask(run: Path, tmp_path: Path):
    out = tmp_path / "model"

    def export(*extra: str, umask: int = 0o022) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sdnet.cli", "export", "--checkpoint", str(run), "--out",
                               str(out), *extra], capture_output=True, text=True, timeout=300,
                              preexec_fn=lambda: os.umask(umask))

    assert export().returncode == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes == {"model.safetensors": 0o644, "model.json": 0o644, "MODEL_CARD.md": 0o644}, modes
    before = _tree_digest(out)
    _one_line_error(export(), "already holds", "model.safetensors", "--overwrite")
    assert _tree_digest(out) == before
    assert export("--overwrite", umask=0o077).returncode == 0
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o600}  # the umask decides, for every file


def test_sigterm_stops_predict_cleanly_and_a_later_run_removes_stale_temporaries(
    run: Path, tiny_phantom: Path, tmp_path: Path
):
    scans = tmp_path / "scans"
    scans.mkdir()
    for k in range(40):
        shutil.copy(_scan(tiny_phantom), scans / f"scan{k:02d}.nii.gz")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "sdnet.cli", "predict", "--checkpoint", str(run), "--input", str(scans), "--out",
            str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(out.glob("scan0*_seg.nii.gz")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("sdnet: warning:")]  # QC of scans
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("sdnet: stopped: SIGTERM after") and "--skip-existing" in lines[0]
    done = sorted(out.glob("*_seg.nii.gz"))
    assert 0 < len(done) < 40 and not _debris(out)
    assert len((out / "predictions.csv").read_text().splitlines()) == len(done) + 1
    # a SIGKILLed run's temporary (its process is gone) is removed, and named, by the next run into the folder
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".tmp-{dead.pid}-scan39_seg.nii.gz"
    stale.write_bytes(b"half a mask")
    rest = _sdnet([*args[3:], "--skip-existing"])
    assert rest.returncode == 0, rest.stderr
    assert "removed 1 temporary file(s) that killed runs left" in rest.stdout and stale.name in rest.stdout
    assert not stale.exists() and len(list(out.glob("*_seg.nii.gz"))) == 40
    assert len((out / "predictions.csv").read_text().splitlines()) == 41


def test_indices_refuse_unknown_label_values_and_flag_a_zero_ejection_fraction(tmp_path: Path):
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((12, 12, 3, 2), np.uint8)
    mask[2:6, 2:6, :, :] = 3
    mask[7:9, 7:9, :, 1] = 7  # not a label of the map
    nib.save(nib.Nifti1Image(mask, np.diag([1.5, 1.5, 8.0, 1.0])), str(masks / "case_seg.nii.gz"))
    _one_line_error(_sdnet(["indices", "--masks", str(masks), "--out", str(tmp_path / "ind")]),
                    "case_seg.nii.gz", "label values [7]", "--labels")
    named = _sdnet(["indices", "--masks", str(masks), "--out", str(tmp_path / "ind"), "--labels",
                    "RV=1,MYO=2,LV=3,OTHER=7"])
    assert named.returncode == 0, named.stderr  # named, the value is a structure of its own
    # an LV that never changes: EF 0 and ED = ES are flagged, not reported as a finding
    mask[mask == 7] = 0
    nib.save(nib.Nifti1Image(mask, np.diag([1.5, 1.5, 8.0, 1.0])), str(masks / "case_seg.nii.gz"))
    flat = _sdnet(["indices", "--masks", str(masks), "--out", str(tmp_path / "ind2")])
    assert flat.returncode == 0, flat.stderr
    assert "sdnet: warning: subject case: ED and ES are the same phase (0)" in flat.stderr
    assert "LV EF 0.0 %" in flat.stderr
    row = (tmp_path / "ind2" / "indices.csv").read_text().splitlines()[1]
    assert "ED and ES are the same phase" in row
    assert "⚠ not findings" in (tmp_path / "ind2" / "indices.md").read_text()


def test_text_and_pickle_checkpoints_and_broken_yaml_are_one_plain_line(tiny_phantom: Path, tmp_path: Path):
    (tmp_path / "notes.pt").write_text("this is a text file, not a checkpoint\n")
    _one_line_error(_sdnet(["evaluate", "--checkpoint", str(tmp_path / "notes.pt")]), "notes.pt: not a checkpoint")
    import pickle

    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    err = _one_line_error(_sdnet(["evaluate", "--checkpoint", str(tmp_path / "raw.pt")]), "raw.pt: refused")
    assert "UserWarning" not in err
    (tmp_path / "bad.yaml").write_text("model:\n  image_size: [1, 2\n train: x\n")
    _one_line_error(_sdnet(["train", "--config", str(tmp_path / "bad.yaml"), "--data", str(tiny_phantom), "--out",
                            str(tmp_path / "r")]), "bad.yaml:3:7: not valid YAML")


# ------------------------------------------------------------------------------------------------ smaller items
def test_restart_before_the_first_checkpoint_starts_a_fresh_log(tiny_phantom: Path, tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"event": "step", "step": 1, "epoch": 0, "stale": true}\n')  # a killed run's
    Trainer(tiny_config(tiny_phantom, epochs=1, steps_per_epoch=3, log_every=1), out).fit()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert not any(r.get("stale") for r in records)
    assert [r["step"] for r in records if r["event"] == "step"] == [1, 2, 3]


def test_a_folder_with_a_run_is_never_trained_over(run: Path, tiny_phantom: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = _tree_digest(copy)
    with pytest.raises(SDNetError, match="already holds a run"):
        Trainer(tiny_config(tiny_phantom), copy).fit()
    assert _tree_digest(copy) == before


def test_phantom_refuses_an_existing_folder_without_force(tmp_path: Path):
    out = tmp_path / "phantom"
    base = ["phantom", "--out", str(out), "--size", "32", "--slices", "3", "--phases", "2"]
    assert _sdnet([*base, "--subjects", "3"]).returncode == 0
    again = _sdnet([*base, "--subjects", "3"])
    assert again.returncode == 0 and "nothing to write" in again.stdout  # the same phantom: left as it is
    before = _tree_digest(out)
    _one_line_error(_sdnet([*base, "--subjects", "2"]), "already holds a phantom written with other settings",
                    "--force")
    assert _tree_digest(out) == before
    assert _sdnet([*base, "--subjects", "2", "--force"]).returncode == 0
    subjects = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(subjects) == 2  # no stale third subject
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    _one_line_error(_sdnet(["phantom", "--out", str(tmp_path / "other"), "--subjects", "2"]), "other files")


def test_evaluate_a_checkpoint_without_a_split(run: Path, tmp_path: Path):
    state = load_checkpoint(run / "best.pt")
    del state["split"]
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, tmp_path / "nosplit.pt")
    _one_line_error(_sdnet(["evaluate", "--checkpoint", str(tmp_path / "nosplit.pt"), "--out", str(tmp_path / "e")]),
                    "no subject split is stored", "sdnet predict")


def test_evaluate_notices_a_data_folder_that_no_longer_matches_the_split(run: Path, tmp_path: Path):
    from sdnet.data.phantom import PhantomConfig, write_phantom

    other = tmp_path / "other"
    write_phantom(other, PhantomConfig(n_subjects=3, image_size=32, n_slices=3, n_phases=3, seed=5))
    shutil.rmtree(other / json.loads((other / "phantom.json").read_text())["subjects"][0]["id"])
    meta = json.loads((other / "phantom.json").read_text())
    meta["subjects"] = meta["subjects"][1:]
    (other / "phantom.json").write_text(json.dumps(meta))
    _one_line_error(_sdnet(["evaluate", "--checkpoint", str(run), "--data", str(other), "--out", str(tmp_path / "e")]),
                    "of the run's saved split are not in this data folder")


def test_unsafe_checkpoint_message_is_plain_and_never_suggests_unsafe_loading(tmp_path: Path):
    class Evil:
        def __reduce__(self):  # would run code when unpickled
            return (os.system, ("echo pwned",))

    torch.save({"format": "sdnet-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(info.value)
    assert "refused to load" in message and "\x1b" not in message and "weights_only" not in message
    assert "\n" not in message and ("GLOBAL" in message or "plain values" in message)


def test_batch_size_has_an_upper_bound():
    with pytest.raises(ConfigError, match=r"train.batch_size=1000 is above 512"):
        apply_overrides(tiny_config(), ["train.batch_size=1000"])


def test_stopping_before_the_first_epoch_reports_no_epoch_minus_one(tiny_phantom: Path, tmp_path: Path):
    config = _config_file(tmp_path / "c.yaml", steps_per_epoch=50, epochs=1)
    proc = _sdnet(["train", "--config", str(config), "--data", str(tiny_phantom), "--out", str(tmp_path / "run"),
                   "--set", "train.max_steps=2", "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    assert "epoch -1" not in proc.stdout and "before a whole epoch" in proc.stdout


def test_checkpoint_mismatch_is_one_short_line(run: Path, tiny_phantom: Path):
    bigger = apply_overrides(tiny_config(tiny_phantom), ["model.unet_filters=8"])
    trainer = Trainer(bigger, run.parent / "other")
    with pytest.raises(CheckpointError) as info:
        trainer.load_state_dict(load_checkpoint(run / "last.pt"))
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert re.search(r"\d+ of another shape \(e.g. ", message), message


def test_nifti_extensions_match_in_any_case(tmp_path: Path):
    from sdnet.data.readers import read_acdc

    acdc = tmp_path / "acdc" / "patient001"
    acdc.mkdir(parents=True)
    (acdc / "Info.cfg").write_text("ED: 1\nES: 2\n")
    import numpy as np

    image = nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 2)).astype(np.float32), np.eye(4))
    label = nib.Nifti1Image(np.ones((16, 16, 2), np.uint8), np.eye(4))
    for frame in (1, 2):
        nib.save(image, str(acdc / f"patient001_frame{frame:02d}.NII.GZ"))
        nib.save(label, str(acdc / f"patient001_frame{frame:02d}_gt.Nii.Gz"))
    _, volumes = read_acdc(tmp_path / "acdc", include_unlabelled=False)
    assert len(volumes) == 2 and all(v.label is not None for v in volumes)


# ------------------------------------------------------------------------------------------------ the matrix doc
def _test_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        names |= {f"{path.relative_to(ROOT).as_posix()}::{node.name}" for node in ast.walk(tree)
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    return names


def test_reliability_doc_names_real_tests():
    """Every test docs/reliability.md names exists, and every fault test of this module is in the doc."""
    doc = (ROOT / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"`(tests/[\w/]+\.py::test_\w+)`", doc))
    assert named, "docs/reliability.md names no tests"
    existing = _test_names()
    assert not named - existing, f"the doc names tests that do not exist: {sorted(named - existing)}"
    here = {n for n in existing if n.startswith("tests/test_reliability.py::")}
    here.discard("tests/test_reliability.py::test_reliability_doc_names_real_tests")
    assert not here - named, f"fault tests missing from docs/reliability.md: {sorted(here - named)}"
