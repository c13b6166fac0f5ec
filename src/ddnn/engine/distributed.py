"""Multi-process training under `torchrun`: one process per device, gradients averaged by DDP.

`data.batch_size` is the *global* batch. Every rank draws the same shuffled, augmented global batch
(the order and augmentation come from a seeded generator) and trains on its own contiguous slice, so
the ranks together see exactly the batches a single process would see, and the averaged gradient
is the single-process gradient. The one difference left is BatchNorm: each rank normalises with the
statistics of its own slice (standard DDP behaviour).
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ddnn.errors import DdnnError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def slice(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of `n` samples (sizes differ by at most one)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over ranks (in place); the tensor itself with one process."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def describe(self) -> dict:
        return {"world_size": self.size, "backend": self.backend}


def average_gradients(module: torch.nn.Module, world: World) -> None:
    """Average every parameter's gradient over the processes (what DDP does during a plain backward)."""
    for param in module.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad.div_(world.size)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_rank() -> int:
    """This process's rank from the launcher's environment (0 without one); known before any setup."""
    return int(os.environ.get("RANK", "0"))


def join_world(device: torch.device) -> World:
    """Join the process group that torchrun describes in the environment (gloo on CPU, NCCL on CUDA)."""
    if not launched_by_torchrun():
        return World()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        raise DdnnError("CUDA training across processes needs NCCL, which this torch build lacks; "
                        "use runtime.device=cpu (gloo)")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), backend)


def leave_world() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
