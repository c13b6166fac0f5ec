"""Model construction: a registered name (preset or family) + sub-net list -> DynamicNet."""

from collections.abc import Sequence

from ddnn.errors import DdnnError, did_you_mean
from ddnn.models.cheap import cheapen
from ddnn.models.dynamic import DynamicNet, FeatureInfo, Features, SubNet
from ddnn.models.heads import private_head
from ddnn.models import mobilenet, resnet, vgg
from ddnn.models.resnet import Family
from ddnn.registry import MODELS

# every model family, by name: ResNets, VGG and MobileNet
FAMILIES: dict[str, Family] = {**resnet.FAMILIES, **vgg.FAMILIES, **mobilenet.FAMILIES}

__all__ = ["FAMILIES", "DynamicNet", "FeatureInfo", "Features", "ModelBuilder", "SubNet", "build_model", "cheapen",
           "family_of", "resolve_subnets"]


def _register() -> None:
    for fam in FAMILIES.values():
        MODELS.register(fam.name, help=f"{fam.about}; set model.blocks")(fam.build)
        for name, blocks in fam.depths.items():
            MODELS.register(name, help=f"{fam.about}, blocks {list(blocks)}")(fam.build)


_register()


def family_of(name: str) -> tuple[Family, tuple[int, ...] | None]:
    """The family a model name belongs to and its preset depth (None for a bare family name)."""
    MODELS.get(name)  # raises the friendly unknown-model error
    for fam in FAMILIES.values():
        if name == fam.name:
            return fam, None
        if name in fam.depths:
            return fam, fam.depths[name]
    raise AssertionError(name)


def _name_for(fam: Family, blocks: tuple[int, ...]) -> str:
    for name, depth in fam.depths.items():
        if depth == blocks:
            return name
    return "d" + "-".join(map(str, blocks))


def resolve_subnets(fam: Family, full: tuple[int, ...], subnets: Sequence[str | Sequence[int]]) -> list[SubNet]:
    """[full net, *configured sub-nets] as SubNets; entries are family names or depth lists."""
    out = [SubNet(_name_for(fam, full), full)]
    for entry in subnets:
        if isinstance(entry, str):
            if entry not in fam.depths:
                raise DdnnError(
                    f"unknown sub-net '{entry}' for a {fam.name} model{did_you_mean(entry, fam.depths)}; "
                    f"named sub-nets: {', '.join(fam.depths)}, or give a depth list like {list(full)}"
                )
            sub = SubNet(entry, fam.depths[entry])
        else:
            sub = SubNet(_name_for(fam, tuple(entry)), tuple(entry))
        if len(sub.blocks) != len(full) or not all(1 <= d <= n for d, n in zip(sub.blocks, full)):
            raise DdnnError(
                f"sub-net '{sub.name}' with blocks {list(sub.blocks)} does not fit the full net "
                f"{list(full)}: give one depth per stage, each between 1 and the full net's"
            )
        if sub.blocks == full:
            raise DdnnError(f"sub-net '{sub.name}' is the full net itself; list only smaller sub-nets")
        if any(sub.blocks == o.blocks for o in out):
            raise DdnnError(f"sub-net {list(sub.blocks)} is listed twice")
        out.append(sub)
    return out


class ModelBuilder:
    """Builds the configured DDNN, or a standalone net of one of its depths (for `individual`)."""

    def __init__(self, name: str, subnets: Sequence[str | Sequence[int]] = (), blocks: Sequence[int] | None = None,
                 cheap: str | None = None, cheap_groups: int = 4, head: str = "shared", cheap_layout: str = "ddnn",
                 **options: object) -> None:
        self.family, preset = family_of(name)
        full = tuple(blocks) if blocks else preset
        if full is None:
            raise DdnnError(
                f"model '{name}' is a family: set model.blocks (e.g. {list(next(iter(self.family.depths.values())))})"
            )
        if any(b < 1 for b in full):
            raise DdnnError(f"model.blocks {list(full)} must be >= 1 in every stage")
        self.subnets = resolve_subnets(self.family, full, subnets)
        self.options = {k: v for k, v in options.items() if v is not None}
        self.options["widths"] = tuple(self.options.get("widths") or self.family.widths)
        self.cheap, self.cheap_groups, self.head, self.cheap_layout = cheap, cheap_groups, head, cheap_layout

    @property
    def num_classes(self) -> int:
        return int(self.options["num_classes"])

    def __call__(self, subnet: SubNet | None = None, standard: bool = False) -> DynamicNet:
        """The configured net (or one depth of it); with `model.cheap` its blocks use cheap
        convolutions unless `standard` asks for the standard-convolution original."""
        net = self.family.build([subnet] if subnet else self.subnets, **self.options)
        if self.head == "private" and len(net.subnets) > 1:
            net = private_head(net)
        return net if standard or not self.cheap else cheapen(net, self.cheap, self.cheap_groups, self.cheap_layout)


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    subnets: Sequence[str | Sequence[int]] = (),
    blocks: Sequence[int] | None = None,
    widths: Sequence[int] | None = None,
    bn: str = "private",
    shortcut: str = "conv",
    stem: str | None = None,
    zero_init_residual: bool = False,
    cheap: str | None = None,
    cheap_groups: int = 4,
    head: str = "shared",
    cheap_layout: str = "ddnn",
) -> DynamicNet:
    """Build a DDNN: `name` is a preset (resnet56) or a family (cifar_resnet, with `blocks`); `cheap`
    gives its blocks cheap convolutions (models/cheap.py)."""
    return ModelBuilder(
        name, subnets, blocks, cheap, cheap_groups, head, cheap_layout, num_classes=num_classes, in_channels=in_channels,
        widths=widths, bn=bn, shortcut=shortcut, stem=stem, zero_init_residual=zero_init_residual,
    )()
