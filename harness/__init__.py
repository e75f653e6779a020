"""moe-harness: property-based compatibility checks for Mixture-of-Experts loading and running."""

__version__ = "0.1.0"
