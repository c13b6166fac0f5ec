"""The few plain layers an extracted sub-net is built from (besides torch.nn's own)."""

import torch
from torch import nn


class Residual(nn.Module):
    """relu(body(x) + shortcut(x)): a residual block with no dynamic logic."""

    def __init__(self, body: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class PadShortcut(nn.Module):
    """Parameter-free shortcut (He et al.'s option A): subsample, then zero-pad the new channels."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra_channels // 2
        return nn.functional.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))
