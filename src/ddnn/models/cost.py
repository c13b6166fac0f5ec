"""Parameters and multiply-accumulates of a network: the one place costs are counted.

MACs = FLOPs / 2, where FLOPs are counted by torch.utils.flop_counter.FlopCounterMode (2 FLOPs per
multiply-add of convolutions and matrix products; normalisation, activations and pooling are not
counted), for one input at the dataset's resolution.
"""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

MACS_NOTE = "MACs = FLOPs/2 counted by torch.utils.flop_counter (convs + linear), one image"


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass on a single input of shape (C, H, W)."""
    was_training = module.training
    module.eval()
    param = next(module.parameters())
    x = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
    with FlopCounterMode(display=False) as counter:
        module(x)
    module.train(was_training)
    return counter.get_total_flops() // 2


def net_cost(net: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """{"params", "macs"} of a standalone net (an extracted sub-net), counted in fp32 on the CPU.

    The net itself is moved there (extracted nets are copies, so nothing else moves with it)."""
    net = net.float().cpu().to(memory_format=torch.contiguous_format)
    return {"params": count_params(net), "macs": count_macs(net, tuple(input_shape))}
