"""The moe-harness oracle: a readable torch MoE and the rules every engine must agree with."""

from reference.config import ConfigError, MoESpec, RoutingKnobs, UnsupportedConfig, resolve_moe_spec

__all__ = ["ConfigError", "MoESpec", "RoutingKnobs", "UnsupportedConfig", "resolve_moe_spec"]
