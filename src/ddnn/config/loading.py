"""Reading configs: YAML files and dotted overrides onto the dataclass defaults, every key checked.

An unknown key, a wrong type, a value outside its choices or outside its range is a one-line
DdnnError naming the key and what is allowed. The keys themselves live in schema.py.
"""

import copy
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ddnn.config.schema import Config
from ddnn.errors import DdnnError, did_you_mean

BUNDLED = Path(__file__).parent.parent / "configs"


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
    if tp is float and not math.isfinite(value):  # .inf / .nan: a run that could only fail later
        raise DdnnError(f"config key '{key}' is {value!r}; it must be a finite number")
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


def parse_override(item: str) -> tuple[list[str], Any]:
    """`optim.lr=0.05` -> (['optim', 'lr'], 0.05): a dotted key and a YAML value."""
    if "=" not in item:
        raise DdnnError(f"override '{item}' is not key=value (e.g. optim.lr=0.05)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`data` (a config as plain dicts, changed in place and returned) with each `key=value` set.

    A section given a plain word sets its name and keeps its other keys: `method=kd` is `method.name=kd`.
    """
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise DdnnError(f"config key '{item.split('=', 1)[0]}': '{part}' is not a section")
            node = child
        if isinstance(node.get(path[-1]), dict) and isinstance(value, str):
            node[path[-1]]["name"] = value
        else:
            node[path[-1]] = value
    return data


def merge_sections(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` (a config as plain dicts) laid over a copy of `base`, section by section; a section
    given a plain word on either side is a section with that name (`method: kd`, then its kd keys)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_sections(out[key], value)
        elif isinstance(value, str) and isinstance(out.get(key), dict):
            out[key] = {**out[key], "name": value}
        elif isinstance(value, dict) and isinstance(out.get(key), str):
            out[key] = {"name": out[key], **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out


def find_config(ref: str) -> Path:
    """A config path, or the name of a bundled config (`ekd/cifar10-resnet56`)."""
    path = Path(ref)
    if path.is_dir():
        raise DdnnError(f"config {ref} is a folder; give a YAML file or a bundled name (see `ddnn list`)")
    if path.exists():
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
    if not data:  # not the defaults of the dataclasses (ResNet-56 on CIFAR-10): almost surely a mistake
        raise DdnnError(f"config {path} is empty; give a config with its sections (data:, model:, ...; see "
                        "docs/config.md), or leave out -c for the bundled default run")
    if "stages" in data:
        raise DdnnError(f"config {path} describes a pipeline of runs (stages:); run it with `ddnn train -c {ref}`")
    data.setdefault("name", path.stem)
    return from_dict(apply_overrides(data, overrides))


def check_ranges(obj: Any, prefix: str = "") -> None:
    """Every field's range check (schema.option's `check`), section by section, in field order."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{prefix}{f.name}.")
        elif f.metadata.get("check") is not None:
            ok, allowed = f.metadata["check"]
            if not ok(value):
                raise DdnnError(f"config key '{prefix}{f.name}' is {value!r}; it must be {allowed}")


def from_dict(data: dict[str, Any]) -> Config:
    """A Config from plain dicts (a YAML file's content), every key checked; `model.head: auto` resolved."""
    cfg = _build(Config, data)
    check_ranges(cfg)
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
    """The config as plain dicts: what config.yaml and a checkpoint's "config" hold."""
    return dataclasses.asdict(cfg)


def lookup(cfg: Any, key: str) -> Any:
    """The value of a dotted key (`optim.lr`) in a config."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'seed': 0}} -> {'train.seed': 0}: configs compared and shown key by key."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
