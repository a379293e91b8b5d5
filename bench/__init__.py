"""Benchmarks that print measured figures (never part of the timed tests)."""
