"""In-memory image datasets: uint8 tensors split into train/val/test, plus their normalisation."""

from dataclasses import dataclass

import torch

from ddnn.errors import DdnnError


@dataclass
class Split:
    """Images as uint8 (N, C, H, W) and integer labels (N,). `images` is a tensor, or files that index
    like one (data/folder.py) when the data does not fit in memory."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "Split":
        images = self.images[index] if isinstance(self.images, torch.Tensor) else self.images.select(index)
        return Split(images, self.labels[index])


@dataclass
class Dataset:
    """What a dataset loader returns. `val` may be None when val_fraction is 0."""

    name: str
    train: Split
    val: Split | None
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train.images.shape[2:])  # type: ignore[return-value]


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held_out) indices; held_out takes round(fraction * n_c) of every class c."""
    gen = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_held = int(round(fraction * len(idx)))
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, on the 0..1 scale."""
    x = images.float().div_(255).transpose(0, 1).flatten(1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


def carve(
    name: str, train: Split, test: Split | None, num_classes: int,
    val_fraction: float, test_fraction: float, seed: int, train_limit: int | None,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None, val: Split | None = None,
) -> Dataset:
    """Make the val (and, if the data has none, test) split from `train`, stratified and seeded;
    normalise with `stats` (mean, std) or, when None, the training images' own channel statistics.
    A `val` split the data brings is used as it is (val_fraction then carves nothing)."""
    if test is None:
        keep, held = stratified_split(train.labels, test_fraction, seed)
        train, test = train.subset(keep), train.subset(held)
    if val is None and val_fraction > 0:
        keep, held = stratified_split(train.labels, val_fraction, seed + 1)
        train, val = train.subset(keep), train.subset(held)
    if train_limit is not None and train_limit < len(train):
        _, held = stratified_split(train.labels, train_limit / len(train), seed + 2)
        train = train.subset(held)
    for split_name, split in (("training", train), ("test", test), ("validation", val)):
        if split is not None and len(split) == 0:
            raise DdnnError(f"{name}: the {split_name} split is empty; lower data.val_fraction/data.test_fraction "
                            "or raise data.train_limit")
    mean, std = stats or channel_stats(train.images)  # files on disk come with known statistics
    return Dataset(name, train, val, test, num_classes, mean, std)
