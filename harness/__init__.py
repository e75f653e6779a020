"""moe-harness: property-based compatibility checks for Mixture-of-Experts loading and running."""

from harness.offline import force_offline

__version__ = "0.1.0"

# Before anything of ours imports transformers: loading never reaches the network.
force_offline()
