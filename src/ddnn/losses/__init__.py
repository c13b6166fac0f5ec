"""Loss terms as pure functions of tensors."""

from ddnn.losses.attention import ATTENTION, attention_distance, attention_map, map_distance
from ddnn.losses.kl import kl_distill

__all__ = ["ATTENTION", "attention_distance", "attention_map", "kl_distill", "map_distance"]
