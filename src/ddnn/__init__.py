"""ddnn: one set of shared weights, many depths.

Depth-level Dynamic Neural Networks (DDNN) trained with Embedded Knowledge Distillation (EKD),
plus the path from a trained run to a deployable sub-net.
"""

from ddnn.errors import DdnnError
from ddnn.models.dynamic import DynamicNet, SubNet

__all__ = ["DdnnError", "DynamicNet", "SubNet", "__version__"]
__version__ = "0.1.0"
