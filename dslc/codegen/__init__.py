"""Code generation for fused groups: a target-neutral expression IR and its emitters."""

from dslc.codegen.expr import KernelIR, Unsupported, lower

__all__ = ["KernelIR", "Unsupported", "lower"]
