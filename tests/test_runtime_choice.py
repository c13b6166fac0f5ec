"""What `runtime.precision=auto` and `runtime.channels_last=auto` choose, and how the first line says it."""

import pytest
import torch

from ddnn.config import load_config
from ddnn.engine import runtime as rt


@pytest.fixture
def cpuinfo(monkeypatch, tmp_path):
    """Point the bf16 check at a fake /proc/cpuinfo with the given flags."""
    def make(flags: str, isa: str | None = None):
        fake = tmp_path / "cpuinfo"
        fake.write_text(f"processor : 0\nflags : fpu sse2 avx2 avx512f {flags}\n")
        real_path = rt.Path
        monkeypatch.setattr(rt, "Path", lambda p: fake if p == "/proc/cpuinfo" else real_path(p))
        monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
        if isa is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        rt.cpu_has_native_bf16.cache_clear()
    yield make
    rt.cpu_has_native_bf16.cache_clear()


def choose():
    return rt.resolve_runtime(load_config(None, ["runtime.device=cpu", "runtime.channels_last=auto"]).runtime)


def test_native_bf16_is_used_with_channels_last(cpuinfo):
    cpuinfo("avx512_bf16 amx_bf16")
    chosen = choose()
    assert chosen.amp_dtype is torch.bfloat16 and chosen.channels_last
    assert rt.describe_choice(chosen, "auto") == " (auto: native bf16)"


def test_without_bf16_fp32_runs_nchw(cpuinfo):
    # fp32 channels_last is faster but crashed in oneDNN (engine/runtime.py): auto keeps fp32 in NCHW
    cpuinfo("avx512_vnni")
    chosen = choose()
    assert chosen.amp_dtype is None and not chosen.channels_last
    assert rt.describe_choice(chosen, "auto") == " (auto: no native bf16 on this CPU)"
    assert rt.describe_choice(chosen, "fp32") == ""  # a precision the user gave needs no reason


@pytest.mark.parametrize("isa, native", [("AVX512_CORE", False), ("avx2", False), ("AVX512_CORE_BF16", True),
                                         ("AVX512_CORE_AMX", True)])
def test_a_onednn_cap_below_bf16_means_no_native_bf16(cpuinfo, isa, native):
    cpuinfo("avx512_bf16 amx_bf16", isa)
    assert rt.cpu_has_native_bf16() is native
    assert (choose().amp_dtype is torch.bfloat16) is native


def test_channels_last_can_still_be_switched_off(cpuinfo):
    cpuinfo("")
    off = rt.resolve_runtime(load_config(None, ["runtime.device=cpu", "runtime.channels_last=false"]).runtime)
    assert off.amp_dtype is None and not off.channels_last
    on = rt.resolve_runtime(load_config(None, ["runtime.device=cpu", "runtime.channels_last=true"]).runtime)
    assert on.amp_dtype is None and on.channels_last  # fp32 channels_last on request
