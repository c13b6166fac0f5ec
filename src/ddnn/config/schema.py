"""Every config key in one place: its type, default, allowed range and what it means.

Each field is an `option(...)`: the default, a help line (the config reference, docs/config.md, is
generated from these) and, where the type alone does not make a value valid, a range check. The
dataclass defaults are ddnn's own recipe; the embedded default run is the bundled
`configs/default.yaml` on top of them, and `method: ekd-paper` starts from EKD_PAPER (the paper).
"""

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from typing import Any, Literal, Union

Check = tuple[Callable[[Any], bool], str]  # (is the value allowed?, what is allowed, for the error)

AT_LEAST_1: Check = (lambda v: v >= 1, "an integer >= 1")
AT_LEAST_0: Check = (lambda v: v >= 0, "an integer >= 0")
POSITIVE: Check = (lambda v: v > 0, "a number > 0")
NON_NEGATIVE: Check = (lambda v: v >= 0, "a number >= 0")


def option(default: Any = MISSING, *, help: str, check: Check | None = None, factory: Callable[[], Any] | None = None,
           shown: str | None = None) -> Any:
    """A config field: `default` (or `factory` for a list), its `help` line, an optional range `check`,
    and `shown`, how the reference writes the default when the value itself would mislead."""
    metadata = {"help": help, "check": check, "shown": shown}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class SyntheticConfig:
    """Shape of the `synthetic` dataset (class-dependent patterns + noise, for fast tests)."""

    size: int = option(512, help="images in the synthetic dataset", check=AT_LEAST_1)
    image_size: int = option(32, help="side of its square images", check=AT_LEAST_1)
    channels: int = option(3, help="channels of its images", check=AT_LEAST_1)
    classes: int = option(10, help="its classes", check=(lambda v: v >= 2, "an integer >= 2"))


@dataclass
class DataConfig:
    name: str = option("mnist5k", help="`mnist5k`, `cifar10`, `cifar100`, `smallfolder`, `imagefolder`, `synthetic`")
    root: str | None = option(None, help="folder holding the CIFAR files, or the `smallfolder`/`imagefolder` tree or "
                              "archives (required for those)")
    batch_size: int = option(128, help="training batch (the global batch under torchrun)", check=AT_LEAST_1)
    eval_batch_size: int = option(500, help="evaluation batch", check=AT_LEAST_1)
    val_fraction: float = option(0.1, help="stratified validation share carved from the training data; 0: none "
                                 "(`best.pt` is then chosen on test, and results.json says so)",
                                 check=(lambda v: 0 <= v < 1, "a fraction in [0, 1)"))
    test_fraction: float = option(0.1, help="test share, only for data without a test split (mnist5k, synthetic)",
                                  check=(lambda v: 0 < v < 1, "a fraction in (0, 1)"))
    split_seed: int = option(0, help="seed of the stratified splits (fixed: the same images every run)")
    train_limit: int | None = option(None, help="keep this many training images (stratified), for small-data studies",
                                     check=(lambda v: v is None or v >= 1, "null or an integer >= 1"))
    augment: list[Literal["crop", "flip"]] = option(help="any of `crop`, `flip` (MNIST digits are not flipped)",
                                                    factory=lambda: ["crop"])
    crop_padding: int = option(2, help="zero padding of the random crop", check=AT_LEAST_0)
    image_size: int = option(224, help="`imagefolder`: side of the training (random-resized) and evaluation "
                             "(centre) crop", check=(lambda v: v >= 8, "an integer >= 8"))
    resize: int | None = option(None, help="`imagefolder`: shorter side before the centre crop "
                                "(null: image_size * 256/224)", check=(lambda v: v is None or v >= 8,
                                                                         "null or an integer >= 8"))
    workers: int = option(4, help="`imagefolder`, `smallfolder`: threads decoding images", check=AT_LEAST_1)
    cache: bool = option(True, help="`smallfolder`: keep the decoded images in `$DDNN_CACHE` (default "
                         "`~/.cache/ddnn`), keyed by the sources' content")
    synthetic: SyntheticConfig = option(help="the synthetic dataset's shape", factory=SyntheticConfig)


@dataclass
class ModelConfig:
    name: str = option("resnet56", help="a named depth (its family and full depth) or a family name with "
                       "`model.blocks`; see `ddnn list`")
    subnets: list[Union[str, list[int]]] = option(help="the nested sub-nets, by name or as depth vectors "
                                                  "(`[[2,3,4,2]]`)",
                                                  factory=lambda: ["resnet44", "resnet32", "resnet20"])
    blocks: list[int] | None = option(None, help="blocks per stage of the full net (overrides the name's)")
    widths: list[int] | None = option(None, help="channels per stage (the family's when null)")
    bn: Literal["private", "shared"] = option("private", help="`private` (one BatchNorm per sub-net), `shared`")
    shortcut: Literal["conv", "pad"] = option("conv", help="`conv` (1x1 projection), `pad` (CIFAR option A)")
    stem: Literal["cifar", "imagenet"] | None = option(None, help="`cifar` (3x3/1), `imagenet` (7x7/2 + max-pool); "
                                                       "null: the family's")
    zero_init_residual: bool = option(False, help="zero the last BN of every residual branch")
    init_from: str | None = option(None, help="a torchvision ResNet `state_dict` file to start from "
                                   "(ImageNet-style families, `imagenet` stem)")
    cheap: Literal["depthwise", "group", "shift"] | None = option(None, help="`shift`, `depthwise`, `group`: the "
                                                                  "blocks' dense 3x3 convolutions become cheap ones")
    cheap_groups: int = option(4, help="groups of `model.cheap=group` (must divide every block's input channels)",
                               check=AT_LEAST_1)
    cheap_layout: Literal["ddnn", "authors"] = option("ddnn", help="`ddnn` (each cheap conv keeps its 3x3's stride; "
                                                      "shift offset floor(9c/C)), `authors` (the online-distillation "
                                                      "authors' code: stride on a block's second 1x1, shift offset "
                                                      "c mod 9, last C mod 9 channels unshifted)")
    # Resolved when the config is read, so config.yaml holds shared or private.
    head: Literal["auto", "shared", "private"] = option("auto", help="`private`: one classifier per sub-net (like "
                                                        "private BN; an extracted net is unchanged), `shared`: one "
                                                        "for all; `auto`: `private`, except `shared` for `ekd-paper`")


@dataclass
class OnlineConfig:
    """`online`: m students and the teacher built on their features, learning together."""

    students: int = option(4, help="m >= 2 students of `online`", check=(lambda v: v >= 2, "an integer >= 2"))
    temperature: float = option(4.0, help="T of `online`'s T^2 * KL(teacher || student)", check=POSITIVE)
    kl_reduction: Literal["batchmean", "mean"] = option("batchmean", help="`online`'s KL averaged over the batch "
                                                        "(`batchmean`) or over batch x classes (`mean`, 1/C of it: "
                                                        "the authors' code)")


@dataclass
class KDConfig:
    """Offline distillation from pre-trained teachers (`method.name: kd`)."""

    teachers: list[str] = option(help="`kd`: teacher run folders or checkpoint files (K >= 1)", factory=list)
    which: Literal["best", "last"] = option("best", help="checkpoint taken from a teacher run folder")
    teacher_net: str | None = option(None, help="which net of a teacher run (null: its full net), e.g. `resnet20` "
                                     "of a DDNN")
    teacher_model: str | None = option(None, help="if set, every teacher must be this model (refused otherwise)")
    temperature: float = option(1.0, help="T of the KL term (x T^2); the paper uses T = 1", check=POSITIVE)
    kl_weight: float = option(1.0, help="weight of (1/K) sum_k KL(teacher k || student)", check=NON_NEGATIVE)
    gram_weight: float = option(1.0, help="lambda: weight of (1/K) sum_k L_gram,k", check=NON_NEGATIVE)
    cross: int = option(3, help="Gram pairs (P_a, P_a+k) for k = 1..cross (1 = classic FSP; at most points - 1)",
                        check=(lambda v: 1 <= v <= 4, "an integer 1..4 (pairs of points 1..cross apart)"))
    clip: Literal["sskd", "sskd-code", "literal", "none"] = option("sskd", help="clipping of the Gram gradient: "
                                                                   "`sskd`, `sskd-code` (SSKD_SVD's train.py), "
                                                                   "`literal` (eqs. 12-14 as printed), `none`")
    task_norm: Literal["ce", "ce+kl"] = option("ce", help="the task gradient the Gram gradient is clipped against: "
                                               "`ce` (eq. 14), `ce+kl` (ddnn before issue 19)")
    adapters: Literal["auto", "off"] = option("auto", help="`auto`: 1x1 conv + BN where a teacher point's width "
                                              "differs; `off`: refuse such teachers")


@dataclass
class MethodConfig:
    """The method and its options. The fields beside `name`, `online` and `kd` are EKD's (`ekd`,
    `ekd-paper`, `ddnn`): their defaults are ddnn's recipe, and `ekd-paper` starts from EKD_PAPER."""

    name: str = option("ekd", help="`ekd` (ddnn's recipe), `ekd-paper` (the paper's literal EKD), `ddnn` (CE "
                       "only), `individual`, `online`, `kd`")
    alpha: float = option(1.0, help="weight of KL_T(full || sub-net)")
    beta: float = option(0.0, help="weight of the attention distance")
    temperature: float = option(1.0, help="T of the KL term (multiplied by T^2)", check=POSITIVE)
    attention: Literal["zsum", "at"] = option("zsum", help="`zsum` (channel sum, standardised, MSE), `at` "
                                              "(Zagoruyko & Komodakis)")
    at_reduction: Literal["mean", "sum"] = option("mean", help="`at` distance averaged over N x H x W (`mean`, the "
                                                  "AT paper's scale), or summed over H x W and averaged over N "
                                                  "(`sum`, H x W times larger: ddnn before issue 19)")
    stages: list[int] | None = option(None, help="stage indices matched by attention (null: all)")
    detach_teacher: bool = option(True, help="the full net learns only from labels")
    sub_ce: float = option(1.0, help="weight of each sub-net's CE; 0: sub-nets learn only from the full net's "
                           "posteriors", check=NON_NEGATIVE)
    reduce: Literal["sum", "mean", "balanced"] = option("sum", help="`sum` (paper), `mean` over nets of every loss "
                                                        "term, or `balanced`: each weight's gradient divided by the "
                                                        "number of nets that run it")
    distill_warmup: float = option(0.0, help="epochs over which alpha and beta ramp linearly from 0",
                                   check=(lambda v: v >= 0, "a number of epochs >= 0"))
    ensemble: float = option(0.0, help="gamma: weight of KL_T(mean posterior of all nets || full net), the mean "
                             "detached", check=NON_NEGATIVE)
    sample: Literal["all", "sandwich"] = option("all", help="sub-nets per step: `all`, or `sandwich` (the smallest + "
                                                "one random other; full net always)")
    shared_decay: Literal["sum", "per_net"] = option("sum", help="`per_net`: a weight run by n nets decays n times "
                                                     "as fast")
    teacher: Literal["full", "ensemble"] = option("full", help="the sub-nets' KL target: `full` net, or `ensemble` "
                                                  "(the detached mean posterior of all nets)")
    online: OnlineConfig = option(help="`online`'s options", factory=OnlineConfig)
    kd: KDConfig = option(help="`kd`'s options", factory=KDConfig)

    @classmethod
    def named(cls, name: str, **changes: Any) -> "MethodConfig":
        """The defaults a method section named `name` starts from, with `changes` on top."""
        preset = EKD_PAPER if name == "ekd-paper" else {}
        return cls(name=name, **{**preset, **changes})


# EKD exactly as the paper states it: `method: ekd-paper` starts from these values instead of the
# defaults above, for faithful comparisons; keys given in a config file's method section or after it
# on the command line still apply. docs/methods.md has the formulas.
EKD_PAPER = {"alpha": 1.0, "beta": 1.0, "temperature": 3.0, "attention": "zsum", "stages": None,
             "detach_teacher": True, "sub_ce": 1.0, "reduce": "sum", "distill_warmup": 0.0, "ensemble": 0.0,
             "sample": "all", "shared_decay": "sum", "teacher": "full"}


@dataclass
class OptimConfig:
    name: Literal["sgd"] = option("sgd", help="the optimizer")
    lr: float = option(0.1, help="SGD learning rate (for the global batch)", check=POSITIVE)
    momentum: float = option(0.9, help="SGD momentum", check=(lambda v: 0 <= v < 1, "a number in [0, 1)"))
    weight_decay: float = option(1e-4, help="SGD weight decay", check=NON_NEGATIVE)
    nesterov: bool = option(False, help="Nesterov momentum")


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "multistep", "constant"] = option("cosine", help="`cosine`, `multistep`, `constant` "
                                                              "(stepped every iteration)")
    milestones: list[int] = option(help="epochs of the `multistep` decays", factory=lambda: [150, 250])
    gamma: float = option(0.1, help="factor of each `multistep` decay", check=POSITIVE)
    warmup_epochs: float = option(0.0, help="linear warm-up from 0 (fractional allowed)", check=NON_NEGATIVE)


@dataclass
class TrainConfig:
    epochs: int = option(12, help="training epochs", check=AT_LEAST_1)
    seed: int = option(0, help="seeds weights, data order and augmentation")
    select: Literal["mean", "full"] = option("mean", help="`best.pt` by the mean top-1 over nets or by the `full` "
                                             "net's")


@dataclass
class RuntimeConfig:
    device: str = option("auto", help="`auto`, `cpu`, `cuda`, `cuda:N`")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option("auto", help="`auto` (bf16 on CPUs with native bf16 "
                                                                "and on CUDA that supports it, fp16 on older CUDA, "
                                                                "else fp32), `fp32`, `bf16`, `fp16`")
    channels_last: Union[Literal["auto"], bool] = option("auto", help="`auto` (on with bf16/CUDA), true, false")
    threads: int = option(0, help="torch threads (0: torch's default)",
                          check=(lambda v: v >= 0, "an integer >= 0 (0: torch's default)"))
    progress: Union[Literal["auto"], bool] = option("auto", help="tqdm bars; `auto`: only when stderr is a terminal")
    tensorboard: bool = option(False, help="also log lr, every loss term and top-1 per epoch to `RUN/tensorboard/` "
                               "(`pip install 'ddnn[tensorboard]'`)")


@dataclass
class DistributedConfig:
    """Multi-process training (torchrun). `data.batch_size` is the global batch over all processes."""

    lr_scaling: Literal["none", "linear"] = option("none", help="`linear`: lr = `optim.lr` * `data.batch_size` / "
                                                   "`distributed.reference_batch`")
    reference_batch: int = option(128, help="the batch `optim.lr` is meant for, with `linear` scaling",
                                  check=AT_LEAST_1)
    # Resolved when a run starts and written to config.yaml (values given here are replaced):
    world_size: int = option(1, help="processes of the launch (written by ddnn)", shown="written by ddnn")
    per_rank_batch: int | None = option(None, help="each process's share of the global batch (written by ddnn)",
                                        shown="written by ddnn")
    lr: float | None = option(None, help="the learning rate actually used (written by ddnn)", shown="written by ddnn")


@dataclass
class Config:
    name: str = option("default", help="run name, used in the run folder's name", shown="the config file's name")
    run_id: str | None = option(None, help="the run's identity, written by ddnn train into config.yaml, results.json "
                                "and every checkpoint: a checkpoint copied in from another run is refused",
                                shown="written by ddnn")
    data: DataConfig = option(help="the dataset", factory=DataConfig)
    model: ModelConfig = option(help="the network", factory=ModelConfig)
    method: MethodConfig = option(help="the training method", factory=MethodConfig)
    optim: OptimConfig = option(help="the optimizer", factory=OptimConfig)
    schedule: ScheduleConfig = option(help="the learning-rate schedule", factory=ScheduleConfig)
    train: TrainConfig = option(help="the training run", factory=TrainConfig)
    runtime: RuntimeConfig = option(help="where and how fast it runs", factory=RuntimeConfig)
    distributed: DistributedConfig = option(help="multi-process training", factory=DistributedConfig)
    seeds: list[int] | None = option(None, help="e.g. `[0,1,2]`: train once per seed into OUT/seed<S>, then report "
                                     "mean ± std (same as `--seeds`)",
                                     check=(lambda v: v is None or (len(v) >= 1 and len(set(v)) == len(v)
                                                                    and min(v) >= 0),
                                            "null or a non-empty list of distinct integers >= 0"))


# Dotted keys (a trailing '.' names a whole section) that say where or how a run ran, not what it
# trains: resuming may change them, and `ddnn report` pools runs that differ only in them (and the seed).
INCIDENTAL_KEYS = ("name", "run_id", "data.root", "runtime.", "distributed.world_size",
                   "distributed.per_rank_batch", "distributed.lr")


def is_incidental(key: str) -> bool:
    """True for a dotted key INCIDENTAL_KEYS names (itself or its section)."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in INCIDENTAL_KEYS)
