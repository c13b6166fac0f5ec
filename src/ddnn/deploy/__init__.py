"""Deployment: cost of each sub-net (params, MACs), extraction to standalone files."""
