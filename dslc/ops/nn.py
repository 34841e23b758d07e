"""Primitives: nn."""
