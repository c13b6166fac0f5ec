"""Loss terms as pure functions of tensors."""

from ddnn.losses.attention import AT_REDUCTIONS, ATTENTION, attention_distance, attention_map, map_distance
from ddnn.losses.clip import CLIP_RULES, combine_gradients, distill_factor
from ddnn.losses.gram import cross_pairs, gram_loss, gram_matrix, pool_to
from ddnn.losses.kl import KL_REDUCTIONS, kl_distill

__all__ = ["AT_REDUCTIONS", "ATTENTION", "CLIP_RULES", "KL_REDUCTIONS", "attention_distance", "attention_map",
           "combine_gradients", "cross_pairs", "distill_factor", "gram_loss", "gram_matrix", "kl_distill",
           "map_distance", "pool_to"]
