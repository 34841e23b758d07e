"""Helpers for the front-end tests: write `.nn` sources into a temporary directory."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def nn_file(tmp_path):
    """nn_file(source, name="m.nn") -> path of a file holding the dedented source."""

    def write(source: str, name: str = "m.nn") -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
        return str(path)

    return write
