"""Experiments made of runs: several seeds of one config, pipelines of stages, reports that pool them."""

from ddnn.experiments.seeds import train

__all__ = ["train"]
