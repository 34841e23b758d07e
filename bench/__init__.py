"""Benchmarks of dslc against PyTorch eager on the CPU (see docs/benchmarks.md)."""
