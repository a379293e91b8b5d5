"""Verticals: schemas, case generators, prompts, parsers, verifiers and reward parts.

This layer imports no ML framework; everything above it may import from here.
"""
