"""Training throughput (images/s) of DDNN configurations and precisions, measured side by side.

    python benchmarks/throughput.py [--steps 12] [--batch 128]

Each case builds the method exactly as `ddnn train` does (1x32x32 inputs, 10 classes: the MNIST-5k
shape) and times full training steps (forward of every net, one backward, one SGD step) after
warm-up. Ratios between rows of one run are what to quote; absolute numbers drift on shared machines.
"""

import argparse
import time

import torch

from ddnn.config import load_config
from ddnn.engine.runtime import resolve_runtime
from ddnn.engine.schedule import make_optimizer
from ddnn.data import InputSpec
from ddnn.engine.setup import build_method

CASES = {
    "ekd resnet56 (56/44/32/20)": ["model.name=resnet56", "model.subnets=[resnet44,resnet32,resnet20]"],
    "ekd resnet32 (32/20/14/8), default": [],
    "ekd resnet32 (32/20/14/8), fp32": ["runtime.precision=fp32", "runtime.channels_last=false"],
    "individual resnet32, 20, 14, 8": ["method=individual"],
    "ekd resnet20 (20/14/8)": ["model.name=resnet20", "model.subnets=[resnet14,resnet8]"],
}


def images_per_second(overrides: list[str], steps: int, batch: int, shape: tuple[int, ...] = (1, 32, 32),
                      config: str = "mnist5k-resnet32") -> float:
    """Training images/s of `config` + `overrides` on random inputs of `shape` (C, H, W), 10 classes."""
    cfg = load_config(config, overrides)
    runtime = resolve_runtime(cfg.runtime)
    spec = InputSpec(num_classes=10, shape=shape, mean=(0.1,) * shape[0], std=(0.3,) * shape[0])
    torch.manual_seed(0)
    method = runtime.prepare(build_method(cfg, spec)).train()
    optimizer = make_optimizer(method.parameters(), cfg.optim)
    x = runtime.to_input(torch.randn(batch, *shape))
    y = torch.randint(0, 10, (batch,), device=runtime.device)

    def step() -> None:
        with runtime.autocast():
            losses, _ = method.forward_train(x, y)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if runtime.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.steps} timed steps")
    rates = {name: images_per_second(o, args.steps, args.batch) for name, o in CASES.items()}
    base = rates["ekd resnet32 (32/20/14/8), default"]
    print("| case | images/s | relative to the default |")
    print("|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
