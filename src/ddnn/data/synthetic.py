"""A learnable synthetic image dataset for fast tests: each class is a fixed random pattern plus noise."""

import torch

from ddnn.data.base import Dataset, Split, carve
from ddnn.registry import DATASETS


def make_synthetic(size: int, image_size: int, channels: int, classes: int, seed: int = 0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.rand(classes, channels, image_size, image_size, generator=gen) * 255
    labels = torch.arange(size) % classes
    noise = torch.randn(size, channels, image_size, image_size, generator=gen) * 40
    images = (patterns[labels] + noise).clamp_(0, 255).to(torch.uint8)
    return Split(images, labels)


@DATASETS.register("synthetic", help="class patterns + noise, any size/shape (data.synthetic.*), for tests")
def load_synthetic(cfg) -> Dataset:
    s = cfg.synthetic
    return carve("synthetic", make_synthetic(s.size, s.image_size, s.channels, s.classes, cfg.split_seed), None,
                 s.classes, cfg.val_fraction, cfg.test_fraction, cfg.split_seed, cfg.train_limit)
