"""Typed experiment configs: YAML files of overrides, dotted ``--set`` overrides, clear errors."""

from emofuse.config.loader import ConfigError, apply_overrides, dump_config, load_config, load_yaml
from emofuse.config.schema import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    TrainerConfig,
    register_model_options,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainerConfig",
    "apply_overrides",
    "dump_config",
    "load_config",
    "load_yaml",
    "register_model_options",
]
