"""Learning-rate schedules as a factor of the base LR at a (fractional) epoch, stepped per iteration."""

import math

import torch


def lr_factor(epoch: float, total_epochs: int, cfg) -> float:
    """Multiplier of the base LR `epoch` epochs into training (after optional linear warm-up)."""
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        return (epoch + 1e-8) / cfg.warmup_epochs
    if cfg.name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(epoch / max(total_epochs, 1), 1.0)))
    if cfg.name == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, cfg, total_epochs: int, steps_per_epoch: int):
    """A LambdaLR to be stepped after every optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step / steps_per_epoch, total_epochs, cfg)
    )


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov and cfg.momentum > 0)
