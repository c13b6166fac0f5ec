"""Class-folder (ImageNet-layout) data on a tiny generated image tree, and optional TensorBoard logging."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ddnn.config import load_config
from ddnn.data import batches, load_dataset
from ddnn.data.folder import FolderImages, _random_resized_box, scan
from ddnn.errors import DdnnError

COLOURS = {"cat": (220, 40, 40), "dog": (40, 200, 60), "eel": (30, 60, 210)}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/{train,val}/<class>/*.jpg of different sizes, a colour per class plus noise; one stray .txt."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, count in (("train", 10), ("val", 3)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = int(rng.integers(20, 48)), int(rng.integers(20, 48))
                pixels = np.clip(np.array(colour) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg" if i % 2 else folder / f"{i}.JPEG")
            (folder / "notes.txt").write_text("not an image\n")
    return root


def folder_config(root, *extra):
    return load_config(None, ["data.name=imagefolder", f"data.root={root}", "data.image_size=16", "data.workers=2",
                              "data.val_fraction=0.2", "data.batch_size=8", "data.eval_batch_size=16",
                              "data.augment=[crop,flip]", "model.name=resnet18", "model.subnets=[resnet10]",
                              "model.widths=[8,8,16,16]", "model.stem=cifar",
                              "train.epochs=1", "runtime.progress=false", *extra])


def test_scan_orders_classes_and_skips_other_files(tree):
    paths, labels, names = scan(tree / "train")
    assert names == ["cat", "dog", "eel"]
    assert len(paths) == 30 and labels == [0] * 10 + [1] * 10 + [2] * 10
    assert all(p.suffix.lower() in (".jpg", ".jpeg") for p in paths)
    assert all(p.parent.name == names[label] for p, label in zip(paths, labels))


def test_dataset_splits_shapes_and_imagenet_statistics(tree):
    data = load_dataset(folder_config(tree).data)
    assert data.num_classes == 3 and data.channels == 3 and data.image_size == (16, 16)
    assert len(data.train) == 24 and len(data.val) == 6 and len(data.test) == 9  # val: 2 per class from train
    assert data.mean == (0.485, 0.456, 0.406) and data.std == (0.229, 0.224, 0.225)
    x = data.test.images[torch.tensor([0, 3, 6])]  # one of each class
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.uint8
    means = x.float().mean((2, 3))
    for row, colour in zip(means, COLOURS.values()):  # each image keeps its class colour
        assert torch.allclose(row, torch.tensor(colour, dtype=torch.float), atol=25)


def test_centre_crop_takes_the_middle(tmp_path):
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[16:32, 24:40] = 255  # a white square in the middle of a black frame (PNG: lossless)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    view = FolderImages([tmp_path / "a.png"], size=16, resize=48, workers=1)[torch.tensor([0])]
    assert view.shape == (1, 3, 16, 16) and int(view.min()) == 255  # shorter side 48 -> centre 16x16 = the square
    wide = FolderImages([tmp_path / "a.png"], size=16, resize=16, workers=1)[torch.tensor([0])]
    assert 0 < wide.float().mean() < 255  # resized to 16x21 first: the crop now holds frame and square


def test_augmentation_is_seeded_and_flip_mirrors(tmp_path):
    pixels = np.tile(np.arange(32, dtype=np.uint8)[None, :, None] * 8, (32, 1, 3))  # left-to-right ramp
    Image.fromarray(pixels).save(tmp_path / "ramp.png")
    images = FolderImages([tmp_path / "ramp.png"] * 6, size=32, resize=32, workers=2)
    idx = torch.arange(6)
    a = images.augmented(idx, torch.Generator().manual_seed(1), crop=True, flip=True)
    b = images.augmented(idx, torch.Generator().manual_seed(1), crop=True, flip=True)
    c = images.augmented(idx, torch.Generator().manual_seed(2), crop=True, flip=True)
    assert torch.equal(a, b) and not torch.equal(a, c)
    flipped = images.augmented(idx, torch.Generator().manual_seed(3), crop=False, flip=True)
    plain = images[idx]
    mirrored = [torch.equal(f, p.flip(2)) for f, p in zip(flipped, plain)]
    kept = [torch.equal(f, p) for f, p in zip(flipped, plain)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


def test_random_resized_box_respects_area_and_aspect():
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        left, top, right, bottom = _random_resized_box((200, 120), torch.rand(10, 4, generator=gen))
        w, h = right - left, bottom - top
        assert 0 <= left and 0 <= top and right <= 200 and bottom <= 120
        assert 0.08 * 0.95 <= w * h / (200 * 120) <= 1.0
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1 or (w, h) == (120, 120)
    # no try fits (every area/aspect draw too large for a 1-pixel-high image): the centre square
    assert _random_resized_box((50, 1), torch.ones(10, 4)) == (24.5, 0.0, 25.5, 1.0)


def test_batches_replay_an_epoch_exactly(tree):
    data = load_dataset(folder_config(tree).data)
    from ddnn.data import Normalizer

    norm = Normalizer(data.mean, data.std)
    run = lambda: [(x, y) for x, y in batches(data.train, 8, norm, shuffle_seed=5, augment=["crop", "flip"])]  # noqa: E731
    first, second = run(), run()
    assert len(first) == 3 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))


def test_folder_errors(tree, tmp_path):
    with pytest.raises(DdnnError, match="needs data.root"):
        load_dataset(load_config(None, ["data.name=imagefolder"]).data)
    with pytest.raises(DdnnError, match=r"nothere/train does not exist"):
        load_dataset(folder_config(tmp_path / "nothere").data)
    bad = tmp_path / "bad"
    for split, names in (("train", ["a", "b"]), ("val", ["a", "c"])):
        for name in names:
            (bad / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(bad / split / name / "x.png")
    with pytest.raises(DdnnError, match=r"other class folders than train/ \(b, c\)"):
        load_dataset(folder_config(bad).data)
    (bad / "train" / "empty").mkdir()
    with pytest.raises(DdnnError, match=r"empty holds no images"):
        scan(bad / "train")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DdnnError, match=r"cannot read image .*broken.jpg"):
        FolderImages([tmp_path / "broken.jpg"], 16, 18, 1)[torch.tensor([0])]


def test_train_and_eval_on_a_folder_tree_with_tensorboard(tree, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "data.name=imagefolder", f"data.root={tree}", "data.image_size=16",
            "data.workers=2", "data.val_fraction=0.2", "data.batch_size=8", "data.augment=[crop,flip]",
            "model.name=resnet18", "model.subnets=[resnet10]", "model.widths=[8,8,16,16]", "model.stem=cifar", "train.epochs=2", "runtime.progress=false", "runtime.tensorboard=true"]
    done = subprocess.run([sys.executable, "-m", "ddnn", *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "imagefolder" and results["train_size"] == 24 and results["test_size"] == 9
    evaluated = subprocess.run([sys.executable, "-m", "ddnn", "eval", "--run", str(out), "--which", "last", "--json"],
                               capture_output=True, text=True)
    assert evaluated.returncode == 0, evaluated.stderr
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"lr", "loss/ce.resnet18", "loss/kl.resnet10", "val_top1/resnet10", "train_top1/resnet18"} <= set(tags), tags
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [e.value for e in events.Scalars("val_top1/resnet10")]
    assert logged == pytest.approx([m["val_top1"]["resnet10"] for m in metrics])
