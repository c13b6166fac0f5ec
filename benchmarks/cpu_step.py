"""CPU time per training image of a config's method: one thread, synthetic inputs, this process's
CPU clock (time.process_time), so other jobs on a shared machine barely change it.

    python benchmarks/cpu_step.py CONFIG|- CxHxW [key=value ...]     (- : the default config)
    ONEDNN_MAX_CPU_ISA=AVX512_CORE python benchmarks/cpu_step.py - 1x28x28 runtime.precision=fp32

Times 8 full training steps (every net's forward, one backward, one SGD step) after 3 warm-up steps.
"""
import sys, time, torch
from ddnn.config import load_config
from ddnn.data.spec import InputSpec
from ddnn.engine.runtime import resolve_runtime
from ddnn.engine.schedule import make_optimizer
from ddnn.engine.setup import build_method
torch.set_num_threads(1)
config, shape, *over = sys.argv[1:]
c, h, w = map(int, shape.split("x"))
cfg = load_config(config if config != "-" else None, ["runtime.threads=1", *over])
rt = resolve_runtime(cfg.runtime)
spec = InputSpec(10, (c, h, w), (0.0,) * c, (1.0,) * c)
torch.manual_seed(0)
m = rt.prepare(build_method(cfg, spec)).train()
opt = make_optimizer(m.parameter_groups(cfg.optim.weight_decay), cfg.optim)
b = cfg.data.batch_size
x = rt.to_input(torch.randn(b, c, h, w)); y = torch.randint(0, 10, (b,))
def step():
    opt.zero_grad(set_to_none=True)
    with rt.autocast():
        losses, _ = m.forward_train(x, y)
    sum(losses.values()).backward(); opt.step()
for _ in range(3): step()
n = 8; t0 = time.process_time()
for _ in range(n): step()
print(f"{config} {' '.join(over)}: {rt.precision}{' cl' if rt.channels_last else ''} {1000*(time.process_time()-t0)/(n*b):.2f} ms CPU/image")
