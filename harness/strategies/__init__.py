"""Hypothesis strategies: they generate inputs for the checks and never judge them."""
