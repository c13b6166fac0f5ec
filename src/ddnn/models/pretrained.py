"""Start from pretrained weights: a torchvision ResNet state_dict copied into a DynamicNet.

torchvision's names (conv1, bn1, layer{s}.{i}.conv1/bn1/..., downsample.0/.1, fc) map one to one
onto the ImageNet-style families, so the full net computes exactly the torchvision model with those
weights. A sub-net runs the first blocks of each stage, so it starts as the torchvision net made of
those prefix blocks; every private BatchNorm of a position gets the same copy of the file's BN.
"""

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from ddnn.checkpoint import read_torch_file, sha256_of
from ddnn.errors import DdnnError
from ddnn.models.dynamic import DynamicNet
from ddnn.models.heads import PrivateLayer
from ddnn.models.norm import PrivateNorm, SharedNorm

FAMILIES = ("resnet_basic", "resnet_bottleneck")
BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# Files saved before PyTorch 0.4.1 (torchvision's first ResNet weights) have no BN step counter.
OPTIONAL = ("num_batches_tracked",)
_BLOCK_KEY = re.compile(r"^layer(\d+)\.(\d+)\.")


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a file, read with weights_only=True so a file can never run code.

    Accepts the usual wrappers ({"state_dict": ...}, {"model": ...}) and DataParallel's "module."
    prefix; anything else that is not names -> tensors is a one-line DdnnError.
    """
    path = Path(path)
    if not path.exists():
        raise DdnnError(f"init_from file {path} does not exist; give the path of a torchvision ResNet state_dict (.pth)")
    obj = read_torch_file(path, "init_from file", "download or save it again")
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    not_state = f"init_from file {path} is not a state dict (a mapping of names to tensors)"
    if not isinstance(obj, Mapping) or not obj:
        raise DdnnError(f"{not_state}: it holds {'an empty mapping' if isinstance(obj, Mapping) else type(obj).__name__}; "
                        "save model.state_dict() of a torchvision ResNet")
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise DdnnError(f"{not_state}: entry {name!r} is a {type(value).__name__}; "
                            "save model.state_dict() of a torchvision ResNet")
    if all(name.startswith("module.") for name in obj):
        return {name[len("module."):]: value for name, value in obj.items()}
    return dict(obj)


def _bns(norm: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm layers behind one keyed norm: every sub-net's (private) or the one (shared)."""
    if isinstance(norm, PrivateNorm):
        return list(norm.norms.values())
    if isinstance(norm, SharedNorm):
        return [norm.norm]
    return [norm]


def _layout(net: DynamicNet) -> list[tuple[str, str, list[torch.Tensor]]]:
    """(torchvision key, ddnn name, the net's tensors that take it), in torchvision's order."""
    names = {id(m): n for n, m in net.named_modules()}
    out: list[tuple[str, str, list[torch.Tensor]]] = []

    def conv_bn(conv: nn.Conv2d, tv_conv: str, norm: nn.Module, tv_bn: str) -> None:
        out.append((f"{tv_conv}.weight", f"{names[id(conv)]}.weight", [conv.weight]))
        bns = _bns(norm)
        for entry in BN_ENTRIES:
            out.append((f"{tv_bn}.{entry}", f"{names[id(bns[0])]}.{entry}", [getattr(bn, entry) for bn in bns]))

    conv_bn(net.stem[0], "conv1", net.stem[1], "bn1")
    for s, blocks in enumerate(net.stages):
        for i, block in enumerate(blocks):
            tv = f"layer{s + 1}.{i}"
            convs = [m for m in block.body if isinstance(m, nn.Conv2d)]
            norms = [m for m in block.body if not isinstance(m, (nn.Conv2d, nn.ReLU))]
            for j, (conv, norm) in enumerate(zip(convs, norms), start=1):
                conv_bn(conv, f"{tv}.conv{j}", norm, f"{tv}.bn{j}")
            if block.shortcut is not None:
                conv_bn(block.shortcut[0], f"{tv}.downsample.0", block.shortcut[1], f"{tv}.downsample.1")
    fcs = _classifiers(net)  # every private classifier gets the file's, as every private BN does
    out.append(("fc.weight", f"{names[id(fcs[0])]}.weight", [fc.weight for fc in fcs]))
    out.append(("fc.bias", f"{names[id(fcs[0])]}.bias", [fc.bias for fc in fcs]))
    return out


def _classifiers(net: DynamicNet) -> list[nn.Linear]:
    """The head's linear layer: the shared one, or every sub-net's private copy."""
    fc = net.head[2]
    return list(fc.layers.values()) if isinstance(fc, PrivateLayer) else [fc]


def _file_blocks(state: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    """Blocks per stage in a torchvision file, read from its layer{s}.{i}. keys."""
    blocks: dict[int, int] = {}
    for key in state:
        if m := _BLOCK_KEY.match(key):
            s, i = int(m[1]), int(m[2])
            blocks[s] = max(blocks.get(s, 0), i + 1)
    return tuple(blocks.get(s, 0) for s in range(1, max(blocks, default=0) + 1))


def _check_mappable(net: DynamicNet) -> None:
    if net.family not in FAMILIES:
        raise DdnnError(
            f"init_from maps torchvision ImageNet ResNets (resnet_basic, resnet_bottleneck: resnet10..resnet152); "
            f"a {net.family} model has no torchvision counterpart: choose one of those models or drop init_from"
        )
    if not any(isinstance(m, nn.MaxPool2d) for m in net.stem):
        raise DdnnError(
            "init_from maps torchvision ImageNet ResNets, whose stem is a 7x7/2 conv + max-pool; this model "
            "has the 3x3 'cifar' stem: set model.stem=imagenet or drop init_from"
        )


def init_from_torchvision(
    net: DynamicNet, state: Mapping[str, torch.Tensor], allow_deeper_file: bool = False
) -> list[str]:
    """Copy a torchvision ResNet state_dict into `net` in place; returns notes on what was left out.

    All or nothing: every key and shape is checked before anything is copied. A classifier with
    another class count keeps its fresh init (fine-tuning), which is a note, not an error.
    `allow_deeper_file` lets a standalone shallower net take the file's first blocks of each stage.
    """
    _check_mappable(net)
    if "conv1.weight" not in state:
        first = ", ".join(list(state)[:3])
        raise DdnnError(f"init_from file has no 'conv1.weight' (first keys: {first}); "
                        "it is not a torchvision ResNet state_dict")
    have, want = _file_blocks(state), net.max_blocks
    if len(have) != len(want):
        raise DdnnError(f"init_from file has {len(have)} stages but the model {len(want)}; "
                        "use a torchvision ResNet file with the model's stages")
    if any(h > w for h, w in zip(have, want)) and not allow_deeper_file:
        raise DdnnError(
            f"init_from file has more blocks per stage {list(have)} than the model {list(want)}; "
            "use the model of the file's depth (its sub-nets take the prefix blocks) or a file of this depth"
        )
    fc_file, fc_net = state.get("fc.weight"), _classifiers(net)[0].weight
    head_differs = (fc_file is not None and fc_file.dim() == 2 and fc_file.shape[1] == fc_net.shape[1]
                    and fc_file.shape[0] != fc_net.shape[0])
    notes = []
    if head_differs:
        notes.append(f"classifier not loaded: the file has {fc_file.shape[0]} classes, the model {fc_net.shape[0]} "
                     "(fine-tuning); it keeps its fresh init")
    plan = _copy_plan(_layout(net), state, have, want, head_differs, allow_deeper_file)
    with torch.no_grad():
        for dst, src in plan:
            dst.copy_(src)
    return notes


def _copy_plan(layout, state: Mapping[str, torch.Tensor], have: tuple[int, ...], want: tuple[int, ...],
               skip_head: bool, allow_deeper_file: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(the net's tensor, the file's) for every entry of the layout, after checking that every key
    the net needs is in the file with its shape and that the file holds nothing the net lacks."""
    plan = []
    for key, name, dsts in layout:
        if skip_head and key.startswith("fc."):
            continue
        if key not in state:
            if key.rsplit(".", 1)[1] in OPTIONAL:
                continue
            depth = f" (blocks per stage: file {list(have)}, model {list(want)})" if have != want else ""
            raise DdnnError(f"init_from file is missing '{key}' for the model's {name}{depth}; "
                            "use a torchvision ResNet file of the model's family and depth")
        src = state[key]
        if src.shape != dsts[0].shape:
            raise DdnnError(
                f"init_from file does not fit the model: '{key}' is {list(src.shape)} in the file but "
                f"{list(dsts[0].shape)} in the model ({name}); match the file's family, depth, widths and in_channels"
            )
        plan.extend((dst, src) for dst in dsts)
    known = {key for key, _, _ in layout}
    for key in state:
        m = _BLOCK_KEY.match(key)
        deeper = m is not None and 1 <= int(m[1]) <= len(want) and int(m[2]) >= want[int(m[1]) - 1]
        if key not in known and not (deeper and allow_deeper_file):
            raise DdnnError(f"init_from file has '{key}', which the model lacks; "
                            "use a torchvision ResNet file of the model's family and depth")
    return plan


def apply_init_from(method: nn.Module, path: Path, log: Callable[[str], None] = print) -> str:
    """Initialise every DynamicNet inside `method` from one torchvision file; returns its sha256.

    The deepest net must match the file exactly; shallower standalone nets (the `individual`
    baseline builds one per depth) take the file's prefix blocks, as DDNN sub-nets do.
    """
    path = Path(path)
    state = load_state_file(path)
    nets = [m for m in method.modules() if isinstance(m, DynamicNet)]
    if not nets:
        raise DdnnError("init_from needs a DynamicNet to load into; this method holds none")
    deepest = max(sum(net.max_blocks) for net in nets)
    notes: list[str] = []
    for net in nets:
        for note in init_from_torchvision(net, state, allow_deeper_file=sum(net.max_blocks) < deepest):
            if note not in notes:
                notes.append(note)
    for note in notes:
        log(f"init_from: {note}")
    digest = sha256_of(path)
    log(f"init_from: {path} (sha256 {digest[:12]}) loaded into {len(nets)} net(s)")
    return digest
