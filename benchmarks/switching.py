"""What switching sub-nets costs at inference: each sub-net of a DDNN timed three ways in one loop.

- standalone: the extracted plain module (what gets deployed);
- ddnn: `ddnn(x, subnet)`, which runs the sub-net's cached plan (a plain Sequential over the shared layers);
- features: `ddnn(x, subnet, features=True)`, the call EKD makes in training (also returns stage outputs).

Ratios over standalone are printed as a Markdown table. Weights are random (timing does not depend
on them). Usage: python benchmarks/switching.py [--model resnet32 --subnets resnet20,resnet14,resnet8]
"""

import argparse
import platform

import torch

from ddnn.deploy.latency import time_interleaved
from ddnn.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--subnets", default="resnet20,resnet14,resnet8")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build_model(args.model, 10, args.channels, subnets=args.subnets.split(",")).eval()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, fp32, "
          f"median of {args.repeats} after {args.warmup} warm-up, random weights")
    print("| net | batch | standalone ms | ddnn / standalone | features / standalone |")
    print("|---|---|---|---|---|")
    for name in net.subnets:
        alone = net.extract(name).eval()
        for b in map(int, args.batch_sizes.split(",")):
            x = torch.randn(b, args.channels, args.size, args.size)
            s, plan, keyed = time_interleaved(
                [alone, lambda t, n=name: net(t, n), lambda t, n=name: net(t, n, features=True).logits],
                x, args.warmup, args.repeats)
            print(f"| {name} | {b} | {s['median']:.3f} | {plan['median'] / s['median']:.3f} | "
                  f"{keyed['median'] / s['median']:.3f} |")


if __name__ == "__main__":
    main()
