"""Datasets and batching: the embedded MNIST-5k splits, CIFAR read from its real on-disk format
(including tampered files), the synthetic dataset, and the tensor-op augmentation / batch loader."""

import functools
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ddnn.data.mnist5k as mnist5k_module
from ddnn.config import DataConfig, SyntheticConfig
from ddnn.data import Normalizer, Split, batches, load_dataset, num_batches
from ddnn.data.loader import random_crop, random_flip
from ddnn.data.synthetic import make_synthetic
from ddnn.errors import DdnnError


def row_hashes(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(img.contiguous().numpy().tobytes()).hexdigest() for img in images]


# ---------------------------------------------------------------------------------------------
# mnist5k
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_cached():
    """Reading the 5,000 digits costs ~2 s; the first call goes through the real reader, later
    calls reuse its result, so several split configurations stay cheap."""
    mp = pytest.MonkeyPatch()
    mp.setattr(mnist5k_module, "load_mnist5k_raw", functools.cache(mnist5k_module.load_mnist5k_raw))
    yield mnist5k_module.load_mnist5k_raw
    mp.undo()


@pytest.fixture(scope="module")
def mnist(mnist_cached):
    return load_dataset(DataConfig())


def test_mnist5k_sizes_and_format(mnist):
    assert mnist.name == "mnist5k"
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (4050, 450, 500)
    assert mnist.num_classes == 10 and mnist.channels == 1 and mnist.image_size == (32, 32)
    for split, n in ((mnist.train, 4050), (mnist.val, 450), (mnist.test, 500)):
        assert split.images.dtype == torch.uint8
        assert split.images.shape == (n, 1, 32, 32)
        assert split.labels.shape == (n,)
        assert split.labels.dtype == torch.int64
        assert split.labels.min() >= 0 and split.labels.max() <= 9
        # the 28x28 digits are zero-padded by 2 pixels on every side
        img = split.images
        assert img[:, :, :2].sum() == 0 and img[:, :, -2:].sum() == 0
        assert img[:, :, :, :2].sum() == 0 and img[:, :, :, -2:].sum() == 0
        assert img[:, :, 2:30, 2:30].sum() > 0
        assert img.max() > 200  # 0..255 scale, not 0..1


def test_mnist5k_stratified(mnist):
    assert torch.bincount(mnist.test.labels, minlength=10).tolist() == [50] * 10
    assert torch.bincount(mnist.val.labels, minlength=10).tolist() == [45] * 10
    assert torch.bincount(mnist.train.labels, minlength=10).tolist() == [405] * 10


def test_mnist5k_splits_disjoint_and_cover_all(mnist, mnist_cached):
    raw = mnist_cached()
    raw_hashes = row_hashes(raw.images)
    assert len(set(raw_hashes)) == 5000  # the digits are distinct, so hashes identify them
    parts = [row_hashes(s.images) for s in (mnist.train, mnist.val, mnist.test)]
    sets = [set(p) for p in parts]
    assert [len(s) for s in sets] == [4050, 450, 500]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sets[0] | sets[1] | sets[2] == set(raw_hashes)
    # each image keeps its own label
    label_of = dict(zip(raw_hashes, raw.labels.tolist()))
    for split, hashes in zip((mnist.train, mnist.val, mnist.test), parts):
        assert [label_of[h] for h in hashes] == split.labels.tolist()


def test_mnist5k_split_seed(mnist, mnist_cached):
    same = load_dataset(DataConfig(split_seed=0))
    for a, b in ((mnist.train, same.train), (mnist.val, same.val), (mnist.test, same.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    other = load_dataset(DataConfig(split_seed=1))
    assert set(row_hashes(other.test.images)) != set(row_hashes(mnist.test.images))
    assert torch.bincount(other.test.labels, minlength=10).tolist() == [50] * 10
    assert (len(other.train), len(other.val), len(other.test)) == (4050, 450, 500)


def test_mnist5k_train_limit(mnist, mnist_cached):
    small = load_dataset(DataConfig(train_limit=1000))
    assert len(small.train) == 1000
    assert small.train.images.shape == (1000, 1, 32, 32)
    assert torch.bincount(small.train.labels, minlength=10).tolist() == [100] * 10
    # only the training split shrinks; its images come from the full training split
    assert set(row_hashes(small.train.images)) <= set(row_hashes(mnist.train.images))
    assert torch.equal(small.val.images, mnist.val.images)
    assert torch.equal(small.test.images, mnist.test.images)
    # mean/std follow the (smaller) training split
    x = small.train.images.double() / 255
    assert small.mean[0] == pytest.approx(x.mean().item(), abs=1e-5)
    assert small.std[0] == pytest.approx(x.std().item(), abs=1e-5)


def test_mnist5k_train_limit_larger_than_train_is_a_no_op(mnist, mnist_cached):
    big = load_dataset(DataConfig(train_limit=10_000))
    assert torch.equal(big.train.images, mnist.train.images)


def test_mnist5k_mean_std_from_training_split(mnist):
    x = mnist.train.images.double() / 255
    assert len(mnist.mean) == len(mnist.std) == 1
    assert mnist.mean[0] == pytest.approx(x.mean().item(), abs=1e-5)
    assert mnist.std[0] == pytest.approx(x.std().item(), abs=1e-5)
    # and not from all the data: the test split's own statistics differ
    t = mnist.test.images.double() / 255
    assert abs(t.mean().item() - x.mean().item()) > 1e-6


def test_val_fraction_zero_gives_no_val(mnist_cached):
    d = load_dataset(DataConfig(val_fraction=0.0))
    assert d.val is None
    assert (len(d.train), len(d.test)) == (4500, 500)


# ---------------------------------------------------------------------------------------------
# CIFAR in its real on-disk format
# ---------------------------------------------------------------------------------------------

PER_BATCH = 20


def pattern_image() -> np.ndarray:
    """A (3072,) CIFAR row whose value at [c, r, col] is (7c + 3r + 5col) % 256, plus pinned pixels."""
    c, r, col = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    img = ((7 * c + 3 * r + 5 * col) % 256).astype(np.uint8)
    img[0, 0, 0], img[1, 0, 0], img[2, 0, 0] = 11, 22, 33
    img[0, 0, 31], img[0, 1, 0], img[1, 5, 7], img[2, 31, 31] = 44, 55, 66, 77
    return img.reshape(3072)  # R plane, then G, then B, each row-major 32x32


def expected_pattern() -> torch.Tensor:
    c, r, col = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    img = ((7 * c + 3 * r + 5 * col) % 256).astype(np.uint8)
    img[0, 0, 0], img[1, 0, 0], img[2, 0, 0] = 11, 22, 33
    img[0, 0, 31], img[0, 1, 0], img[1, 5, 7], img[2, 31, 31] = 44, 55, 66, 77
    return torch.from_numpy(img)


def dump(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def batch_data(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = PER_BATCH) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {"train_data": [], "train_labels": []}
    for i in range(1, 6):
        data = batch_data(i, per_batch)
        labels = [(j + i) % 10 for j in range(per_batch)]
        if i == 3:
            data[4] = pattern_image()
            written["pattern_label"] = labels[4]
        dump({b"batch_label": f"training batch {i} of 5".encode(), b"data": data, b"labels": labels,
              b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)]}, folder / f"data_batch_{i}")
        written["train_data"].append(data)
        written["train_labels"] += labels
    test = batch_data(99, per_batch)
    test[0] = pattern_image()
    test_labels = [j % 10 for j in range(per_batch)]
    dump({b"batch_label": b"testing batch 1 of 1", b"data": test, b"labels": test_labels}, folder / "test_batch")
    dump({b"num_cases_per_batch": 10000, b"label_names": [b"airplane"] * 10, b"num_vis": 3072},
         folder / "batches.meta")
    written.update(test_data=test, test_labels=test_labels, folder=folder)
    return written


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train = batch_data(7, n_train)
    fine = [j % 100 for j in range(n_train)]
    dump({b"filenames": [b"x"] * n_train, b"batch_label": b"training batch 1 of 1", b"fine_labels": fine,
          b"coarse_labels": [f // 5 for f in fine], b"data": train}, folder / "train")
    test = batch_data(8, n_test)
    test[0] = pattern_image()
    fine_test = [(j * 7) % 100 for j in range(n_test)]
    dump({b"fine_labels": fine_test, b"coarse_labels": [f // 5 for f in fine_test], b"data": test}, folder / "test")
    return {"train": train, "fine": fine, "test": test, "fine_test": fine_test, "folder": folder}


def cifar10(root, **kw):
    return load_dataset(DataConfig(name="cifar10", root=str(root), val_fraction=0.1, **kw))


def test_cifar10_counts_shapes_labels(tmp_path):
    w = write_cifar10(tmp_path)
    d = cifar10(tmp_path)
    assert d.name == "cifar10" and d.num_classes == 10 and d.channels == 3 and d.image_size == (32, 32)
    assert (len(d.train), len(d.val), len(d.test)) == (90, 10, 20)
    for s in (d.train, d.val, d.test):
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (3, 32, 32)
    assert torch.bincount(d.val.labels, minlength=10).tolist() == [1] * 10  # stratified
    # the test split is the test_batch, in file order
    assert d.test.labels.tolist() == w["test_labels"]
    assert torch.equal(d.test.images.reshape(20, 3072), torch.from_numpy(w["test_data"]))
    # train + val hold exactly the 5 batches' images, each with its own label
    label_of = {}
    for data, lab in zip(np.concatenate(w["train_data"]), w["train_labels"]):
        label_of[hashlib.sha1(data.reshape(3, 32, 32).tobytes()).hexdigest()] = lab
    got = row_hashes(torch.cat([d.train.images, d.val.images]))
    assert sorted(got) == sorted(label_of)
    assert [label_of[h] for h in got] == torch.cat([d.train.labels, d.val.labels]).tolist()
    # mean/std: per channel, from the training split
    x = d.train.images.double() / 255
    assert d.mean == pytest.approx(x.mean((0, 2, 3)).tolist(), abs=1e-5)
    assert d.std == pytest.approx(x.transpose(0, 1).flatten(1).std(1).tolist(), abs=1e-5)


def test_cifar10_pixel_layout(tmp_path):
    write_cifar10(tmp_path)
    d = cifar10(tmp_path)
    want = expected_pattern()
    img = d.test.images[0]
    assert torch.equal(img, want)
    # spot checks: R plane first, then G, then B; each plane row-major
    assert img[0, 0, 0] == 11 and img[1, 0, 0] == 22 and img[2, 0, 0] == 33
    assert img[0, 0, 31] == 44 and img[0, 1, 0] == 55 and img[1, 5, 7] == 66 and img[2, 31, 31] == 77
    assert img[1, 2, 3] == (7 * 1 + 3 * 2 + 5 * 3) % 256
    # the same image inside a training batch survives the train/val carving intact
    pool = torch.cat([d.train.images, d.val.images])
    assert sum(torch.equal(x, want) for x in pool) == 1


def test_cifar10_root_may_be_the_batches_folder(tmp_path):
    w = write_cifar10(tmp_path)
    a = cifar10(tmp_path)
    b = cifar10(w["folder"])
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)


def test_cifar10_split_seed(tmp_path):
    write_cifar10(tmp_path)
    a, b, c = cifar10(tmp_path), cifar10(tmp_path), cifar10(tmp_path, split_seed=5)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert set(row_hashes(a.val.images)) != set(row_hashes(c.val.images))
    assert torch.equal(a.test.images, c.test.images)  # CIFAR's own test split is never re-carved


def test_cifar10_legacy_numpy_module_name(tmp_path):
    """The real files were pickled by numpy 1.x (numpy.core.multiarray); they must still load."""
    write_cifar10(tmp_path)
    for f in (tmp_path / "cifar-10-batches-py").iterdir():
        raw = f.read_bytes()
        f.write_bytes(raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    assert b"cnumpy.core.multiarray\n" in (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()
    d = cifar10(tmp_path)
    assert torch.equal(d.test.images[0], expected_pattern())


def test_cifar100(tmp_path):
    w = write_cifar100(tmp_path)
    d = load_dataset(DataConfig(name="cifar100", root=str(tmp_path), val_fraction=0.5))
    assert d.name == "cifar100" and d.num_classes == 100
    assert (len(d.train), len(d.val), len(d.test)) == (100, 100, 100)
    assert d.train.images.shape == (100, 3, 32, 32) and d.test.images.shape == (100, 3, 32, 32)
    # fine labels, not coarse ones
    assert d.test.labels.tolist() == w["fine_test"]
    assert sorted(torch.cat([d.train.labels, d.val.labels]).tolist()) == sorted(w["fine"])
    assert torch.bincount(d.val.labels, minlength=100).tolist() == [1] * 100
    assert torch.equal(d.test.images[0], expected_pattern())
    # root may point at the folder itself
    d2 = load_dataset(DataConfig(name="cifar100", root=str(w["folder"]), val_fraction=0.5))
    assert torch.equal(d2.test.images, d.test.images)


def expect_error(cfg: DataConfig, *words: str) -> str:
    with pytest.raises(DdnnError) as info:
        load_dataset(cfg)
    msg = str(info.value)
    assert "\n" not in msg
    for word in words:
        assert word in msg, (word, msg)
    return msg


def test_cifar_root_missing(tmp_path):
    expect_error(DataConfig(name="cifar10", root=None), "data.root")
    missing = tmp_path / "nowhere"
    expect_error(DataConfig(name="cifar10", root=str(missing)), str(missing))
    expect_error(DataConfig(name="cifar100", root=str(missing)), str(missing))
    # an existing but empty folder
    expect_error(DataConfig(name="cifar10", root=str(tmp_path)), str(tmp_path), "data_batch_1")
    expect_error(DataConfig(name="cifar100", root=str(tmp_path)), str(tmp_path))


@pytest.mark.parametrize("name", ["data_batch_3", "data_batch_5", "test_batch"])
def test_cifar_missing_file(tmp_path, name):
    w = write_cifar10(tmp_path)
    (w["folder"] / name).unlink()
    expect_error(DataConfig(name="cifar10", root=str(tmp_path)), str(w["folder"] / name))


def test_cifar100_missing_test_file(tmp_path):
    w = write_cifar100(tmp_path)
    (w["folder"] / "test").unlink()
    expect_error(DataConfig(name="cifar100", root=str(tmp_path)), str(w["folder"] / "test"))


NOT_PICKLES = {
    "text": b"hello, this is not a pickle\n",
    "html": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
    "empty": b"",
    "gzip": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(range(64)),
    "nul": b"\0" * 256,
}


@pytest.mark.parametrize("kind", sorted(NOT_PICKLES))
def test_cifar_file_not_a_pickle(tmp_path, kind):
    w = write_cifar10(tmp_path)
    bad = w["folder"] / "data_batch_2"
    bad.write_bytes(NOT_PICKLES[kind])
    expect_error(DataConfig(name="cifar10", root=str(tmp_path)), str(bad))


def test_cifar_truncated_pickle(tmp_path):
    w = write_cifar10(tmp_path)
    bad = w["folder"] / "test_batch"
    bad.write_bytes(bad.read_bytes()[:1000])
    expect_error(DataConfig(name="cifar10", root=str(tmp_path)), str(bad))


WRONG_CONTENT = {
    "no-data-key": {b"labels": [1, 2]},
    "no-labels-key": {b"data": np.zeros((2, 3072), np.uint8)},
    "not-a-dict": [1, 2, 3],
    "wrong-shape": {b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]},
    "labels-length": {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2, 3]},
}


@pytest.mark.parametrize("kind", sorted(WRONG_CONTENT))
def test_cifar_test_batch_with_wrong_content(tmp_path, kind):
    w = write_cifar10(tmp_path)
    dump(WRONG_CONTENT[kind], w["folder"] / "test_batch")
    expect_error(DataConfig(name="cifar10", root=str(tmp_path)), str(w["folder"]))


@pytest.mark.parametrize("kind", [
    "no-data-key", "no-labels-key", "not-a-dict", "labels-length",
    "wrong-shape",
])
def test_cifar_one_training_batch_with_wrong_content(tmp_path, kind):
    w = write_cifar10(tmp_path)
    dump(WRONG_CONTENT[kind], w["folder"] / "data_batch_4")
    expect_error(DataConfig(name="cifar10", root=str(tmp_path)), str(w["folder"]))


def test_cifar_corrupt_opcodes_are_a_ddnn_error(tmp_path):
    w = write_cifar10(tmp_path)
    bad = w["folder"] / "data_batch_1"
    bad.write_bytes(b"\x80\x02)K\x01a.")  # EMPTY_TUPLE, BININT1 1, APPEND -> tuple has no append
    expect_error(DataConfig(name="cifar10", root=str(tmp_path)), str(bad))


class Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_evil_payload_is_live(tmp_path):
    """Control: the payload used below really runs a command when unpickled without protection."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(Evil(f"echo pwned > {marker}"), protocol=2))
    assert marker.exists()


@pytest.mark.parametrize("where", ["whole-file", "inside-dict"])
def test_cifar_malicious_pickle_never_runs(tmp_path, where):
    w = write_cifar10(tmp_path / "root")
    marker = tmp_path / "SOMEFILE"
    evil = Evil(f"echo pwned > {marker}")
    target = w["folder"] / "data_batch_1"
    if where == "whole-file":
        dump(evil, target)
    else:
        dump({b"data": batch_data(0, PER_BATCH), b"labels": [0] * PER_BATCH, b"x": evil}, target)
    assert b"system" in target.read_bytes()
    expect_error(DataConfig(name="cifar10", root=str(tmp_path / "root")), str(target))
    assert not marker.exists()


def test_cifar100_malicious_pickle_never_runs(tmp_path):
    w = write_cifar100(tmp_path / "root")
    marker = tmp_path / "SOMEFILE"
    dump(Evil(f"echo pwned > {marker}"), w["folder"] / "test")
    expect_error(DataConfig(name="cifar100", root=str(tmp_path / "root")), str(w["folder"] / "test"))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# loader: augmentation, batches, normalisation
# ---------------------------------------------------------------------------------------------


def known_images(n=6, c=2, h=5, w=7) -> torch.Tensor:
    return (torch.arange(n * c * h * w) % 251 + 1).to(torch.uint8).reshape(n, c, h, w)


@pytest.mark.parametrize("padding", [1, 2, 4])
def test_random_crop_is_a_shifted_window(padding):
    images = known_images(n=40)
    n, _, h, w = images.shape
    out = random_crop(images, padding, torch.Generator().manual_seed(123))
    assert out.shape == images.shape and out.dtype == images.dtype
    gen = torch.Generator().manual_seed(123)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    padded = F.pad(images, (padding,) * 4)
    assert padded.shape[2:] == (h + 2 * padding, w + 2 * padding)
    for i in range(n):
        t, l = int(top[i]), int(left[i])
        assert torch.equal(out[i], padded[i, :, t:t + h, l:l + w]), i
    # with 40 images the offsets vary, so some windows are shifted and some pixels are padding zeros
    assert len(set(zip(top.tolist(), left.tolist()))) > 1
    assert (out == 0).any() and not (images == 0).any()


def test_random_crop_reproducible():
    images = known_images(n=10)
    a = random_crop(images, 2, torch.Generator().manual_seed(5))
    b = random_crop(images, 2, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, random_crop(images, 2, torch.Generator().manual_seed(6)))


def test_random_flip():
    images = torch.randint(0, 256, (1000, 3, 4, 5), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    original = images.clone()
    out = random_flip(images, torch.Generator().manual_seed(9))
    assert out.shape == images.shape and out.dtype == images.dtype
    flipped = torch.tensor([torch.equal(o, x.flip(2)) for o, x in zip(out, images)])
    same = torch.tensor([torch.equal(o, x) for o, x in zip(out, images)])
    assert bool((flipped | same).all())
    assert 400 <= int(flipped.sum()) <= 600  # about half
    # exactly the images whose uniform draw is < 0.5
    mask = torch.rand(1000, generator=torch.Generator().manual_seed(9)) < 0.5
    assert torch.equal(flipped, mask)
    assert torch.equal(out, random_flip(images, torch.Generator().manual_seed(9)))
    assert not torch.equal(out, random_flip(images, torch.Generator().manual_seed(10)))
    assert torch.equal(images, original)  # the input is not modified


def indexed_split(n=53, c=3, h=6, w=6) -> Split:
    """Labels are the indices, so a batch's labels tell which images it holds."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (n, c, h, w), generator=gen).to(torch.uint8)
    return Split(images, torch.arange(n))


IDENTITY = Normalizer([0.0, 0.0, 0.0], [1 / 255] * 3)


def test_identity_normalizer_sanity():
    x = torch.tensor([[[[0, 7, 255]]]], dtype=torch.uint8).expand(1, 3, 1, 3)
    assert torch.allclose(IDENTITY(x), x.float())


def test_batches_without_seed_sequential_no_augmentation():
    split = indexed_split()
    got = list(batches(split, 10, IDENTITY, shuffle_seed=None, augment=["crop", "flip"], crop_padding=2))
    assert [len(y) for _, y in got] == [10, 10, 10, 10, 10, 3]
    assert num_batches(split, 10) == 6 and num_batches(split, 53) == 1 and num_batches(split, 100) == 1
    assert torch.equal(torch.cat([y for _, y in got]), torch.arange(53))
    x = torch.cat([x for x, _ in got])
    assert x.dtype == torch.float32
    assert torch.allclose(x, split.images.float())


@pytest.mark.parametrize("augment", [(), ("crop",), ("flip",), ("crop", "flip")])
def test_batches_shuffle_covers_every_index_once(augment):
    split = indexed_split()
    got = list(batches(split, 8, IDENTITY, shuffle_seed=3, augment=augment, crop_padding=2))
    assert [len(y) for _, y in got] == [8] * 6 + [5]
    labels = torch.cat([y for _, y in got])
    assert sorted(labels.tolist()) == list(range(53))
    assert not torch.equal(labels, torch.arange(53))  # shuffled
    if not augment:  # shuffled but not augmented: each image is its own
        for x, y in got:
            assert torch.allclose(x, split.images[y].float())


def test_batches_same_seed_same_batches_different_seed_different_order():
    split = indexed_split()
    kw = dict(augment=["crop", "flip"], crop_padding=2)
    a = list(batches(split, 16, IDENTITY, shuffle_seed=11, **kw))
    b = list(batches(split, 16, IDENTITY, shuffle_seed=11, **kw))
    c = list(batches(split, 16, IDENTITY, shuffle_seed=12, **kw))
    assert len(a) == len(b) == len(c) == 4
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(torch.cat([y for _, y in a]), torch.cat([y for _, y in c]))


def test_batches_replay_order_and_augmentation_exactly():
    """The seed fixes order, crop and flip: replaying the documented draws reproduces every batch."""
    split = indexed_split(n=30)
    got = list(batches(split, 7, IDENTITY, shuffle_seed=4, augment=["crop", "flip"], crop_padding=2))
    gen = torch.Generator().manual_seed(4)
    order = torch.randperm(30, generator=gen)
    for start, (x, y) in zip(range(0, 30, 7), got):
        idx = order[start:start + 7]
        assert torch.equal(y, idx)
        want = random_flip(random_crop(split.images[idx], 2, gen), gen)
        assert torch.allclose(x, want.float())
    # augmentation actually changed some images
    x_all, y_all = torch.cat([x for x, _ in got]), torch.cat([y for _, y in got])
    assert not torch.allclose(x_all, split.images[y_all].float())


def test_batches_crop_padding_zero_disables_crop():
    split = indexed_split()
    got = list(batches(split, 64, IDENTITY, shuffle_seed=1, augment=["crop"], crop_padding=0))
    (x, y), = got
    assert torch.allclose(x, split.images[y].float())


def test_normalizer():
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.25, 0.3)
    images = torch.randint(0, 256, (4, 3, 5, 5), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    out = Normalizer(mean, std)(images)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    want = (images.double() / 255 - m.double()) / s.double()
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert torch.allclose(out.double(), want, atol=1e-5)
    # single channel
    one = Normalizer([0.5], [0.25])(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
    assert torch.allclose(one, torch.tensor([[[[-2.0, 2.0]]]]))


# ---------------------------------------------------------------------------------------------
# synthetic
# ---------------------------------------------------------------------------------------------


def synthetic_cfg(**kw) -> DataConfig:
    syn = SyntheticConfig(size=200, image_size=8, channels=2, classes=4)
    return DataConfig(name="synthetic", synthetic=syn, val_fraction=0.1, test_fraction=0.2, **kw)


def test_synthetic_sizes_and_classes():
    d = load_dataset(synthetic_cfg())
    assert d.name == "synthetic" and d.num_classes == 4 and d.channels == 2 and d.image_size == (8, 8)
    # 50 per class: 10 to test, then 4 of the remaining 40 to val
    assert (len(d.train), len(d.val), len(d.test)) == (144, 16, 40)
    assert torch.bincount(d.test.labels, minlength=4).tolist() == [10] * 4
    assert torch.bincount(d.val.labels, minlength=4).tolist() == [4] * 4
    for s in (d.train, d.val, d.test):
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (2, 8, 8)
    assert len(d.mean) == len(d.std) == 2


def test_synthetic_make_and_determinism():
    s = make_synthetic(30, 4, 3, 5, seed=2)
    assert s.images.shape == (30, 3, 4, 4) and s.images.dtype == torch.uint8
    assert s.labels.tolist() == [i % 5 for i in range(30)]
    t = make_synthetic(30, 4, 3, 5, seed=2)
    assert torch.equal(s.images, t.images)
    assert not torch.equal(s.images, make_synthetic(30, 4, 3, 5, seed=3).images)
    a, b = load_dataset(synthetic_cfg()), load_dataset(synthetic_cfg())
    for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
    c = load_dataset(synthetic_cfg(split_seed=1))
    assert not torch.equal(a.test.images, c.test.images)


def test_synthetic_is_learnable_by_class_means():
    """Images of a class share a pattern: nearest class mean (from train) classifies test well."""
    d = load_dataset(synthetic_cfg())
    x = d.train.images.float().flatten(1)
    means = torch.stack([x[d.train.labels == k].mean(0) for k in range(4)])
    pred = torch.cdist(d.test.images.float().flatten(1), means).argmin(1)
    assert (pred == d.test.labels).float().mean() > 0.9


def test_synthetic_train_limit():
    d = load_dataset(synthetic_cfg(train_limit=40))
    assert len(d.train) == 40
    assert torch.bincount(d.train.labels, minlength=4).tolist() == [10] * 4


def test_unknown_dataset_name():
    with pytest.raises(DdnnError, match="unknown dataset 'cifar1O'.*cifar10"):
        load_dataset(DataConfig(name="cifar1O"))


@pytest.mark.parametrize("config, writer", [("ekd/cifar10-resnet56", write_cifar10), ("ekd/cifar100-resnet56", write_cifar100)])
def test_bundled_cifar_recipe_trains_on_the_real_format(tmp_path, config, writer):
    """The CIFAR recipes as shipped (val_fraction 0, crop + flip, multistep), shrunk to one tiny epoch."""
    from ddnn.config import load_config
    from ddnn.experiments import train

    writer(tmp_path)
    cfg = load_config(config, [f"data.root={tmp_path}", "train.epochs=1", "model.widths=[4,4,4]",
                               "data.batch_size=64", "runtime.progress=false"])
    assert cfg.data.val_fraction == 0 and cfg.data.augment == ["crop", "flip"] and cfg.schedule.name == "multistep"
    results = train(cfg, tmp_path / "run", log=lambda *_: None)
    assert results["selected_on"] == "test" and results["dataset"] == cfg.data.name
    assert list(results["nets"]) == ["resnet56", "resnet44", "resnet32", "resnet20"]
    assert all(net["val_top1"] is None for net in results["nets"].values())


@pytest.mark.parametrize("cfg, split", [
    (DataConfig(name="synthetic", val_fraction=0.999), "training"),
    (DataConfig(name="synthetic", synthetic=SyntheticConfig(size=3)), "test"),
])
def test_an_empty_split_is_a_ddnn_error(cfg, split):
    with pytest.raises(DdnnError, match=f"the {split} split is empty"):
        load_dataset(cfg)
