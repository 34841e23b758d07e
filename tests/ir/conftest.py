"""Fixtures for the printer tests: a stub registry and a small MLP graph (see ir_graphs)."""

from __future__ import annotations

import pytest
from ir_graphs import build_mlp, stub_primitives

from dslc.ir.graph import Graph
from dslc.ops import registry


@pytest.fixture
def stub_registry(monkeypatch):
    """Replace the primitive registry by the stubs for the duration of a test."""
    reg = stub_primitives()
    monkeypatch.setattr(registry, "REGISTRY", reg)
    return reg


@pytest.fixture
def mlp(stub_registry) -> Graph:
    return build_mlp()
