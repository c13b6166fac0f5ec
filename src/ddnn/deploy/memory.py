"""Peak memory of one forward pass: weights, input and the most activations alive at once.

On CUDA the caching allocator counts it (`max_memory_allocated`). On a CPU there is no such counter,
so every operator's outputs are counted as they are created (a TorchDispatchMode) and released when
their last tensor dies; what the operators allocate internally and free before returning (e.g. a
convolution's scratch space) is not seen.
"""

import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


class TensorMemoryTracker(TorchDispatchMode):
    """Counts bytes of tensor storages created inside the mode; `peak` is the most alive at once."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[tuple[str, int], list[int]] = {}  # storage -> [bytes, tensors alive]
        self._known: set[tuple[str, int]] = set()

    def ignore(self, tensors) -> None:
        """Storages that existed before (weights, the input): views of them cost nothing."""
        self._known.update(_storage_key(t) for t in tensors)

    def _release(self, key: tuple[str, int]) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._refs[key]

    def _track(self, t: torch.Tensor) -> None:
        key = _storage_key(t)
        if key in self._known or t.untyped_storage().nbytes() == 0:
            return
        entry = self._refs.setdefault(key, [t.untyped_storage().nbytes(), 0])
        if entry[1] == 0:
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


def _bytes(tensors) -> int:
    return sum(t.untyped_storage().nbytes() for t in {_storage_key(t): t for t in tensors}.values())


@torch.no_grad()
def peak_forward_memory(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of weights + input + the peak of activations alive during `model(x)`."""
    resident = [*model.parameters(), *model.buffers(), x]
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
        model(x)
        torch.cuda.synchronize(x.device)
        return _bytes(resident) + torch.cuda.max_memory_allocated(x.device) - base
    tracker = TensorMemoryTracker()
    tracker.ignore(resident)
    with tracker:
        model(x)
    return _bytes(resident) + tracker.peak
