"""The `.nn` grammar, shipped as package data (`dslc.grammar`)."""

from pathlib import Path

GRAMMAR_PATH = Path(__file__).with_name("nn.lark")

__all__ = ["GRAMMAR_PATH"]
