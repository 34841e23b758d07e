"""Primitives: elementwise."""
