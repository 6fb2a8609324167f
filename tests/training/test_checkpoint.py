import os
import pickle

import pytest
import torch

from sdnet.checkpoint import load_checkpoint, save_checkpoint
from sdnet.errors import CheckpointError


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ["SDNET_PWNED"],))


def test_roundtrip_plain_state(tmp_path):
    state = {"step": 3, "model": {"w": torch.arange(4.0)}, "history": [{"val": 0.5}], "config": {"a": {"b": 1}}}
    path = save_checkpoint(state, tmp_path / "c.pt")
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert not (tmp_path / "c.pt.tmp").exists()
    assert load_checkpoint(tmp_path / "c.pt")["history"] == [{"val": 0.5}]


def test_crafted_checkpoint_is_refused_without_running_code(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("SDNET_PWNED", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"format": "sdnet-checkpoint", "version": 1, "payload": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    # a raw pickle (not a torch zip) is refused too
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_missing_corrupt_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not an sdnet checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match=r"no best\.pt"):
        load_checkpoint(tmp_path)
