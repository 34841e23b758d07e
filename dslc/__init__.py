"""dslc: a compiler for neural-network models written in `.nn` files."""

__version__ = "0.1.0"
