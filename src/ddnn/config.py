"""Typed experiment config: dataclasses with defaults, loaded from YAML plus dotted overrides.

The dataclass defaults are METHODS.md's (the paper's EKD settings); the embedded default run is the
bundled `configs/default.yaml` on top of them, which `ddnn train` uses when no -c is given. Every
key is checked: an unknown key, a wrong type or a value outside its choices is a one-line DdnnError.
"""

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ddnn.errors import DdnnError, did_you_mean

BUNDLED = Path(__file__).parent / "configs"


@dataclass
class SyntheticConfig:
    """Shape of the `synthetic` dataset (class-dependent patterns + noise, for fast tests)."""

    size: int = 512
    image_size: int = 32
    channels: int = 3
    classes: int = 10


@dataclass
class DataConfig:
    name: str = "mnist5k"
    root: str | None = None  # folder holding the dataset files (CIFAR); unused by mnist5k/synthetic
    batch_size: int = 128
    eval_batch_size: int = 500
    val_fraction: float = 0.1  # carved from the training data, stratified
    test_fraction: float = 0.1  # only for datasets without their own test split (mnist5k, synthetic)
    split_seed: int = 0
    train_limit: int | None = None  # keep only this many training images (stratified), for small-data studies
    augment: list[Literal["crop", "flip"]] = field(default_factory=lambda: ["crop"])
    crop_padding: int = 2
    image_size: int = 224  # imagefolder: side of the (random-resized or centre) crop
    resize: int | None = None  # imagefolder: shorter side before the centre crop at evaluation (null: size*256/224)
    workers: int = 4  # imagefolder, smallfolder: threads decoding images
    cache: bool = True  # smallfolder: keep the decoded images under $DDNN_CACHE (~/.cache/ddnn), keyed by content
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    name: str = "resnet56"
    subnets: list[Union[str, list[int]]] = field(default_factory=lambda: ["resnet44", "resnet32", "resnet20"])
    blocks: list[int] | None = None  # override the preset's blocks per stage
    widths: list[int] | None = None  # channels per stage (family default when null)
    bn: Literal["private", "shared"] = "private"
    shortcut: Literal["conv", "pad"] = "conv"
    stem: Literal["cifar", "imagenet"] | None = None  # family default when null
    zero_init_residual: bool = False
    init_from: str | None = None  # torchvision ResNet state_dict file (ImageNet-style families)
    cheap: Literal["depthwise", "group", "shift"] | None = None  # cheap convolutions in the blocks (models/cheap.py)
    cheap_groups: int = 4  # groups of `cheap: group`
    # ddnn: stride in each block's first cheap conv, shift offset floor(9c/C); authors: the online-distillation
    # authors' code: stride on the block's second 1x1, shift offset c mod 9 and the last C mod 9 channels unshifted
    cheap_layout: Literal["ddnn", "authors"] = "ddnn"
    # private: one classifier per sub-net (models/heads.py); auto: private, except for `ekd-paper` (shared,
    # as the paper). Resolved when the config is read, so config.yaml holds shared or private.
    head: Literal["auto", "shared", "private"] = "auto"


@dataclass
class OnlineConfig:
    """`online` (METHODS.md §3): m students and the teacher built on their features, learning together."""

    students: int = 4  # m >= 2
    temperature: float = 4.0  # T of T^2 * KL(softmax_T(teacher) || softmax_T(student))
    # batchmean: KL averaged over the batch (the formula); mean: over batch x classes, 1/C of it (the authors' code)
    kl_reduction: Literal["batchmean", "mean"] = "batchmean"


@dataclass
class KDConfig:
    """Offline distillation from pre-trained teachers (`method.name: kd`, METHODS.md §2)."""

    teachers: list[str] = field(default_factory=list)  # run folders or checkpoint files, K >= 1
    which: Literal["best", "last"] = "best"  # checkpoint taken from a teacher run folder
    teacher_net: str | None = None  # which net of a teacher run (null: its full net)
    teacher_model: str | None = None  # if set, every teacher must be this model (e.g. vgg11)
    temperature: float = 1.0  # T of KL(p_teacher || p_student) (x T^2); the paper uses T = 1
    kl_weight: float = 1.0  # weight of the KL term, averaged over teachers
    gram_weight: float = 1.0  # lambda: weight of the Gram term, averaged over teachers
    cross: int = 3  # Gram pairs (P_a, P_a+k) for k = 1..cross; 1 = classic FSP
    clip: Literal["sskd", "sskd-code", "literal", "none"] = "sskd"  # clipping of the Gram-loss gradient
    task_norm: Literal["ce", "ce+kl"] = "ce"  # the task gradient the Gram gradient is clipped against (eq. 14: CE)
    adapters: Literal["auto", "off"] = "auto"  # 1x1 conv + BN on a teacher point whose width differs


# EKD exactly as the paper states it (METHODS.md §1). `method=ekd-paper` starts from these values
# instead of ddnn's recipe (the dataclass defaults below), for faithful comparisons; keys given in a
# config file's method section or after it on the command line still apply.
EKD_PAPER = {"alpha": 1.0, "beta": 1.0, "temperature": 3.0, "attention": "zsum", "stages": None,
             "detach_teacher": True, "sub_ce": 1.0, "reduce": "sum", "distill_warmup": 0.0, "ensemble": 0.0,
             "sample": "all", "shared_decay": "sum", "teacher": "full"}


@dataclass
class MethodConfig:
    """ddnn's EKD recipe (issue 8, README "The EKD recipe"): KL from the detached full net at T = 1,
    no attention term; with `model.head: auto`, private classifiers. `ekd-paper` starts from EKD_PAPER."""

    name: str = "ekd"
    alpha: float = 1.0  # weight of KL_T(full || sub-net)
    beta: float = 0.0  # weight of the attention distance (the paper: 1; it cost accuracy in every setting measured)
    temperature: float = 1.0  # the paper: 3
    attention: Literal["zsum", "at"] = "zsum"
    at_reduction: Literal["mean", "sum"] = "mean"  # `at` distance: mean over N x H*W (AT's beta 1000), or sum over H*W
    stages: list[int] | None = None  # stage indices matched by attention (null: all)
    detach_teacher: bool = True
    sub_ce: float = 1.0  # weight of each sub-net's CE (0: sub-nets learn only from the full net's posteriors)
    reduce: Literal["sum", "mean", "balanced"] = "sum"  # sum (paper), mean over nets, or balanced: each weight's gradient / nets using it
    distill_warmup: float = 0.0  # epochs over which alpha and beta ramp linearly from 0 to their value
    ensemble: float = 0.0  # gamma: weight of KL_T(mean posterior of all nets || full net), teacher detached
    sample: Literal["all", "sandwich"] = "all"  # sub-nets per step: all, or the smallest + one random other
    shared_decay: Literal["sum", "per_net"] = "sum"  # per_net: weight decay x the number of nets running a weight
    teacher: Literal["full", "ensemble"] = "full"  # the sub-nets' KL target: the full net, or all nets' mean posterior
    online: OnlineConfig = field(default_factory=OnlineConfig)
    kd: KDConfig = field(default_factory=KDConfig)

    @classmethod
    def named(cls, name: str) -> "MethodConfig":
        """The defaults a method section named `name` starts from."""
        return cls(name=name, **EKD_PAPER) if name == "ekd-paper" else cls(name=name)


@dataclass
class OptimConfig:
    name: Literal["sgd"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "multistep", "constant"] = "cosine"
    milestones: list[int] = field(default_factory=lambda: [150, 250])  # epochs, for multistep
    gamma: float = 0.1
    warmup_epochs: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 12
    seed: int = 0
    select: Literal["mean", "full"] = "mean"  # best.pt by mean top-1 over nets, or the full net's


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: Union[Literal["auto"], bool] = "auto"
    threads: int = 0  # 0: torch's default
    progress: Union[Literal["auto"], bool] = "auto"  # tqdm bars; auto: only on a terminal
    tensorboard: bool = False  # also log every epoch to RUN/tensorboard (needs the `tensorboard` extra)


@dataclass
class DistributedConfig:
    """Multi-process training (torchrun). `data.batch_size` is the global batch over all processes."""

    lr_scaling: Literal["none", "linear"] = "none"  # linear: lr = optim.lr * data.batch_size / reference_batch
    reference_batch: int = 128
    # Resolved when a run starts and written to config.yaml (values given here are replaced):
    world_size: int = 1
    per_rank_batch: int | None = None
    lr: float | None = None  # the learning rate actually used


@dataclass
class Config:
    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    seeds: list[int] | None = None  # train once per seed into OUT/seed<S>, then report mean ± std


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` checked against the annotation `tp`; raises a one-line error naming `key`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and "name" in {f.name for f in dataclasses.fields(tp)}:
            value = {"name": value}  # `method=individual` is short for `method.name=individual`
        if not isinstance(value, dict):
            raise DdnnError(f"config key '{key}' must be a mapping of its fields, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise DdnnError(f"config key '{key}' is {value!r}; allowed values: {_type_name(tp)}")
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except DdnnError:
                continue
        raise DdnnError(f"config key '{key}' is {value!r}; expected {_type_name(tp)}")
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise DdnnError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
        return [_coerce(v, typing.get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is type(None):
        if value is not None:
            raise DdnnError(f"config key '{key}' must be null, got {value!r}")
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads `5e-4` (no dot) as a string
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise DdnnError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise DdnnError(
                f"unknown config key '{prefix}{key}'{did_you_mean(str(key), names)}; "
                f"allowed under '{prefix.rstrip('.') or 'the top level'}': {', '.join(names)}"
            )
    named = isinstance(data.get("name"), str) and hasattr(cls, "named")
    obj = cls.named(data["name"]) if named else cls()  # a preset (`method: ekd-paper`) sets its own defaults
    for key, value in data.items():
        setattr(obj, key, _coerce(value, hints[key], prefix + key))
    return obj


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise DdnnError(f"override '{item}' is not key=value (e.g. optim.lr=0.05)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _merge(base: dict[str, Any], path: list[str], value: Any, full_key: str) -> None:
    node = base
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise DdnnError(f"config key '{full_key}': '{part}' is not a section")
        node = child
    if isinstance(node.get(path[-1]), dict) and isinstance(value, str):
        node[path[-1]]["name"] = value  # a section given a name keeps its other keys
    else:
        node[path[-1]] = value


def find_config(ref: str) -> Path:
    """A config path, or the name of a bundled config (`ekd/cifar10-resnet56`)."""
    path = Path(ref)
    if path.is_file():
        return path
    for candidate in (BUNDLED / ref, BUNDLED / f"{ref}.yaml"):
        if candidate.is_file():
            return candidate
    raise DdnnError(f"config '{ref}' not found: give a YAML path or a bundled name ({', '.join(bundled_configs())})")


def bundled_configs() -> list[str]:
    return sorted(str(p.relative_to(BUNDLED).with_suffix("")) for p in BUNDLED.rglob("*.yaml"))


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DdnnError(f"config {path} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    except OSError as err:
        raise DdnnError(f"cannot read config {path}: {err.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DdnnError(f"config {path} must be a mapping of sections (data:, model:, ...), got {type(data).__name__}")
    return data


def load_config(ref: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML file (path or bundled name; None: the bundled default run) <- overrides."""
    path = find_config("default" if ref is None else ref)
    data = read_yaml(path)
    if "stages" in data:
        raise DdnnError(f"config {path} describes a pipeline of runs (stages:); run it with `ddnn train -c {ref}`")
    data.setdefault("name", path.stem)
    for item in overrides:
        keys, value = _parse_override(item)
        _merge(data, keys, value, item.split("=", 1)[0])
    return from_dict(data)


# Numeric keys whose type alone does not make them valid: dotted key -> (test, what is allowed).
_RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "data.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "data.eval_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "data.val_fraction": (lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    "data.test_fraction": (lambda v: 0 < v < 1, "a fraction in (0, 1)"),
    "data.train_limit": (lambda v: v is None or v >= 1, "null or an integer >= 1"),
    "data.crop_padding": (lambda v: v >= 0, "an integer >= 0"),
    "data.image_size": (lambda v: v >= 8, "an integer >= 8"),
    "data.resize": (lambda v: v is None or v >= 8, "null or an integer >= 8"),
    "data.workers": (lambda v: v >= 1, "an integer >= 1"),
    "data.synthetic.size": (lambda v: v >= 1, "an integer >= 1"),
    "data.synthetic.image_size": (lambda v: v >= 1, "an integer >= 1"),
    "data.synthetic.channels": (lambda v: v >= 1, "an integer >= 1"),
    "data.synthetic.classes": (lambda v: v >= 2, "an integer >= 2"),
    "method.temperature": (lambda v: v > 0, "a number > 0"),
    "method.sub_ce": (lambda v: v >= 0, "a number >= 0"),
    "method.distill_warmup": (lambda v: v >= 0, "a number of epochs >= 0"),
    "method.ensemble": (lambda v: v >= 0, "a number >= 0"),
    "method.online.students": (lambda v: v >= 2, "an integer >= 2"),
    "method.online.temperature": (lambda v: v > 0, "a number > 0"),
    "model.cheap_groups": (lambda v: v >= 1, "an integer >= 1"),
    "method.kd.temperature": (lambda v: v > 0, "a number > 0"),
    "method.kd.kl_weight": (lambda v: v >= 0, "a number >= 0"),
    "method.kd.gram_weight": (lambda v: v >= 0, "a number >= 0"),
    "method.kd.cross": (lambda v: 1 <= v <= 4, "an integer 1..4 (pairs of points 1..cross apart)"),
    "optim.lr": (lambda v: v > 0, "a number > 0"),
    "optim.momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "schedule.gamma": (lambda v: v > 0, "a number > 0"),
    "schedule.warmup_epochs": (lambda v: v >= 0, "a number >= 0"),
    "train.epochs": (lambda v: v >= 1, "an integer >= 1"),
    "distributed.reference_batch": (lambda v: v >= 1, "an integer >= 1"),
    "runtime.threads": (lambda v: v >= 0, "an integer >= 0 (0: torch's default)"),
    "seeds": (lambda v: v is None or (len(v) >= 1 and len(set(v)) == len(v) and min(v) >= 0),
              "null or a non-empty list of distinct integers >= 0"),
}


def _check_ranges(cfg: Config) -> None:
    for key, (ok, allowed) in _RANGES.items():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if not ok(value):
            raise DdnnError(f"config key '{key}' is {value!r}; it must be {allowed}")


def from_dict(data: dict[str, Any]) -> Config:
    cfg = _build(Config, data)
    _check_ranges(cfg)
    if cfg.model.head == "auto":
        cfg.model.head = "shared" if cfg.method.name == "ekd-paper" else "private"
    return cfg


# Keys an older ddnn did not write into a run's config, with the values that reproduce what it did:
# issue 8's (head and the EKD options) and issue 19's (cheap_layout, at_reduction, kl_reduction, task_norm).
_BEFORE = {"model": {"head": "shared", "cheap_layout": "ddnn"},
           "method": {"distill_warmup": 0.0, "ensemble": 0.0, "sample": "all", "shared_decay": "sum",
                      "teacher": "full", "at_reduction": "sum", "online": {"kl_reduction": "batchmean"},
                      "kd": {"task_norm": "ce+kl"}}}


def _fill(saved: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """`saved` with the keys of `before` it lacks, inside the sections it has."""
    out = {**saved}
    for key, value in before.items():
        if isinstance(value, dict):
            if isinstance(out.get(key), dict):
                out[key] = _fill(out[key], value)
        elif key not in out:
            out[key] = value
    return out


def saved_config(data: dict[str, Any]) -> Config:
    """The config a run saved (config.yaml, a checkpoint's "config"): every key was written then, so a
    key missing here predates it and takes the value the run actually used, not today's default."""
    return from_dict(_fill(data, _BEFORE))


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
