"""Small-image class folders (`data.name=smallfolder`): folders, per-split archives and one archive of
both splits, decoded into memory, cached by content, with one-line errors for broken data. Every
tree here is made by the test itself (PNG, so pixels survive exactly; one JPEG case)."""

import json
import subprocess
import sys
import shutil
import tarfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from ddnn.config import load_config
from ddnn.data import load_dataset
from ddnn.data import smallfolder
from ddnn.data.smallfolder import load_splits
from ddnn.errors import DdnnError

CLASSES = ("cat", "dog", "eel")


def _pixels(split: str, label: int, i: int, size=(8, 8)) -> np.ndarray:
    """A distinct, reproducible image per (split, class, index)."""
    rng = np.random.default_rng(zlib.crc32(f"{split}/{label}/{i}".encode()))
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def make_tree(root, counts=(("train", 6), ("test", 2)), classes=CLASSES, size=(8, 8)):
    """root/<split>/<class>/<i>.png, plus a stray text file that must be ignored."""
    for split, n in counts:
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_pixels(split, label, i, size)).save(folder / f"{i:03d}.png")
            (folder / "README.txt").write_text("not an image")
    return root


def pack(folder, archive, arcname):
    with tarfile.open(archive, "w:gz" if str(archive).endswith("gz") else "w") as tar:
        tar.add(folder, arcname=arcname)
    return archive


def config(root, *extra):
    return load_config(None, ["data.name=smallfolder", f"data.root={root}", "data.val_fraction=0", *extra])


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DDNN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "tree")


def expected(split: str, n: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([_pixels(split, label, i) for label in range(3) for i in range(n)])).permute(0, 3, 1, 2)


def test_folder_is_decoded_exactly_with_sorted_classes_and_own_statistics(tree):
    data = load_dataset(config(tree).data)
    assert data.num_classes == 3 and data.channels == 3 and data.image_size == (8, 8) and data.val is None
    assert torch.equal(data.test.images, expected("test", 2))
    assert data.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    train = expected("train", 6).float() / 255
    assert data.mean == pytest.approx(train.mean((0, 2, 3)).tolist(), abs=1e-6)
    assert data.std == pytest.approx(train.transpose(0, 1).flatten(1).std(1).tolist(), abs=1e-6)
    assert data.train.images.dtype == torch.uint8 and len(data.train) == 18


def test_archives_in_every_layout_give_the_same_tensors(tree, tmp_path):
    reference, _ = load_splits(tree, workers=2, cache=False)
    split_archives = tmp_path / "per-split"
    split_archives.mkdir()
    pack(tree / "train", split_archives / "train.tar.gz", "train")  # with its split folder inside
    pack(tree / "test", split_archives / "test.tar", ".")  # class folders at the top
    whole = pack(tree, tmp_path / "cifar-like.tgz", "mydata")  # one archive, both splits under a top folder
    for root in (split_archives, whole):
        splits, classes = load_splits(root, workers=1, cache=False)
        assert classes == list(CLASSES) and set(splits) == {"train", "test"}
        for name in ("train", "test"):
            assert torch.equal(splits[name].images, reference[name].images), (root, name)
            assert torch.equal(splits[name].labels, reference[name].labels)


def test_val_folder_is_the_test_split_alone_and_the_validation_split_beside_test(tmp_path):
    only_val = make_tree(tmp_path / "a", counts=(("train", 5), ("val", 2)))
    data = load_dataset(config(only_val, "data.val_fraction=0.2").data)
    assert len(data.test) == 6 and len(data.val) == 3 and len(data.train) == 12  # val carved from train
    both = make_tree(tmp_path / "b", counts=(("train", 5), ("val", 3), ("test", 2)))
    data = load_dataset(config(both, "data.val_fraction=0.2").data)
    assert len(data.train) == 15 and len(data.val) == 9 and len(data.test) == 6


def test_grey_images_keep_one_channel_and_mixed_ones_become_colour(tmp_path):
    root = tmp_path / "grey"
    for split in ("train", "test"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            Image.fromarray(np.full((6, 6), 7 if name == "a" else 200, np.uint8)).save(root / split / name / "0.png")
    data = load_dataset(config(root).data)
    assert data.channels == 1 and data.test.images[:, 0, 0, 0].tolist() == [7, 200]
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(root / "train" / "a" / "1.png")
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(root / "test" / "a" / "1.png")
    data = load_dataset(config(root, "data.cache=false").data)
    assert data.channels == 3 and torch.equal(data.test.images[0], torch.full((3, 6, 6), 7, dtype=torch.uint8))
    assert data.test.images[:, :, 0, 0].tolist() == [[7, 7, 7], [0, 0, 0], [200, 200, 200]]


def test_cache_is_used_and_never_stale(tree, tmp_path, monkeypatch):
    archive_root = tmp_path / "packed"
    archive_root.mkdir()
    pack(tree / "train", archive_root / "train.tar.gz", "train")
    pack(tree / "test", archive_root / "test.tar.gz", "test")
    first, _ = load_splits(archive_root, workers=1, cache=True)
    calls = []
    real = smallfolder.decode_images
    monkeypatch.setattr(smallfolder, "decode_images", lambda *a: calls.append(1) or real(*a))
    again, _ = load_splits(archive_root, workers=1, cache=True)
    assert calls == [] and torch.equal(again["train"].images, first["train"].images)
    # the archive changes: one test image is replaced, and the new pixels are what comes back
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(tree / "test" / "cat" / "000.png")
    pack(tree / "test", archive_root / "test.tar.gz", "test")
    changed, _ = load_splits(archive_root, workers=1, cache=True)
    assert len(calls) == 2 and int(changed["test"].images[0].max()) == 9
    # a damaged cache file is decoded again, not trusted
    for path in (tmp_path / "cache").glob("*.npz"):
        path.write_bytes(b"garbage")
    load_splits(archive_root, workers=1, cache=True)
    assert len(calls) == 4


def test_a_folder_edit_invalidates_the_cache(tree):
    load_splits(tree, workers=1, cache=True)
    Image.fromarray(np.full((8, 8, 3), 3, np.uint8)).save(tree / "test" / "dog" / "001.png")
    splits, _ = load_splits(tree, workers=1, cache=True)
    assert int(splits["test"].images[3].max()) == 3


def _broken(tmp_path, name):
    root = make_tree(tmp_path / name, counts=(("train", 2), ("test", 1)))
    return root


@pytest.mark.parametrize("damage, message", [
    (lambda r: shutil.rmtree(r / "test"), r"no test split under .*expected .*test/"),
    (lambda r: shutil.rmtree(r / "train"), r"no train split under"),
    (lambda r: shutil.copytree(r / "train" / "cat", r / "train" / "fox"), r"class folder\(s\) fox are in only one of the splits"),
    (lambda r: [(r / s / "fox").mkdir() for s in ("train", "test")], r"class folder fox in .* holds no images"),
    (lambda r: (r / "test" / "dog" / "001.png").write_bytes(b"\x89PNG not really"),
     r"cannot read image dog/001.png in .*test"),
    (lambda r: Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(r / "train" / "eel" / "009.png"),
     r"images in .*train have different sizes: cat/000.png is 8x8, eel/009.png is 8x9"),
])
def test_broken_folders_are_one_line_errors(tmp_path, damage, message):
    root = _broken(tmp_path, "t")
    damage(root)
    with pytest.raises(DdnnError, match=message):
        load_dataset(config(root).data)


def test_broken_archives_and_roots_are_one_line_errors(tree, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "train.tar.gz").write_bytes(b"this is not gzip at all")
    pack(tree / "test", fake / "test.tar.gz", "test")
    with pytest.raises(DdnnError, match=r"train.tar.gz is not a readable .tar/.tar.gz archive"):
        load_dataset(config(fake).data)
    cut = tmp_path / "cut"
    cut.mkdir()
    whole = pack(tree / "train", cut / "train.tar.gz", "train").read_bytes()
    (cut / "train.tar.gz").write_bytes(whole[: len(whole) // 2])  # truncated mid-stream
    pack(tree / "test", cut / "test.tar.gz", "test")
    with pytest.raises(DdnnError, match=r"train.tar.gz is not a readable"):
        load_dataset(config(cut).data)
    with pytest.raises(DdnnError, match=r"data.root .*nowhere does not exist"):
        load_dataset(config(tmp_path / "nowhere").data)
    with pytest.raises(DdnnError, match=r"needs data.root"):
        load_dataset(load_config(None, ["data.name=smallfolder"]).data)
    damaged = shutil.copytree(tree, tmp_path / "damaged")
    (damaged / "test" / "cat" / "001.png").write_bytes(b"\x89PNG\r\n cut short")  # a damaged image inside an archive
    packed = tmp_path / "packed"
    packed.mkdir()
    pack(damaged / "test", packed / "test.tar.gz", "test")
    pack(damaged / "train", packed / "train.tar.gz", "train")
    with pytest.raises(DdnnError, match=r"cannot read image cat/001.png in .*test.tar.gz \(test\)"):
        load_dataset(config(packed).data)


def test_train_and_eval_from_archives_through_the_cli(tree, tmp_path):
    packed = tmp_path / "packed"
    packed.mkdir()
    pack(tree / "train", packed / "train.tar.gz", "train")
    pack(tree / "test", packed / "test.tar.gz", "test")
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "data.name=smallfolder", f"data.root={packed}", "data.batch_size=6",
            "data.val_fraction=0.2", "data.augment=[crop,flip]", "data.crop_padding=2", "model.name=resnet14",
            "model.subnets=[resnet8]", "model.widths=[4,4,8]", "train.epochs=1", "runtime.progress=false"]
    done = subprocess.run([sys.executable, "-m", "ddnn", *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "smallfolder" and results["train_size"] == 15 and results["test_size"] == 6
    assert set(results["nets"]) == {"resnet14", "resnet8"}
    evaluated = subprocess.run([sys.executable, "-m", "ddnn", "eval", "--run", str(out), "--json"],
                               capture_output=True, text=True)
    assert evaluated.returncode == 0, evaluated.stderr
