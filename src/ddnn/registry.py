"""A tiny name -> factory registry, so configs name components by key (no import paths in YAML)."""

from collections.abc import Callable
from typing import Any

from ddnn.errors import DdnnError, did_you_mean


class Registry:
    """Maps names to factories; `kind` is the word used in error messages ("model", "method")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = fn
            doc = (fn.__doc__ or "").strip().splitlines()
            self._help[name] = help or (doc[0] if doc else "")
            return fn

        return wrap

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._items:
            raise DdnnError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._items)}; "
                f"choose one of: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self, name: str) -> str:
        return self._help.get(name, "")

    def __contains__(self, name: object) -> bool:
        return name in self._items


MODELS = Registry("model")
METHODS = Registry("method")
DATASETS = Registry("dataset")
