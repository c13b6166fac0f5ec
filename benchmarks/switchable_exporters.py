"""Which torch exporter makes the switchable ONNX file: the evidence behind ddnn's choice.

Both candidates get the same module: every depth of the default DDNN (ResNet-32 holding 20/14/8,
random weights and random BN statistics, 1x32x32 inputs) over its shared layers, behind a branch on
the depth index:

- script: `torch.jit.script` + the TorchScript-based `torch.onnx.export(dynamo=False)`, with and
  without constant folding (what `ddnn export --switchable` does, without folding);
- cond: `torch.export` with nested `torch.cond` + the dynamo exporter (`dynamo=True`; needs
  `pip install onnxscript`, which ddnn does not depend on).

Reported: export time, file size, the numbers stored as initializers (the DDNN holds each shared
weight once), whether onnxruntime's outputs match, and each depth's onnxruntime latency over its
static file at batch 1 and 32 (timed in turn in one loop, medians).
Usage: python benchmarks/switchable_exporters.py [--threads 1] [--repeats 100]
"""

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ddnn.deploy.export import Normalized
from ddnn.deploy.switchable import DepthAsTensor, Switchable, depth_modules, inline_weight_aliases
from ddnn.models import build_model


class _Cond(nn.Module):
    """Depth 0 of `nets` if depth == 0, else the rest: nested torch.cond (torch.export's control flow)."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.net = nets[0]
        self.rest = _Cond(nets[1:]) if len(nets) > 1 else None

    def forward(self, x: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        if self.rest is None:
            return self.net(x)
        return torch.cond(depth == 0, lambda x, d: self.net(x), lambda x, d: self.rest(x, d - 1), (x, depth))


class CondSwitchable(nn.Module):
    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.normalize = Normalized(nn.Identity(), [0.5], [0.25])
        self.depths = _Cond(nets)

    def forward(self, image: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        return self.depths(self.normalize(image), depth)


def export(kind: str, module: nn.Module, path: Path) -> float:
    example = (torch.rand(2, 1, 32, 32), torch.tensor(0))
    names = dict(input_names=["image", "depth"], output_names=["logits"])
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "cond":
            torch.onnx.export(module, example, str(path), dynamo=True, opset_version=18, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)}, None), **names)
        else:
            torch.onnx.export(torch.jit.script(module), example, str(path), dynamo=False, opset_version=17,
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                              do_constant_folding=kind == "script+folding", **names)
            model = onnx.load(str(path))
            inline_weight_aliases(model.graph)
            onnx.save(model, str(path))
    return time.perf_counter() - start


def timed(fns, x, repeats: int) -> list[float]:
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        fn(x)
        fn(x)
    for r in range(repeats):
        for k in range(len(fns)):
            i = (k + r) % len(fns)
            start = time.perf_counter()
            fns[i](x)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) * 1e3 for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    net = build_model("resnet32", 10, 1, subnets=["resnet20", "resnet14", "resnet8"]).eval()
    for m in net.modules():  # BN statistics as after training, so folding them would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    names = list(net.subnets)
    nets = depth_modules(net)
    from ddnn.models.cost import count_macs

    kinds = {"script": DepthAsTensor(Switchable(nets, [count_macs(n, (1, 32, 32)) for n in nets], [0.5], [0.25])).eval()}
    kinds["script+folding"] = kinds["script"]
    try:
        import onnxscript  # noqa: F401

        kinds["cond"] = CondSwitchable(nets).eval()
    except ImportError:
        print("onnxscript is not installed: the torch.cond candidate is skipped (pip install onnxscript)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.log_severity_level = 3
    folder = Path(tempfile.mkdtemp())
    statics = {}
    for name, alone in zip(names, (net.extract(n).eval() for n in names)):
        path = folder / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Normalized(alone, [0.5], [0.25]), (torch.rand(2, 1, 32, 32),), str(path), dynamo=False,
                              input_names=["image"], output_names=["logits"], opset_version=17,
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
        statics[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    per_depth_sum = sum(os.path.getsize(folder / f"{n}.onnx") for n in names)
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} thread(s), median of {args.repeats}; "
          f"the four static files: {per_depth_sum / 2**20:.2f} MiB, the DDNN's weights and BN statistics "
          f"{sum(t.numel() for t in net.state_dict().values() if t.is_floating_point()):,} numbers")
    print("\n| exporter | export s | file MiB | numbers stored | max abs diff | "
          + " | ".join(f"{n} @1 | {n} @32" for n in names) + " |")
    print("|---" * (5 + 2 * len(names)) + "|")
    x = {b: np.random.default_rng(0).random((b, 1, 32, 32), dtype=np.float32) for b in (1, 32)}
    for kind, module in kinds.items():
        path = folder / f"switchable-{kind}.onnx"
        seconds = export(kind, module, path)
        stored = sum(int(np.prod(i.dims)) for i in onnx.load(str(path)).graph.initializer)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        with torch.no_grad():
            diff = max(float(np.abs(session.run(None, {"image": x[32], "depth": np.array(i)})[0]
                                    - net(torch.from_numpy((x[32] - 0.5) / 0.25), n).numpy()).max())
                       for i, n in enumerate(names))
        cells = []
        for i, name in enumerate(names):
            for b in (1, 32):
                static, switch = timed([lambda a: statics[name].run(None, {"image": a}),
                                        lambda a, i=i: session.run(None, {"image": a, "depth": np.array(i)})], x[b],
                                       args.repeats if b == 1 else max(10, args.repeats // 10))
                cells.append(f"{switch / static:.3f}")
        print(f"| {kind} | {seconds:.1f} | {os.path.getsize(path) / 2**20:.2f} | {stored:,} | {diff:.1e} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
