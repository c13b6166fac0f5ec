"""Safe checkpoint files: a checksum over the content, the replaced file kept until the new one is good,
and a NaN stop that leaves the last good checkpoint as it was."""

import json
import os

import pytest
import torch

from ddnn.checkpoint import (FORMAT, digest, load_checkpoint, load_checkpoint_or_previous, previous_of,
                                    save_checkpoint)
from ddnn.experiments import train
from ddnn.errors import DdnnError


def small_ckpt(value: float = 1.0) -> dict:
    return {"config": {"a": 1}, "epoch": 3, "state": {"w": torch.full((64,), value), "b": torch.arange(5)},
            "history": [{"epoch": 1, "loss": 0.5}]}


def flip_byte_in_tensor_data(path, needle: bytes) -> None:
    """Change one byte inside the stored tensor bytes (the zip archive itself stays readable)."""
    raw = bytearray(path.read_bytes())
    at = raw.find(needle)
    assert at > 0, "tensor bytes not found in the file"
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))


def test_digest_depends_on_every_value_and_not_on_dict_order():
    a = small_ckpt()
    assert digest(a) == digest(dict(reversed(list(a.items()))))
    for change in (lambda c: c["state"]["w"].__setitem__(7, 1.0000001), lambda c: c["history"][0].update(loss=0.6),
                   lambda c: c.update(epoch=4), lambda c: c["state"].update(b=torch.arange(5).float())):
        b = small_ckpt()
        change(b)
        assert digest(b) != digest(a)


def test_save_writes_format_and_digest_and_keeps_the_previous(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(small_ckpt(1.0), path)
    assert not previous_of(path).exists()
    save_checkpoint(small_ckpt(2.0), path)
    assert previous_of(path).name == "last.prev.pt"
    assert load_checkpoint(previous_of(path))["state"]["w"][0] == 1.0
    now = load_checkpoint(path)
    assert now["format"] == FORMAT and now["digest"] == digest(now) and now["state"]["w"][0] == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]  # no temp files left


def test_flipped_bit_is_detected_and_the_previous_one_is_used(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(small_ckpt(1.0), path)
    save_checkpoint(small_ckpt(3.0), path)
    flip_byte_in_tensor_data(path, torch.full((64,), 3.0).numpy().tobytes())
    with pytest.raises(DdnnError, match=r"last.pt is corrupt \(its content does not match its checksum\); "
                                        r"the previous good one is kept as last.prev.pt"):
        load_checkpoint(path)
    said = []
    ckpt, used = load_checkpoint_or_previous(path, said.append)
    assert used == previous_of(path) and ckpt["state"]["w"][0] == 1.0
    assert "corrupt" in said[0] and "using last.prev.pt (epoch 3)" in said[0]


def test_truncated_file_falls_back_too(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(small_ckpt(1.0), path)
    save_checkpoint(small_ckpt(5.0), path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DdnnError, match="corrupt or truncated"):
        load_checkpoint(path)
    ckpt, used = load_checkpoint_or_previous(path, lambda *_: None)
    assert used.name == "last.prev.pt" and ckpt["state"]["w"][0] == 1.0


def test_no_previous_means_the_error_stands(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(small_ckpt(1.0), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DdnnError, match="last.pt is corrupt or truncated"):
        load_checkpoint_or_previous(path, lambda *_: None)


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(small_ckpt(1.0), path)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(small_ckpt(9.0), path)
    assert path.read_bytes() == before and not previous_of(path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_nan_stop_names_step_and_term_and_keeps_the_last_checkpoint(tiny_config, tmp_path, monkeypatch):
    """A loss term that turns NaN in epoch 2 stops the run there; last.pt still holds epoch 1, intact."""
    from ddnn.methods.ekd import EmbeddedKD as EKD

    original = EKD.forward_train
    calls = {"n": 0}

    def poisoned(self, x, y):
        losses, logits = original(self, x, y)
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 2:  # epoch 2, step 1
            losses["kl.resnet8"] = losses["kl.resnet8"] * float("nan")
        return losses, logits

    monkeypatch.setattr(EKD, "forward_train", poisoned)
    cfg = tiny_config("train.epochs=3")
    steps_per_epoch = -(-int(round(160 * 0.8 * 0.8)) // 32)
    out = tmp_path / "run"
    with pytest.raises(DdnnError, match=r"loss became non-finite at epoch 2, step 1 \(term\(s\): kl.resnet8\)"):
        train(cfg, out, log=lambda *_: None)
    last = load_checkpoint(out / "last.pt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["state"].values() if v.is_floating_point())
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert not (out / "results.json").exists()
    assert os.access(out / "last.pt", os.R_OK)
