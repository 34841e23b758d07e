"""Files to modules: reading, `import` resolution (root, cycles), definition tables, the prelude."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from pathlib import Path

from dslc.errors import ConfigError, DslcError, ImportError_, NameError_, Span
from dslc.frontend import ast as A
from dslc.frontend.parse import parse_text
from dslc.layers import LAYERS_DIR

ALLOW_ENV = "DSLC_ALLOW_IMPORTS_OUTSIDE"


class ModuleNS:
    """One loaded file: its own blocks, blocks brought in by `import`, and `as` aliases."""

    def __init__(self, module: A.Module, path: str, prelude: ModuleNS | None):
        self.module = module
        self.path = path
        self.prelude = prelude
        self.blocks: dict[str, A.BlockDef] = {}
        self.imported: dict[str, tuple[A.BlockDef, ModuleNS]] = {}
        self.aliases: dict[str, ModuleNS] = {}

    def lookup(self, name: str):
        """(BlockDef, defining ModuleNS) or an alias ModuleNS or None."""
        if name in self.blocks:
            return self.blocks[name], self
        if name in self.imported:
            return self.imported[name]
        if name in self.aliases:
            return self.aliases[name]
        if self.prelude is not None:
            return self.prelude.lookup(name)
        return None

    def visible_names(self) -> set[str]:
        names = set(self.blocks) | set(self.imported) | set(self.aliases)
        if self.prelude is not None:
            names |= self.prelude.visible_names()
        return names


def _read(path: str, span: Span | None) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        if span is None:
            raise ConfigError(f"no such model file: {path}") from None
        raise ImportError_(
            f"cannot find `{os.path.basename(path)}`: no file {path}", span
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        err = ConfigError if span is None else ImportError_
        raise err(f"cannot read {path}: {e}", span) from None


def _define_blocks(ns: ModuleNS, errors: list[DslcError]) -> None:
    """Fill `ns.blocks`; a name defined twice in one file is an error."""
    seen: dict[str, Span] = {}
    for item in ns.module.order:
        if isinstance(item, A.BlockDef | A.ModelDef):
            first = seen.get(item.name)
            if first is not None:
                errors.append(
                    NameError_(
                        f"`{item.name}` is defined twice in this file",
                        item.span,
                        notes=[f"first defined at {first}"],
                    )
                )
                continue
            seen[item.name] = item.span
            if isinstance(item, A.BlockDef):
                ns.blocks[item.name] = item


# --- the prelude: dslc/layers/*.nn -----------------------------------------------------------


_BLOCK_DEF = re.compile(r"^[ \t]*block[ \t]+([A-Za-z_][A-Za-z_0-9]*)", re.MULTILINE)


class PreludeNS(ModuleNS):
    """The built-in layer blocks of dslc/layers/*.nn. A file is parsed when one of its blocks
    is first looked up, so a model pays only for the layer files it uses."""

    def __init__(self, files: dict[str, str]):
        super().__init__(A.Module(str(LAYERS_DIR)), str(LAYERS_DIR), None)
        self.files = files  # path -> text
        self.index: dict[str, str] = {}  # block name -> the file that defines it
        for path, text in files.items():
            for name in _BLOCK_DEF.findall(text):
                if name in self.index:
                    raise NameError_(
                        f"built-in block `{name}` is defined in {self.index[name]} and {path}"
                    )
                self.index[name] = path
        self.parsed: set[str] = set()

    def lookup(self, name: str):
        path = self.index.get(name)
        if path is not None and path not in self.parsed:
            self.parsed.add(path)
            module = parse_text(self.files[path], path)
            for b in module.blocks:
                self.blocks[b.name] = dataclasses.replace(b, builtin=True)
        b = self.blocks.get(name)
        return None if b is None else (b, self)

    def visible_names(self) -> set[str]:
        return set(self.index)


@functools.lru_cache(maxsize=1)
def prelude() -> PreludeNS:
    """The built-in layer blocks; each file parsed at most once per process."""
    return PreludeNS(prelude_sources())


@functools.lru_cache(maxsize=1)
def _layer_files() -> tuple[tuple[str, str], ...]:
    return tuple((str(p), p.read_text(encoding="utf-8")) for p in sorted(LAYERS_DIR.glob("*.nn")))


def prelude_sources() -> dict[str, str]:
    """path -> text of every built-in layer file (read once per process)."""
    return dict(_layer_files())


# --- loading a program's files ---------------------------------------------------------------


class Loader:
    """Loads the main file and everything it imports; collects errors instead of stopping."""

    def __init__(self, main: str, allow_outside: bool | None = None):
        self.main = main
        self.root = Path(os.path.abspath(main)).parent
        if allow_outside is None:
            allow_outside = os.environ.get(ALLOW_ENV, "") not in ("", "0", "false", "no")
        self.allow_outside = allow_outside
        self.sources: dict[str, str] = {}
        self.modules: dict[str, ModuleNS] = {}  # by real path
        self.errors: list[DslcError] = []

    def load_main(self) -> ModuleNS:
        return self._load(self.main, None, [])

    def _load(self, path: str, span: Span | None, stack: list[str]) -> ModuleNS | None:
        real = os.path.realpath(path)
        if real in self.modules:
            return self.modules[real]
        text = _read(path, span)
        self.sources[path] = text
        module = parse_text(text, path)
        ns = ModuleNS(module, path, prelude())
        self.modules[real] = ns
        _define_blocks(ns, self.errors)
        stack = stack + [real]
        for imp in module.imports:
            self._import(ns, imp, stack)
        return ns

    def _import(self, ns: ModuleNS, imp: A.Import, stack: list[str]) -> None:
        base = Path(ns.path).parent
        target = Path(imp.path)
        if target.is_absolute() and not self.allow_outside:
            self.errors.append(
                ImportError_(
                    f'import "{imp.path}": absolute paths are not allowed',
                    imp.span,
                    hint="import files by a path relative to the importing file, or pass "
                    f"--allow-imports-outside (or set {ALLOW_ENV}=1) to allow imports from "
                    "anywhere",
                )
            )
            return
        full = os.path.normpath(base / target)
        real = os.path.realpath(full)
        if not self.allow_outside and not _inside(real, os.path.realpath(self.root)):
            self.errors.append(
                ImportError_(
                    f'import "{imp.path}" leaves the directory of the main file ({self.root})',
                    imp.span,
                    hint="keep imported files next to the model or below it, or pass "
                    f"--allow-imports-outside (or set {ALLOW_ENV}=1, or "
                    "allow_imports_outside=True in Python) to allow it",
                )
            )
            return
        if real in stack:
            names = [os.path.basename(p) for p in stack[stack.index(real) :]]
            chain = " -> ".join(names + [os.path.basename(real)])
            self.errors.append(ImportError_(f"import cycle: {chain}", imp.span))
            return
        try:
            other = self._load(full, imp.span, stack)
        except DslcError as e:
            self.errors.append(e)
            return
        if other is None:
            return
        if imp.alias:
            if imp.alias in ns.aliases or imp.alias in ns.blocks:
                self.errors.append(NameError_(f"`{imp.alias}` is already defined", imp.span))
            ns.aliases[imp.alias] = other
            return
        for name, bdef in other.blocks.items():
            if name in ns.blocks:
                self.errors.append(
                    NameError_(
                        f"block `{name}` is defined here and also imported from {imp.path}",
                        ns.blocks[name].span,
                        notes=[f"the imported one is at {bdef.span}"],
                        hint=f'import it under a name instead: import "{imp.path}" as m',
                    )
                )
                continue
            prev = ns.imported.get(name)
            if prev is not None and prev[0] is not bdef:
                self.errors.append(
                    NameError_(
                        f"block `{name}` is imported twice, from {prev[1].path} and {imp.path}",
                        imp.span,
                        hint=f'import one of them under a name: import "{imp.path}" as m',
                    )
                )
                continue
            ns.imported[name] = (bdef, other)


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False
