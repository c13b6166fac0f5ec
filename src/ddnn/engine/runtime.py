"""Device, precision and memory format: the fast path by default, each switchable in the config.

CPU: bf16 autocast where the CPU has native bf16 (AVX512-BF16 or AMX), measured 1.7-2.7x over fp32 for
CIFAR ResNets on a 2-core machine; fp32 elsewhere. channels_last on every CPU: in fp32 too it trained
1.11-1.30x faster than NCHW for every family (benchmarks/RESULTS.md, "A first run in under three
minutes"). CUDA: AMP (bf16 where supported, else fp16 with a gradient scaler) + channels_last.
"""

import contextlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ddnn.errors import DdnnError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# oneDNN instruction-set caps (ONEDNN_MAX_CPU_ISA) that still allow native bf16 kernels
_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512",
              "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL", "DEFAULT")


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists avx512_bf16 or amx_bf16 (bf16 is emulated, and slow, otherwise) and
    oneDNN is not capped below them (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA, e.g. AVX512_CORE)."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    if cap not in _BF16_ISAS:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def describe_choice(runtime: "Runtime", precision_setting: str) -> str:
    """Why `auto` chose this mode, for the run's first line (empty when the precision was given)."""
    if precision_setting != "auto" or runtime.device.type != "cpu":
        return ""
    return " (auto: native bf16)" if runtime.amp_dtype is not None else " (auto: no native bf16 on this CPU)"


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: fp32
    channels_last: bool

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        module = module.to(self.device)
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DdnnError(f"runtime.device '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DdnnError(f"runtime.device is '{name}' but CUDA is not available here; use runtime.device=cpu")
    return device


def set_threads(threads: int, flag: str = "--threads") -> None:
    """A command's `--threads N` (0: torch's default): a busy machine measures and runs better on fewer."""
    if threads < 0:
        raise DdnnError(f"{flag} {threads} must be an integer >= 0 (0: torch's default)")
    if threads > 0:
        torch.set_num_threads(threads)


def resolve_runtime(cfg) -> Runtime:
    """A Runtime from a RuntimeConfig; 'auto' picks the fastest mode this hardware supports well."""
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
    else:
        precision = cfg.precision
    if precision == "fp16" and device.type == "cpu":
        raise DdnnError("runtime.precision=fp16 is for CUDA; on a CPU use bf16 or fp32")
    if cfg.channels_last == "auto":
        # CUDA and CPU bf16: faster. CPU fp32 is 1.14-1.5x faster with it too, but torch 2.13's oneDNN fp32
        # channels_last path corrupted the heap (segfault/abort in convolution backward) in a process that
        # trained several small nets, 3 runs of 3 on an AMD EPYC with AVX512_BF16, 0 of 2 in NCHW (RESULTS.md)
        channels_last = device.type == "cuda" or precision == "bf16"
    else:
        channels_last = bool(cfg.channels_last)
    return Runtime(device, DTYPES.get(precision), channels_last)
