"""The front end: `.nn` text -> checked, lowered Program (see docs/internals.md)."""

from dslc.frontend.program import check, graph_hash, load_program

__all__ = ["load_program", "check", "graph_hash"]
