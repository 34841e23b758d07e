"""Primitives: reduce."""
