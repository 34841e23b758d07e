"""Primitives: shape."""
