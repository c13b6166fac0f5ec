"""Class-folder image datasets (ImageNet layout): ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg.

Same layout and class order as torchvision's ImageFolder (classes = sorted sub-folder names), read with
Pillow because the data cannot live in memory: images are decoded per batch, on `data.workers` threads.
Training images get the standard ImageNet augmentation (random-resized crop, scale 0.08-1, aspect
3/4-4/3, then a horizontal flip); evaluation images are resized (shorter side `data.resize`) and
centre-cropped. Crop parameters are drawn from the epoch's seeded generator, so epochs replay exactly.
"""

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ddnn.data.base import Dataset, Split, carve
from ddnn.data.sources import IMAGE_EXTENSIONS as EXTENSIONS
from ddnn.errors import DdnnError
from ddnn.registry import DATASETS

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class FolderImages:
    """Image files that index like a uint8 (N, 3, S, S) tensor: `images[idx]` decodes the evaluation view."""

    def __init__(self, paths: list[Path], size: int, resize: int, workers: int) -> None:
        self.paths, self.size, self.resize, self.workers = paths, size, resize, workers

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, index: torch.Tensor) -> "FolderImages":
        """The images at `index`, still on disk (what Split.subset uses)."""
        return FolderImages([self.paths[i] for i in index.tolist()], self.size, self.resize, self.workers)

    def __getitem__(self, index) -> torch.Tensor:
        chosen = self._indices(index)
        return self._decode(chosen, [None] * len(chosen), [False] * len(chosen))

    def augmented(self, index: torch.Tensor, gen: torch.Generator, crop: bool, flip: bool) -> torch.Tensor:
        """Random-resized crop and/or flip of the images at `index`, parameters drawn from `gen` in order."""
        chosen = self._indices(index)
        crops = torch.rand(len(chosen), 10, 4, generator=gen)  # 10 tries of (area, log-aspect, x, y) per image
        flips = (torch.rand(len(chosen), generator=gen) < 0.5).tolist()
        return self._decode(chosen, list(crops) if crop else [None] * len(chosen), flips if flip else [False] * len(chosen))

    def _indices(self, index) -> list[int]:
        if isinstance(index, slice):
            return list(range(len(self.paths)))[index]
        return torch.as_tensor(index).reshape(-1).tolist()

    def _decode(self, chosen: list[int], crops: list, flips: list[bool]) -> torch.Tensor:
        def one(k: int) -> np.ndarray:
            return self._load(self.paths[chosen[k]], crops[k], flips[k])

        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            arrays = list(pool.map(one, range(len(chosen))))
        if not arrays:
            return torch.zeros(0, 3, self.size, self.size, dtype=torch.uint8)
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def _load(self, path: Path, crop: torch.Tensor | None, flip: bool) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if crop is None:
                    img = _resize_shorter(img, self.resize)
                    box = _center_box(img.size, self.size)
                else:
                    box = _random_resized_box(img.size, crop)
                img = img.resize((self.size, self.size), Image.BILINEAR, box=box)
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise DdnnError(f"cannot read image {path} ({err}); remove or replace the file") from None
        array = np.asarray(img, dtype=np.uint8)
        return array[:, ::-1] if flip else array


def _resize_shorter(img, size: int):
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)


def _center_box(wh: tuple[int, int], size: int) -> tuple[float, float, float, float]:
    w, h = wh
    side = min(size, w, h)
    left, top = (w - side) / 2, (h - side) / 2
    return (left, top, left + side, top + side)


def _random_resized_box(wh: tuple[int, int], tries: torch.Tensor) -> tuple[float, float, float, float]:
    """A box of 8-100 % of the area with aspect ratio in [3/4, 4/3] (10 tries, then the centre crop)."""
    w, h = wh
    for area_u, ratio_u, x_u, y_u in tries.tolist():
        area = w * h * (0.08 + area_u * 0.92)
        ratio = math.exp(math.log(3 / 4) + ratio_u * (math.log(4 / 3) - math.log(3 / 4)))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(x_u * (w - cw + 1)), int(y_u * (h - ch + 1))
            return (left, top, left + cw, top + ch)
    return _center_box(wh, min(w, h))


def scan(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, class names) of a class-folder tree; `classes` fixes the names and their order."""
    if not folder.is_dir():
        raise DdnnError(f"image folder {folder} does not exist; data.root must hold train/ and val/ "
                        "with one sub-folder of images per class")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    names = classes if classes is not None else found
    if classes is not None and set(found) != set(classes):
        odd = sorted(set(found) ^ set(classes))
        raise DdnnError(f"{folder} has other class folders than train/ ({', '.join(odd[:5])}); "
                        "both splits need the same classes")
    paths, labels = [], []
    for label, name in enumerate(names):
        files = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        if not files:
            raise DdnnError(f"class folder {folder / name} holds no images ({', '.join(EXTENSIONS)})")
        paths += files
        labels += [label] * len(files)
    if len(names) < 2:
        raise DdnnError(f"{folder} must hold at least 2 class folders, found {len(names)}")
    return paths, labels, names


@DATASETS.register("imagefolder", help="class-folder images under data.root/{train,val}/<class>/ (ImageNet layout)")
def load_image_folder(cfg) -> Dataset:
    if cfg.root is None:
        raise DdnnError("dataset imagefolder needs data.root: the folder that holds train/ and val/")
    root = Path(cfg.root).expanduser()
    resize = cfg.resize or round(cfg.image_size * 256 / 224)

    def split(paths: list[Path], labels: list[int]) -> Split:
        return Split(FolderImages(paths, cfg.image_size, resize, cfg.workers), torch.tensor(labels))

    train_paths, train_labels, classes = scan(root / "train")
    test_paths, test_labels, _ = scan(root / "val", classes)
    return carve("imagefolder", split(train_paths, train_labels), split(test_paths, test_labels), len(classes),
                 cfg.val_fraction, cfg.test_fraction, cfg.split_seed, cfg.train_limit,
                 stats=(IMAGENET_MEAN, IMAGENET_STD))
