"""Typed experiment config: dataclasses with defaults (schema.py), loaded from YAML plus dotted
overrides (loading.py); the config reference, docs/config.md, is generated from them (reference.py)."""

from ddnn.config.loading import (BUNDLED, apply_overrides, bundled_configs, check_ranges, find_config, flatten,
                                 from_dict, load_config, lookup, merge_sections, parse_override, read_yaml,
                                 saved_config, to_dict)
from ddnn.config.schema import (EKD_PAPER, INCIDENTAL_KEYS, Config, DataConfig, DistributedConfig, KDConfig,
                                MethodConfig, ModelConfig, OnlineConfig, OptimConfig, RuntimeConfig, ScheduleConfig,
                                SyntheticConfig, TrainConfig, is_incidental)

__all__ = ["BUNDLED", "EKD_PAPER", "INCIDENTAL_KEYS", "Config", "DataConfig", "DistributedConfig", "KDConfig",
           "MethodConfig", "ModelConfig", "OnlineConfig", "OptimConfig", "RuntimeConfig", "ScheduleConfig",
           "SyntheticConfig", "TrainConfig", "apply_overrides", "bundled_configs", "check_ranges", "find_config",
           "flatten", "from_dict", "is_incidental", "load_config", "lookup", "merge_sections", "parse_override",
           "read_yaml", "saved_config", "to_dict"]
