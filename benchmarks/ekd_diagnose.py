"""Why does EKD cost accuracy? Measurements inside one DDNN training run (issue 8, step 1).

Trains one run with the real Trainer and records, besides the usual metrics:
- per loss group (the full net's CE, the sub-nets' CE, KL, attention) the gradient norm on the
  convolution weights, grouped by how many nets run them (4 = the stem and each stage's first
  block), and on the classifier, and the cosine between the full net's CE gradient and the sub-nets' terms there (a negative cosine
  means the sub-nets pull the shared weights against the full net); at --probes steps per epoch;
- after every epoch, on the validation split in eval mode: each sub-net's per-stage attention
  distance (zsum) and KL (T = 1) to the full net, and train-mode minus eval-mode top-1 (BN health);
- after every epoch: how far each sub-net's private BN running statistics are from the full net's at
  the same layer (mean |mu_sub - mu_full| / sqrt(var_full), mean |log var_sub/var_full|).

Writes RUN/diagnosis.json and prints a compact summary. Not a claim: one seed per call.

Usage: python benchmarks/ekd_diagnose.py --out runs/diag/kl -- [key=value overrides ...]
       (the claims benchmark's `narrow` setting is a good start:
        model.widths=[4,8,16] train.epochs=8 method.beta=0)
"""

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ddnn.config import load_config
from ddnn.data import batches
from ddnn.engine.trainer import Trainer
from ddnn.losses import attention_map, kl_distill, map_distance
from ddnn.models.norm import PrivateNorm

GROUPS = ("ce_full", "ce_sub", "kl", "att")


def loss_group(term: str, full: str) -> str:
    kind, net = term.split(".", 1)
    return "ce_full" if (kind == "ce" and net == full) else {"ce": "ce_sub", "kl": "kl", "att": "att"}[kind]


def weights_by_users(model) -> dict[str, list[torch.nn.Parameter]]:
    """Convolution weights by the number of configured nets that run them ("convs4" = run by 4 nets),
    and the classifier's weights apart ("head4" when shared by 4 nets, "head1" when private)."""
    users = model.users()
    head = {id(p) for p in model.head.parameters()}
    groups: dict[str, list] = defaultdict(list)
    for p in model.parameters():
        if p.ndim >= 2:
            groups[f"{'head' if id(p) in head else 'convs'}{users.get(id(p), 0)}"].append(p)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0].startswith("head"), -int(kv[0][-1]))))


def flat(grads) -> torch.Tensor:
    return torch.cat([g.float().flatten() for g in grads])


class Probe:
    """Wraps the method's forward_train: at chosen steps, per-group gradients of the loss terms."""

    def __init__(self, trainer: Trainer, every: int) -> None:
        self.trainer, self.every, self.step = trainer, every, 0
        self.method = trainer.method
        self.model = self.method.model
        self.groups = weights_by_users(self.model)
        self.records: list[dict] = []
        self.inner = self.method.forward_train
        self.method.forward_train = self.forward_train

    def forward_train(self, x, y):
        losses, logits = self.inner(x, y)
        if self.step % self.every == 0:
            self.records.append(self.measure(losses))
        self.step += 1
        return losses, logits

    def measure(self, losses: dict) -> dict:
        full = self.model.full.name
        by_group: dict[str, torch.Tensor] = {}
        for term, value in losses.items():
            g = loss_group(term, full)
            by_group[g] = by_group.get(g, 0) + value
        rec: dict = {"step": self.step, "loss": {g: float(v.detach()) for g, v in by_group.items()}}
        params = [p for ps in self.groups.values() for p in ps]
        grads = {}
        for g, v in by_group.items():
            gs = torch.autograd.grad(v, params, retain_graph=True, allow_unused=True)
            grads[g] = [torch.zeros_like(p) if d is None else d for p, d in zip(params, gs)]
        offset = 0
        for users, ps in self.groups.items():
            sl = slice(offset, offset + len(ps))
            offset += len(ps)
            vecs = {g: flat(gs[sl]) for g, gs in grads.items()}
            entry = {f"norm_{g}": v.norm().item() for g, v in vecs.items()}
            others = sum(v for g, v in vecs.items() if g != "ce_full")
            if "ce_full" in vecs and isinstance(others, torch.Tensor) and vecs["ce_full"].norm() > 0:
                entry["cos_full_vs_subterms"] = F.cosine_similarity(vecs["ce_full"], others, dim=0).item()
                for g in vecs:
                    if g != "ce_full" and vecs[g].norm() > 0:
                        entry[f"cos_full_vs_{g}"] = F.cosine_similarity(vecs["ce_full"], vecs[g], dim=0).item()
            rec[users] = entry
        return rec


@torch.no_grad()
def epoch_probe(trainer: Trainer) -> dict:
    """Attention distances, KL and BN health of every sub-net against the full net on val."""
    method, model, rt = trainer.method, trainer.method.model, trainer.runtime
    split = trainer.data.val if trainer.data.val is not None else trainer.data.test
    full = model.full
    subs = [s for s in model.subnets.values() if s != full]
    sums: dict[str, float] = defaultdict(float)
    n = 0
    for mode in ("eval", "train"):
        method.train(mode == "train")
        if mode == "train":  # train-mode BN without updating the running statistics
            saved = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
        for x, y in batches(split, 500, trainer.normalize):
            x, y = rt.to_input(x), y.to(rt.device)
            t = model(x, full, features=True)
            sums[f"{mode}_top1.{full.name}"] += (t.logits.argmax(1) == y).sum().item()
            t_maps = [attention_map(f.float(), "zsum") for f in t.stages]
            for sub in subs:
                s = model(x, sub, features=True)
                sums[f"{mode}_top1.{sub.name}"] += (s.logits.argmax(1) == y).sum().item()
                if mode == "eval":
                    sums[f"kl.{sub.name}"] += kl_distill(t.logits, s.logits, 1.0).item() * len(y)
                    for i, f in enumerate(s.stages):
                        d = map_distance(attention_map(f.float(), "zsum"), t_maps[i], "zsum").item()
                        sums[f"att{i}.{sub.name}"] += d * len(y)
            if mode == "eval":
                n += len(y)
        if mode == "train":
            model.load_state_dict(saved, strict=False)
    method.train()
    out = {k: (100.0 if "top1" in k else 1.0) * v / n for k, v in sums.items()}
    for name in model.subnets:  # the BN health gap: eval-mode minus train-mode top-1
        out[f"bn_gap.{name}"] = out[f"eval_top1.{name}"] - out[f"train_top1.{name}"]
    # private BN statistics: distance of each sub-net's running stats from the full net's, same layer
    dist: dict[str, list] = defaultdict(list)
    for norm in model.modules():
        if isinstance(norm, PrivateNorm) and full.name in norm.norms:
            ref = norm.norms[full.name]
            for key, bn in norm.norms.items():
                if key == full.name:
                    continue
                sd = ref.running_var.float().sqrt() + 1e-5
                dist[f"bn_mean.{key}"].append(((bn.running_mean - ref.running_mean).abs() / sd).mean().item())
                dist[f"bn_logvar.{key}"].append((bn.running_var.log() - ref.running_var.log()).abs().mean().item())
    out.update({k: sum(v) / len(v) for k, v in dist.items()})
    return out


def summarize(diag: dict) -> list[str]:
    lines = []
    steps = diag["steps"]
    epochs = sorted({r["epoch"] for r in steps})
    users = list(dict.fromkeys(k for r in steps for k in r if k.startswith(("convs", "head"))))
    for u in users:
        lines.append(f"{u}: epoch | " + " | ".join(f"norm {g}" for g in GROUPS) + " | cos(full, sub terms)")
        for e in epochs:
            rs = [r[u] for r in steps if r["epoch"] == e]
            cells = []
            for g in GROUPS:
                vals = [r[f"norm_{g}"] for r in rs if f"norm_{g}" in r]
                cells.append(f"{sum(vals) / len(vals):.3f}" if vals else "-")
            cos = [r["cos_full_vs_subterms"] for r in rs if "cos_full_vs_subterms" in r]
            lines.append(f"  {e:>3} | " + " | ".join(cells) + f" | {sum(cos) / len(cos):+.3f}" if cos else "")
    for rec in diag["epochs"]:
        keys = sorted(k for k in rec if k.startswith(("att", "kl.", "bn_gap", "bn_mean", "bn_logvar")))
        lines.append(f"epoch {rec['epoch']}: " + " ".join(f"{k} {rec[k]:.3f}" for k in keys))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--probes", type=int, default=6, help="gradient probes per epoch")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config("mnist5k-resnet32", ["runtime.progress=false", *args.overrides])
    trainer = Trainer(cfg, Path(args.out), log=lambda *_: None)
    probe = Probe(trainer, max(1, trainer.steps_per_epoch // args.probes))
    epochs: list[dict] = []
    train_epoch = trainer.train_epoch

    def train_and_probe(epoch: int) -> dict:
        start = len(probe.records)
        record = train_epoch(epoch)
        for r in probe.records[start:]:
            r["epoch"] = epoch
        epochs.append({"epoch": epoch, **epoch_probe(trainer)})
        return record

    trainer.train_epoch = train_and_probe
    results = trainer.fit()
    diag = {"overrides": args.overrides, "steps": probe.records, "epochs": epochs,
            "test_top1": {k: v["top1"] for k, v in results["nets"].items()},
            "train_top1_last_epoch": trainer.history[-1]["train_top1"]}
    (Path(args.out) / "diagnosis.json").write_text(json.dumps(diag, indent=1))
    print("\n".join(summarize(diag)))
    print("test top-1:", {k: round(v, 2) for k, v in diag["test_top1"].items()})
    print("train top-1 (last epoch, train mode, augmented):",
          {k: round(v, 2) for k, v in diag["train_top1_last_epoch"].items()})
    assert all(math.isfinite(v) for v in diag["test_top1"].values())


if __name__ == "__main__":
    main()
