"""`ddnn export --switchable`: every depth of a DDNN in one file, the depth chosen by an input.

The file computes the logits of depth d (its `depth` input, an index into the depths its metadata
lists) on float images in [0, 1]. Each depth runs the DDNN's own layers, so a layer the depths share
is stored once; what a depth computes its own way (private BN, a private classifier, the calibrated
statistics of a shared BN) is its own. The net is scripted, so the branch on `depth` survives: the
TorchScript file is that script, and the ONNX file is exported from it by the TorchScript-based
exporter, where the branch becomes a chain of `If` nodes (cheapest depth tested first, so the cheap
depths, where a test's few microseconds weigh most, pass the fewest). The exporter runs without
constant folding: with it, it folds each depth's BN into that depth's own copy of the shared
convolutions and the file grows to the sum of the per-depth files; onnxruntime fuses them itself,
per branch, when it loads the file. Like `ddnn export`, the file is written under a temporary
name, run back at every depth through `ddnn.runtime` on real test images and compared with the
DDNN's logits; one depth off by more than the tolerance and nothing is written.
"""

import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddnn import runtime
from ddnn.deploy import export
from ddnn.deploy.provenance import checkpoint_identity
from ddnn.deploy.run import TrainedRun
from ddnn.errors import DdnnError
from ddnn.files import discard, os_error, temp_path, write_into, write_text
from ddnn.methods.ekd import EmbeddedKD
from ddnn.models import DynamicNet
from ddnn.models.cost import count_macs, count_params


def stem(run: TrainedRun) -> str:
    """The file name both formats share: `<full net>-switchable`."""
    return f"{next(iter(run.method.nets()))}-switchable"


def switchable_net(run: TrainedRun) -> DynamicNet:
    """The run's DDNN, or a one-line error saying what can be switched."""
    nets = list(run.method.nets())
    if not isinstance(run.method, EmbeddedKD):
        raise DdnnError(f"--switchable needs a DDNN run (method ekd, ekd-paper or ddnn: one set of weights holding "
                        f"several depths); {run.folder} is a '{run.cfg.method.name}' run whose nets ({', '.join(nets)}) "
                        "have weights of their own: export them one by one with --all")
    if len(nets) < 2:
        raise DdnnError(f"run {run.folder} holds one net ({nets[0]}), so there is nothing to switch: export it with "
                        f"--subnet {nets[0]}, or train a DDNN with several depths (model.subnets)")
    return run.method.model


def _share(copy: nn.Module, live: nn.Module) -> nn.Module:
    """`copy` (one extracted depth) with each layer put back by the one the DDNN runs for that depth,
    where both are the same kind: then layers the depths share are one module, stored once. A layer
    the DDNN computes another way (a shared BN's view onto calibrated statistics) keeps its copy."""
    if type(copy) is not type(live):
        return copy
    children = dict(copy.named_children())
    if not children:
        return live
    for name, child in children.items():
        setattr(copy, name, _share(child, getattr(live, name)))
    return copy


def depth_modules(net: DynamicNet) -> list[nn.Module]:
    """Every configured depth as a plain module over the DDNN's shared layers, in `net.subnets` order."""
    return [_share(net.extract(name), net.plan(name)).eval() for name in net.subnets]


class _Last(nn.Module):
    """The end of the chain: the depth left when every test before failed."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        return self.net(x)


class _Pick(nn.Module):
    """Depth `index` when asked for it, else the rest of the chain (one `If` in ONNX)."""

    def __init__(self, index: int, net: nn.Module, rest: nn.Module) -> None:
        super().__init__()
        self.index = index
        self.net = net
        self.rest = rest

    def forward(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        if depth == self.index:
            return self.net(x)
        return self.rest(x, depth)


class Switchable(nn.Module):
    """(image in [0, 1], depth index) -> that depth's logits. An index no depth has runs the costliest depth."""

    def __init__(self, nets: list[nn.Module], macs: list[int], mean, std) -> None:
        super().__init__()
        order = sorted(range(len(nets)), key=lambda i: macs[i])
        chain: nn.Module = _Last(nets[order[-1]])
        for i in reversed(order[:-1]):
            chain = _Pick(i, nets[i], chain)
        self.normalize = export.Normalized(nn.Identity(), mean, std)
        self.depths = chain

    def forward(self, image: torch.Tensor, depth: int) -> torch.Tensor:
        return self.depths(self.normalize(image), depth)


class DepthAsTensor(nn.Module):
    """The same with the depth as an int64 scalar tensor, as ONNX inputs are. (The TorchScript file
    takes a plain int: comparing tensors cost its cheapest depths 2-3 % at batch 1.)"""

    def __init__(self, switchable: Switchable) -> None:
        super().__init__()
        self.switchable = switchable

    def forward(self, image: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        return self.switchable(image, int(depth))


def describe(run: TrainedRun, net: DynamicNet, nets: list[nn.Module], accuracy: dict[str, dict]) -> dict:
    """The metadata inside the file: input contract and, per depth index, name, blocks, cost and top-1."""
    depths = []
    for index, ((name, sub), alone) in enumerate(zip(net.subnets.items(), nets)):
        depths.append({"index": index, "name": name, "blocks": list(sub.blocks), "params": count_params(alone),
                       "macs": count_macs(alone, run.spec.shape), "top1": accuracy[name]["top1"],
                       "val_top1": accuracy[name]["val_top1"]})
    return {"kind": runtime.KIND, "input": export.input_contract(run.spec),
            "depth_input": {"name": "depth", "dtype": "int64", "shape": [], "values": "an index into depths"},
            "output": {"logits": run.spec.num_classes}, "depths": depths,
            "ranked_by": "val_top1 where present, else top1 (test)"}


def inline_weight_aliases(graph) -> None:
    """Drop the exporter's `Identity(initializer)` nodes (one per extra module path to a shared weight)
    and let the branches read the initializer itself."""
    weights = {init.name for init in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in weights}
    kept = [n for n in graph.node if n.output[0] not in alias]
    del graph.node[:]
    graph.node.extend(kept)

    def rename(g) -> None:
        for node in g.node:
            for k, name in enumerate(node.input):
                node.input[k] = alias.get(name, name)
            for attr in node.attribute:
                if attr.HasField("g"):
                    rename(attr.g)

    rename(graph)


def _serialize(module: nn.Module, meta: dict, fmt: str, example: torch.Tensor) -> bytes:
    """The switchable file's bytes, made in memory (ddnn's own writer puts them on disk)."""
    text = json.dumps(meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript and exporter deprecation notices
        try:
            scripted = torch.jit.script(module if fmt == "torchscript" else DepthAsTensor(module))
        except Exception as err:  # a layer TorchScript cannot compile
            raise DdnnError(f"the DDNN could not be scripted into a switchable file ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:160]}); export its depths one by one with --all") from None
        buffer = io.BytesIO()
        if fmt == "torchscript":
            torch.jit.save(scripted, buffer, _extra_files={f"{runtime.METADATA_KEY}.json": text})
            return buffer.getvalue()
        # the exporter rewrites the script's graphs in place, and later scripts of the same layers in this
        # process would inherit that (a TorchScript file 0.37 MB bigger); it gets a private copy
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        exported = io.BytesIO()
        torch.onnx.export(torch.jit.load(buffer), (example, torch.tensor(0)), exported, dynamo=False,
                          input_names=["image", "depth"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                          do_constant_folding=False)
    import onnx

    model = onnx.load_from_string(exported.getvalue())
    inline_weight_aliases(model.graph)
    model.metadata_props.add(key=runtime.METADATA_KEY, value=text)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _verify(fmt: str, path: Path, pixels: torch.Tensor, references: dict[str, torch.Tensor]) -> dict[str, float]:
    """Max abs difference per depth between the file (run through ddnn.runtime) and the DDNN."""
    try:
        loaded = runtime.load(path, format=fmt, calibrate=False)
        produced = {name: loaded.run(pixels.numpy(), depth=name).logits for name in references}
    except Exception as err:  # a file its own runtime cannot run is not an export
        raise DdnnError(f"the switchable file could not be run back ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:160]}); nothing written") from None
    diffs = {name: float(np.abs(produced[name] - ref.numpy()).max()) for name, ref in references.items()}
    bad = {name: d for name, d in diffs.items() if not d <= export.TOLERANCE}
    if bad:
        raise DdnnError("switchable export failed verification: " + ", ".join(
            f"depth '{n}' differs from the DDNN by {d:.2e}" for n, d in bad.items())
            + f" (> {export.TOLERANCE:g}) on {len(pixels)} images; nothing written")
    return diffs


@torch.no_grad()
def export_switchable(run: TrainedRun, fmt: str, path: Path, images: torch.Tensor, accuracy: dict[str, dict]) -> dict:
    """Write every depth of `run`'s DDNN to one `fmt` file at `path`, verified per depth on `images`
    (uint8 NCHW test images); `accuracy` is per net {"top1", "val_top1"} of the exported checkpoint.
    Returns the description also written beside the file as JSON."""
    net = switchable_net(run)
    if fmt == "onnx":
        export.require_onnx()
    method = run.method.float().cpu().eval()
    nets = depth_modules(net)
    meta = describe(run, net, nets, accuracy)
    module = Switchable(nets, [d["macs"] for d in meta["depths"]], run.spec.mean, run.spec.std).eval()
    meta["params_in_file"] = count_params(module)  # each shared weight once
    pixels = images.float() / 255.0
    normalize = export.Normalized(nn.Identity(), run.spec.mean, run.spec.std)
    references = {name: method.predict(normalize(pixels), name) for name in net.subnets}
    data = _serialize(module, meta, fmt, pixels[:2])
    if path.is_dir():
        raise DdnnError(f"{path} is a folder; give a file name there (or remove the folder)")
    tmp = temp_path(path)  # checked under a temporary name: a failed export never replaces a good file
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_into(tmp, data)
        except OSError as err:
            raise os_error(err, path) from None
        diffs = _verify(fmt, tmp, pixels, references)
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise os_error(err, path) from None
    finally:
        discard(tmp)
    calibrated = run.ckpt.get("calibration", {}).get("nets", {})
    info = {**meta, "format": fmt, "file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "depths": [{**d, "max_abs_diff": diffs[d["name"]]} for d in meta["depths"]],
            "verified": {"images": len(images), "max_abs_diff": max(diffs.values()), "tolerance": export.TOLERANCE},
            "source": {"checkpoint": str(run.checkpoint), "epoch": run.ckpt["epoch"],
                       **checkpoint_identity(run),
                       "calibrated_bn": [name for name in net.subnets if name in calibrated]}}
    write_text(Path(str(path) + ".json"), json.dumps(info, indent=2) + "\n")
    return info
