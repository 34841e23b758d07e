"""The import layering `cli -> api -> runtime -> passes -> frontend -> ir/ops -> errors`,
and the packaging list in pyproject.toml, checked against the files on disk."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# top-level folder -> the package it installs as (pyproject's package-dir)
FOLDERS = {"dslc": "dslc", "runtime": "dslc.runtime", "grammar": "dslc.grammar"}

# Higher imports lower, never the reverse. Within one layer anything goes (ir and ops are
# one layer: the builder asks the registry for rules, the registry builds on ir types).
LAYERS = {
    "dslc.errors": 0,
    "dslc.ir": 1,
    "dslc.ops": 1,
    "dslc.frontend": 2,
    "dslc.grammar": 2,  # the syntax, read by the front end
    "dslc.layers": 2,  # built-in layers written in .nn, read by the front end
    "dslc.passes": 3,
    "dslc.codegen": 3,  # kernel IR and emitters for fused groups, read by the runtime
    "dslc.runtime": 4,
    "dslc.datasets": 4,  # built-in data, loaded by the runtime's data module
    "dslc.api": 5,
    "dslc.gradcheck": 5,  # runs graphs with the runtime's data and initialisers
    "dslc.cli": 6,
    "dslc.__main__": 6,  # `python -m dslc` is the command line
    "dslc.tools": 6,  # developer tools (the fuzzer) over everything below
}
NAMES = {0: "errors", 1: "ir/ops", 2: "frontend", 3: "passes", 4: "runtime", 5: "api", 6: "cli"}
# `dslc/__init__.py` runs before any submodule, so it may import nothing above errors.
ROOT_LEVEL = 0


def module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every .py under the three folders."""
    out = {}
    for folder, pkg in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


def layer_of(module: str) -> int | None:
    """The layer a dslc module belongs to; None for modules outside dslc."""
    if module == "dslc":
        return ROOT_LEVEL
    best = None
    for prefix, level in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, level)
    if best is None:
        return None if not module.startswith("dslc") else -1
    return best[1]


def imports_of(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported dslc module, line) for every import statement, lazy ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            # `from dslc import passes` imports the subpackage dslc.passes
            for a in node.names:
                sub = f"{target}.{a.name}"
                if layer_of(sub) != layer_of(target) or sub in MODULES:
                    out.append((sub, node.lineno))
    return [(m, line) for m, line in out if m == "dslc" or m.startswith("dslc.")]


MODULES = module_files()


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if layer_of(m) == -1]
    assert not unplaced, f"add these packages to LAYERS in {__file__}: {unplaced}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_imports(module):
    path = MODULES[module]
    own = layer_of(module)
    bad = []
    for target, line in imports_of(module, path):
        level = layer_of(target)
        if level is not None and level > own:
            rel = path.relative_to(ROOT)
            bad.append(
                f"{rel}:{line}: {module} ({NAMES.get(own, own)}) imports {target} "
                f"({NAMES.get(level, level)})"
            )
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_layering_sees_upward_imports(tmp_path):
    """The checker itself: a relative import from ir up into passes is caught."""
    f = tmp_path / "__init__.py"
    f.write_text("from ..passes import dce\nfrom . import graph\nimport dslc.cli\n")
    found = imports_of("dslc.ir", f)
    upward = {m for m, _ in found if layer_of(m) > layer_of("dslc.ir")}
    assert upward == {"dslc.passes", "dslc.passes.dce", "dslc.cli"}
    assert ("dslc.ir.graph", 2) in found


# --- packaging ------------------------------------------------------------------------------


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def packages_on_disk() -> set[str]:
    """Every folder under dslc/, runtime/, grammar/ holding Python files, as a package name."""
    out = set()
    for folder, pkg in FOLDERS.items():
        for d in [ROOT / folder, *sorted(p for p in (ROOT / folder).rglob("*") if p.is_dir())]:
            if "__pycache__" in d.parts or not any(d.glob("*.py")):
                continue
            rel = d.relative_to(ROOT / folder).parts
            out.add(".".join([pkg, *rel]))
    return out


def test_packages_list_matches_folders():
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    on_disk = packages_on_disk()
    assert not on_disk - listed, (
        f"folders missing from [tool.setuptools] packages: {sorted(on_disk - listed)}"
    )
    assert not listed - on_disk, f"listed packages with no folder: {sorted(listed - on_disk)}"


def test_every_package_folder_has_an_init():
    """A folder of modules without `__init__.py` would be a namespace package: not shipped."""
    missing = [
        str(d.relative_to(ROOT))
        for folder in FOLDERS
        for d in [ROOT / folder, *(p for p in (ROOT / folder).rglob("*") if p.is_dir())]
        if "__pycache__" not in d.parts and any(d.glob("*.py")) and not (d / "__init__.py").exists()
    ]
    assert not missing, f"package folders without __init__.py: {missing}"


def test_package_dir_maps_the_top_level_folders():
    mapping = pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapping == {"dslc.runtime": "runtime", "dslc.grammar": "grammar"}
