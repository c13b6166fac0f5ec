"""From a config to the objects a run needs: the checks, the dataset, the method, the processes."""

import dataclasses
import random
from pathlib import Path

import numpy as np
import torch

from ddnn.config import Config
from ddnn.data import Dataset, InputSpec, load_dataset
from ddnn.engine.distributed import World, join_world
from ddnn.engine.runtime import Runtime, resolve_runtime
from ddnn.errors import DdnnError
from ddnn.methods import Method
from ddnn.models import ModelBuilder, family_of, resolve_subnets
from ddnn.registry import DATASETS, METHODS

def build_method(cfg: Config, spec: InputSpec) -> Method:
    """The configured method around the configured model, for data described by `spec`."""
    m = cfg.model
    builder = ModelBuilder(
        m.name, m.subnets, m.blocks, num_classes=spec.num_classes, in_channels=spec.shape[0], widths=m.widths,
        bn=m.bn, shortcut=m.shortcut, stem=m.stem, zero_init_residual=m.zero_init_residual,
        cheap=m.cheap, cheap_groups=m.cheap_groups, head=m.head, cheap_layout=m.cheap_layout,
    )
    return METHODS.get(cfg.method.name)(cfg.method, builder)


def load_data(cfg: Config) -> tuple[Dataset, InputSpec]:
    data = load_dataset(cfg.data)
    return data, InputSpec.of(data)


def check_config(cfg: Config) -> None:
    """Fail fast on names the registries don't know, before any data is loaded."""
    DATASETS.get(cfg.data.name)
    METHODS.get(cfg.method.name)
    family, preset = family_of(cfg.model.name)
    full = tuple(cfg.model.blocks) if cfg.model.blocks else preset
    if full is not None:
        resolve_subnets(family, full, cfg.model.subnets)
    if cfg.model.init_from and cfg.model.cheap:
        raise DdnnError("model.init_from loads standard-convolution weights and cannot start a model.cheap net; "
                        "unset one of them")
    init_from = Path(cfg.model.init_from).expanduser() if cfg.model.init_from else None
    if init_from and (not init_from.exists() or init_from.is_dir()):
        raise DdnnError(f"model.init_from file {cfg.model.init_from} {'is a folder' if init_from.is_dir() else 'does not exist'}; "
                        "give the path of a torchvision ResNet state_dict (.pth)")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start(cfg: Config) -> tuple[Runtime, World]:
    """This process's device and precision, and its place among the training processes (under
    torchrun each process takes its own CUDA device)."""
    runtime = resolve_runtime(cfg.runtime)
    world = join_world(runtime.device)
    if world.distributed and runtime.device.type == "cuda":
        runtime = dataclasses.replace(runtime, device=torch.device("cuda", world.local_rank))
        torch.cuda.set_device(runtime.device)
    return runtime, world


def resolve_distributed(cfg: Config, world: World) -> Config:
    """`cfg` with the launch written in: processes, each one's share of the global batch, the LR used."""
    d = cfg.distributed
    if cfg.data.batch_size < world.size:
        raise DdnnError(f"data.batch_size {cfg.data.batch_size} is the global batch and must be at least the "
                        f"number of processes ({world.size})")
    lr = cfg.optim.lr * (cfg.data.batch_size / d.reference_batch if d.lr_scaling == "linear" else 1.0)
    per_rank = -(-cfg.data.batch_size // world.size)
    return dataclasses.replace(cfg, distributed=dataclasses.replace(d, world_size=world.size, per_rank_batch=per_rank, lr=lr))
