"""Training methods, registered by name (`method.name` in a config)."""

from ddnn.methods import ekd, individual, kd, online  # noqa: F401  (registration)
from ddnn.methods.base import Method, ModelFactory

__all__ = ["Method", "ModelFactory"]
