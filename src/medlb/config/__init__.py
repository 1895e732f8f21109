"""The config file: models, units, loading and error explanation."""

from medlb.config.loader import ConfigError, LoadedConfig, Problem, load_config, parse_config, print_problems
from medlb.config.models import Config, ServerConfig, ServiceConfig

__all__ = ["Config", "ConfigError", "LoadedConfig", "Problem", "ServerConfig", "ServiceConfig",
           "load_config", "parse_config", "print_problems"]
