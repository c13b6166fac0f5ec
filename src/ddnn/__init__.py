"""ddnn: one set of shared weights, many depths.

Depth-level Dynamic Neural Networks (DDNN) trained with Embedded Knowledge Distillation (EKD),
plus the path from a trained run to a deployable sub-net. The names below load on first use, so
`import ddnn.runtime` on a device pulls in neither torch nor the model code.
"""

from importlib import import_module

__all__ = ["DdnnError", "DynamicNet", "SubNet", "__version__"]
__version__ = "0.1.0"

_LAZY = {"DdnnError": "ddnn.errors", "DynamicNet": "ddnn.models.dynamic", "SubNet": "ddnn.models.dynamic"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ddnn' has no attribute {name!r}")
