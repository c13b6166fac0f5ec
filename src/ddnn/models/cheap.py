"""Cheap convolutions and the standard -> cheap transform (docs/methods.md, online distillation).

Each cheap convolution replaces one dense 3x3 convolution with the same input and output channels
and stride (so the rest of the network is untouched):
- `depthwise`: a depthwise 3x3 (one filter per input channel), then a 1x1 to the output channels;
- `group`: a 3x3 with g groups (input channels -> input channels), then a 1x1;
- `shift`: every input channel moved by one of the 9 offsets of a 3x3 window (zero fill, no
  parameters, no multiply-adds), then a 1x1.
No BatchNorm or ReLU is put between the two parts: the pair is a linear drop-in for the 3x3, which
in every family is already followed by its own BatchNorm. `cheapen` applies the replacement to the
blocks of a `DynamicNet` (never its stem or head), so the student is a transform of the teacher's
architecture, not a hand-written copy.

Two layouts (`model.cheap_layout`, docs/departures.md): `ddnn` keeps each 3x3's stride in its cheap
form (on the depthwise/group 3x3; shift samples every s-th pixel) and gives channel c the shift offset
floor(9c/C) (contiguous groups); `authors` is the online-distillation authors' code: in a block with
two 3x3s the first runs at full resolution and the stride moves to the second one's 1x1, and channel
c takes offset c mod 9, except the last C mod 9 channels, which are not shifted.
"""

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ddnn.errors import DdnnError

KINDS = ("depthwise", "group", "shift")
LAYOUTS = ("ddnn", "authors")

# The 3x3 window's offsets (dy, dx), row-major: channel group i reads input pixel (y + dy, x + dx).
OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def shift_groups(channels: int) -> list[tuple[int, int]]:
    """[start, end) channel range of each of the 9 offsets: channel c takes offset floor(9c / C),
    so the groups are contiguous and differ in size by at most one (empty ones when C < 9)."""
    bounds = [-(-i * channels // 9) for i in range(10)]  # ceil(i*C/9): first channel with floor(9c/C) >= i
    return [(bounds[i], bounds[i + 1]) for i in range(9)]


class Shift(nn.Module):
    """out[c, y, x] = in[c, s*y + dy_c, s*x + dx_c] with zero outside the image: the parameter-free
    shift of Wu et al., i.e. a depthwise 3x3 (padding 1, stride s) whose kernels are one-hot. `ddnn`:
    channel c takes OFFSETS[floor(9c / C)]; `authors`: OFFSETS[c mod 9] for the first 9 * floor(C / 9)
    channels, (0, 0) for the rest."""

    def __init__(self, channels: int, stride: int = 1, layout: str = "ddnn") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise DdnnError(f"unknown cheap layout '{layout}'; choose one of: {', '.join(LAYOUTS)}")
        self.channels, self.stride, self.layout = channels, stride, layout
        self.groups = shift_groups(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w, s = x.shape[-2], x.shape[-1], self.stride
        padded = F.pad(x, (1, 1, 1, 1))
        if self.layout == "authors":
            return self._modulo(x, padded, h, w, s)
        parts = [padded[:, a:b, 1 + dy: 1 + dy + h: s, 1 + dx: 1 + dx + w: s]
                 for (a, b), (dy, dx) in zip(self.groups, OFFSETS) if b > a]
        return torch.cat(parts, dim=1)

    def _modulo(self, x: torch.Tensor, padded: torch.Tensor, h: int, w: int, s: int) -> torch.Tensor:
        """Channel 9q + i takes offset i: seen as (N, q, 9, H, W), offset i is slot i of dim 2."""
        shifted = self.channels // 9 * 9
        parts = []
        if shifted:
            grid = padded[:, :shifted].unflatten(1, (shifted // 9, 9))
            slots = [grid[:, :, i, 1 + dy: 1 + dy + h: s, 1 + dx: 1 + dx + w: s] for i, (dy, dx) in enumerate(OFFSETS)]
            parts.append(torch.stack(slots, dim=2).flatten(1, 2))
        if shifted < self.channels:
            parts.append(x[:, shifted:, ::s, ::s])
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def extra_repr(self) -> str:
        return f"{self.channels}, stride={self.stride}" + (", layout=authors" if self.layout == "authors" else "")


def _pointwise(cin: int, cout: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=bias)


def depthwise_separable(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Sequential:
    """Depthwise 3x3 (stride kept) then 1x1: 9*cin + cin*cout weights instead of 9*cin*cout."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), _pointwise(cin, cout, bias))


def group_conv(cin: int, cout: int, stride: int = 1, groups: int = 4, bias: bool = False) -> nn.Sequential:
    """3x3 with `groups` groups (stride kept) then 1x1 to mix them: 9*cin*cin/g + cin*cout weights."""
    if groups < 1 or cin % groups:
        raise DdnnError(f"a group convolution with {groups} groups needs input channels divisible by {groups}, "
                        f"but a 3x3 convolution here has {cin}; set model.cheap_groups to a divisor of every "
                        "block width, or change model.widths")
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=groups, bias=False), _pointwise(cin, cout, bias))


def shift_conv(cin: int, cout: int, stride: int = 1, bias: bool = False, layout: str = "ddnn") -> nn.Sequential:
    """Shift (stride applied by its sampling, identical to a strided 1x1 after a full-size shift)
    then 1x1: cin*cout weights, and the shift costs no multiply-adds."""
    return nn.Sequential(Shift(cin, stride, layout), _pointwise(cin, cout, bias))


def cheap_conv(kind: str, cin: int, cout: int, stride: int = 1, groups: int = 4, bias: bool = False,
               layout: str = "ddnn") -> nn.Module:
    """The cheap convolution `kind` in place of a dense 3x3 from `cin` to `cout` channels; with the
    `authors` layout its spatial part runs at full resolution and the 1x1 takes the stride."""
    if kind not in KINDS:
        raise DdnnError(f"unknown cheap convolution '{kind}'; choose one of: {', '.join(KINDS)}")
    spatial = 1 if layout == "authors" else stride
    if kind == "depthwise":
        cheap = depthwise_separable(cin, cout, spatial, bias)
    elif kind == "group":
        cheap = group_conv(cin, cout, spatial, groups, bias)
    else:
        cheap = shift_conv(cin, cout, spatial, bias, layout)
    if spatial != stride:
        cheap[1].stride = (stride, stride)  # the 1x1 samples every s-th pixel of the full-resolution map
    return cheap


def is_dense_3x3(module: nn.Module) -> bool:
    """A standard 3x3 convolution (no groups, padding 1, no dilation): what `cheapen` replaces."""
    return (isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3) and module.groups == 1
            and module.padding == (1, 1) and module.dilation == (1, 1) and module.stride[0] == module.stride[1])


def _replace(module: nn.Module, make: Callable[[nn.Conv2d], nn.Module], keep: nn.Module | None = None) -> int:
    """Replace every dense 3x3 below `module` in place, except `keep`; returns how many."""
    count = 0
    for name, child in module.named_children():
        if child is keep:
            continue
        if is_dense_3x3(child):
            setattr(module, name, make(child))
            count += 1
        else:
            count += _replace(child, make, keep)
    return count


def cheapen(model: nn.Module, kind: str, groups: int = 4, layout: str = "ddnn") -> nn.Module:
    """A copy of `model` whose blocks use cheap convolutions of `kind` instead of dense 3x3 ones.

    `model` is a DynamicNet (anything with `stages`); its stem and head are kept as they are, and
    convolutions that are not dense 3x3 (1x1, depthwise, strided 7x7 ...) stay. The new layers get
    He (fan-out) initialisation like the families' own convolutions. `layout`: see the module docstring.
    """
    if kind not in KINDS:
        raise DdnnError(f"unknown cheap convolution '{kind}'; choose one of: {', '.join(KINDS)}")
    if layout not in LAYOUTS:
        raise DdnnError(f"unknown cheap layout '{layout}'; choose one of: {', '.join(LAYOUTS)}")
    if not hasattr(model, "stages"):
        raise DdnnError(f"cheapen needs a network with stages of blocks (a DynamicNet), got {type(model).__name__}")
    student = copy.deepcopy(model)
    keep = None
    if hasattr(student, "stem") and not list(student.stem.children()):
        # an empty stem (VGG): the first block's first convolution reads the image, as a stem would; it stays
        keep = next((m for m in student.stages.modules() if is_dense_3x3(m)), None)
    strides = _authors_strides(student, keep) if layout == "authors" else {}

    def make(conv: nn.Conv2d) -> nn.Module:
        stride = strides.get(id(conv), conv.stride[0])
        new = cheap_conv(kind, conv.in_channels, conv.out_channels, stride, groups, conv.bias is not None, layout)
        for m in new.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        return new.to(conv.weight.device, conv.weight.dtype)

    replaced = _replace(student.stages, make, keep)
    if replaced == 0:
        raise DdnnError(f"model.cheap={kind}: this {getattr(model, 'family', 'network')} has no dense 3x3 convolution "
                        "in its blocks to replace (it is already cheap); leave model.cheap unset")
    if hasattr(student, "_plans"):
        student._plans.clear()  # cached sub-net plans point at the replaced layers
    return student


def _authors_strides(net: nn.Module, keep: nn.Module | None) -> dict[int, int]:
    """id(conv) -> the stride its cheap form takes in the `authors` layout: a block whose first dense
    3x3 is strided runs it at stride 1 and gives the stride to its second one."""
    strides: dict[int, int] = {}
    for block in (b for stage in net.stages for b in stage):
        convs = [m for m in block.modules() if is_dense_3x3(m) and m is not keep]
        if convs and convs[0].stride[0] > 1:
            if len(convs) < 2 or convs[1].stride[0] != 1:
                raise DdnnError(f"model.cheap_layout=authors moves a block's stride to its second 3x3 convolution, "
                                f"but this {getattr(net, 'family', 'network')} has blocks with one strided 3x3 "
                                "(e.g. bottleneck blocks); use model.cheap_layout=ddnn")
            strides[id(convs[0])], strides[id(convs[1])] = 1, convs[0].stride[0]
    return strides
