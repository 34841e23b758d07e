"""Primitives: random."""
