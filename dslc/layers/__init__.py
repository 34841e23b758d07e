"""The built-in layers, written in the `.nn` language itself (`*.nn` in this folder).

Every block of every file here is visible in every program (a program's own definitions
hide them); docs/language.md lists them. `dslc.frontend.resolve.prelude()` loads them.
"""

from pathlib import Path

LAYERS_DIR = Path(__file__).resolve().parent


def layer_files() -> list[Path]:
    return sorted(LAYERS_DIR.glob("*.nn"))


__all__ = ["LAYERS_DIR", "layer_files"]
