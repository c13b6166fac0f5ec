"""Batches from in-memory uint8 splits, with augmentation done on whole batches as tensor ops.

Per-sample PIL transforms cost more than the small CIFAR nets on a CPU; cropping and flipping a
whole uint8 batch with index arithmetic is cheap and deterministic under a seeded generator.
"""

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from ddnn.data.base import Split


def random_crop(images: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to the original size at a random offset per image."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    rows = (top[:, None] + torch.arange(h))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w))[:, None, None, :]
    batch = torch.arange(n)[:, None, None, None]
    chans = torch.arange(images.shape[1])[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images left-right."""
    flip = torch.rand(len(images), generator=gen) < 0.5
    out = images.clone()
    out[flip] = images[flip].flip(3)
    return out


class Normalizer:
    """uint8 -> float, (x/255 - mean) / std per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean).view(1, -1, 1, 1) * 255
        self.scale = 1 / (torch.tensor(std).view(1, -1, 1, 1) * 255)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean.to(images.device)) * self.scale.to(images.device)


def batches(
    split: Split,
    batch_size: int,
    normalize: Normalizer,
    shuffle_seed: int | None = None,
    augment: Sequence[str] = (),
    crop_padding: int = 4,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (float images, labels); shuffled and augmented when `shuffle_seed` is given.

    The seed fixes both the order and the augmentation, so an epoch can be replayed exactly.
    """
    n = len(split)
    gen = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    on_disk = hasattr(split.images, "augmented")
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if gen is not None and on_disk:  # files: per-image random-resized crops while decoding
            images = split.images.augmented(idx, gen, "crop" in augment, "flip" in augment)
        else:
            images = split.images[idx]
        if gen is not None and not on_disk:
            if "crop" in augment and crop_padding > 0:
                images = random_crop(images, crop_padding, gen)
            if "flip" in augment:
                images = random_flip(images, gen)
        yield normalize(images), split.labels[idx]


def num_batches(split: Split, batch_size: int) -> int:
    return -(-len(split) // batch_size)
