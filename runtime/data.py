"""Datasets: arrays named after a model's inputs and labels, loading, batching and validation.

`load_dataset(spec, program)` accepts

- a built-in name (`digits`, `regression`, `sentiment`, `tiny_text`; see `datasets.py`);
- a `.npz` file whose arrays are named after the model's inputs and labels;
- a `.csv` file with a header row (the column convention is below);
- a `.txt` file of plain text for language models (see `text.py`).

Any spec may carry arguments after a colon: `digits:upscale=28`, `corpus.txt:level=word,seq=32`.
Arguments given to the model's default dataset in its `train` section apply too; the spec's own
win. Every loaded dataset is checked by `validate` before it is returned.

CSV columns map to the model's inputs and labels, in this order of preference:

1. a column named exactly like an input or label (`y`) gives that array, one value per row;
2. columns named like an input followed by an index (`x0 x1 ... x63`, `x_0`, `x[0]`) are
   stacked in index order into `[N, 64]`, then reshaped row-major to the input's shape when
   that shape is fixed (64 columns fill `f32[N, 1, 8, 8]`);
3. a label still unmatched takes the one column named `label`, `labels`, `target`, `class` or
   `y`; then a single feature input still unmatched takes every remaining column, in order.

Every cell must be a number.
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dslc.errors import ConfigError, DataError
from dslc.ir.dims import Dim, format_shape
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType, np_dtype

# --- the dataset -----------------------------------------------------------------------


class Dataset:
    """Equal-length arrays (first axis = examples) plus metadata such as a text vocabulary."""

    def __init__(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None):
        self.arrays: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in arrays.items()}
        self.meta: dict[str, Any] = dict(meta or {})
        lengths = {k: (a.shape[0] if a.ndim else None) for k, a in self.arrays.items()}
        source = self.meta.get("source", "dataset")
        for k, n in lengths.items():
            if n is None:
                raise DataError(
                    f"{source}: array `{k}` is a scalar; every array needs an example axis"
                )
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"`{k}` has {n}" for k, n in lengths.items())
            raise DataError(f"{source}: arrays differ in their number of examples: {listed}")

    def __len__(self) -> int:
        return next(iter(self.arrays.values())).shape[0] if self.arrays else 0

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {a.dtype}{list(a.shape)}" for k, a in self.arrays.items())
        return f"<Dataset {len(self)} examples; {shapes}>"

    def subset(self, indices) -> Dataset:
        """The examples at `indices` (an index array, a boolean mask or a slice)."""
        return Dataset({k: a[indices] for k, a in self.arrays.items()}, self.meta)

    def split(self, val_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """A deterministic random (train, val) split; `val_fraction` of the examples go to val."""
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"validation fraction must be in [0, 1), got {val_fraction}")
        n = len(self)
        n_val = int(round(n * val_fraction))
        if val_fraction > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        order = np.random.default_rng(seed).permutation(n)
        # sorted halves keep each part in the original order: reproducible and cache-friendly
        return self.subset(np.sort(order[n_val:])), self.subset(np.sort(order[:n_val]))

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(
        self,
        batch_size: int,
        rng: np.random.Generator | int | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        skip: int = 0,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield dicts of arrays of `batch_size` examples; the last one may be smaller.

        With `shuffle` the order is one permutation drawn from `rng` (a Generator or a seed);
        `skip` leaves out the first batches of that order, for resuming inside an epoch.
        """
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        n = len(self)
        order = None
        if shuffle:
            rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
            order = rng.permutation(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(skip * batch_size, stop, batch_size):
            end = min(start + batch_size, n)
            if order is None:
                yield {k: a[start:end] for k, a in self.arrays.items()}
            else:
                idx = order[start:end]
                yield {k: a[idx] for k, a in self.arrays.items()}


# --- what the model expects --------------------------------------------------------------

# ops that move an integer input around without changing what its values index
_TRANSPARENT = frozenset({"reshape", "transpose", "slice", "index", "cast", "broadcast_to"})


@dataclass(frozen=True)
class InputSpec:
    """One `input` node of a graph: its name, role, type, and the bound on its values.

    `bound` is, for an integer input used as class indices (`take_along`, `one_hot`) or as
    rows of a table (`gather`: an embedding), the number of valid values; None otherwise.
    """

    name: str
    role: str  # "input" | "label"
    type: TensorType
    bound: int | None = None
    bound_what: str = ""  # "classes" | "rows"

    @property
    def is_label(self) -> bool:
        return self.role == "label"

    def describe(self) -> str:
        return f"{self.role} `{self.name}`"


def input_specs(model) -> list[InputSpec]:
    """The inputs and labels a model expects, in order; `model` is a Program (its training
    graph), a Graph, or already a list of InputSpecs."""
    if isinstance(model, (list, tuple)):
        return list(model)
    if not isinstance(model, Graph):
        return input_specs(model.train_graph)
    graph = model
    specs = []
    for name, nid in graph.inputs.items():
        d = graph.data(nid)
        bound, what = _value_bound(graph, nid)
        role = d["attrs"].get("role", "input")
        specs.append(InputSpec(name, role, d["type"], bound, what))
    return specs


def _value_bound(graph: Graph, nid: int) -> tuple[int | None, str]:
    """How many distinct values an integer input may hold, found from how the graph uses it."""
    best: tuple[int | None, str] = (None, "")
    seen = set()
    stack = [nid]
    while stack:
        cur = stack.pop()
        if cur in seen:
            continue
        seen.add(cur)
        for user in graph.users(cur):
            d = graph.data(user)
            positions = [p for p, i in enumerate(d["inputs"]) if i == cur]
            op, attrs = d["op"], d["attrs"]
            found: Dim | int | None = None
            what = ""
            if op == "take_along" and 1 in positions:
                table = graph.data(d["inputs"][0])["type"].shape
                axis = attrs.get("axis", -1)
                found, what = table[axis if axis >= 0 else axis + len(table)], "classes"
            elif op == "one_hot" and 0 in positions:
                found, what = attrs.get("depth"), "classes"
            elif op == "gather" and 1 in positions:
                found, what = graph.data(d["inputs"][0])["type"].shape[0], "rows"
            elif op in _TRANSPARENT and 0 in positions:
                stack.append(user)
            if isinstance(found, Dim):
                found = found.value if found.is_const else None
            if isinstance(found, int) and (best[0] is None or found < best[0]):
                best = (found, what)
    return best


# --- validation ----------------------------------------------------------------------------


def validate(dataset: Dataset, graph, source: str, *, labels: bool = True) -> Dataset:
    """Check `dataset` against the inputs of `graph` (or a Program, or InputSpecs) before any
    training.

    Returns a Dataset holding exactly the model's arrays, cast to the input dtypes; anything
    that does not fit raises `DataError` naming `source`, the array and the expected type.
    With `labels=False` (prediction) only the `input` role is required.
    """
    specs = [s for s in input_specs(graph) if labels or not s.is_label]
    if len(dataset) == 0:
        raise DataError(f"{source}: the dataset is empty (0 examples)")
    present = ", ".join(f"`{k}`" for k in dataset.arrays) or "none"
    env: dict[str, int] = {}
    origin: dict[str, str] = {}
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name not in dataset.arrays:
            raise DataError(
                f"{source}: no array named `{spec.name}` for {spec.describe()}, "
                f"which expects {spec.type}",
                notes=[f"arrays present: {present}"],
            )
    for spec in specs:
        arr = dataset.arrays[spec.name]
        _check_shape(arr, spec, source, env, origin)
        out[spec.name] = _check_values(arr, spec, source)
    return Dataset(out, {**dataset.meta, "source": dataset.meta.get("source", source)})


def _shape_message(arr: np.ndarray, spec: InputSpec, source: str) -> str:
    return (
        f"{source}: array `{spec.name}` has shape {format_shape(arr.shape)} "
        f"but {spec.describe()} expects {spec.type}"
    )


def _check_shape(arr, spec: InputSpec, source: str, env: dict, origin: dict) -> None:
    """Rank and every fixed or symbolic dimension; symbols bind once across all arrays."""
    want = spec.type.shape
    if arr.ndim != len(want):
        raise DataError(
            _shape_message(arr, spec, source),
            notes=[f"the array has {arr.ndim} dimension(s), the {spec.role} {len(want)}"],
        )
    pending = []
    for axis, (have, dim) in enumerate(zip(arr.shape, want)):
        if dim.is_symbol and axis > 0:
            (sym,) = dim.symbols
            if sym in env and env[sym] != have:
                raise DataError(
                    _shape_message(arr, spec, source),
                    notes=[f"{sym} is {env[sym]} in {origin[sym]}, but {have} here"],
                )
            env.setdefault(sym, have)
            origin.setdefault(sym, f"array `{spec.name}`")
        elif axis > 0:  # axis 0 counts examples: batches choose it
            pending.append((axis, have, dim))
    for axis, have, dim in pending:
        if dim.symbols <= set(env) and dim.evaluate(env) != have:
            raise DataError(
                _shape_message(arr, spec, source),
                notes=[f"dimension {axis} is {have}, expected {dim} = {dim.evaluate(env)}"]
                if dim.symbols
                else [f"dimension {axis} is {have}, expected {dim}"],
            )


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    """The index of the first True entry of `mask`."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _check_values(arr: np.ndarray, spec: InputSpec, source: str) -> np.ndarray:
    """Dtype kind, NaN/Inf, integrality and value range; returns the cast array."""
    want = spec.type.dtype
    target = np_dtype(want)
    kind = arr.dtype.kind
    head = f"{source}: array `{spec.name}`"
    expects = f"{spec.describe()} expects {spec.type}"
    if kind not in "biuf":
        raise DataError(f"{head} has dtype {arr.dtype}, not numbers, but {expects}")
    if kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            at = _first_bad(bad)
            what = "NaN" if np.isnan(arr[at]) else "Inf"
            raise DataError(
                f"{head} contains {what} at index {format_shape(at)}; {expects} with finite values"
            )
    if target.kind in "iub":
        if kind == "f":
            frac = arr != np.round(arr)
            if frac.any():
                at = _first_bad(frac)
                raise DataError(
                    f"{head} has dtype {arr.dtype} with non-integer value {arr[at]:g} "
                    f"(at index {format_shape(at)}) but {expects}"
                )
        if target.kind == "b":
            if arr.size and not np.isin(arr, (0, 1)).all():
                raise DataError(f"{head} holds values other than 0 and 1 but {expects}")
        else:
            _check_range(arr, spec, head, target)
    elif target.kind == "f" and kind == "b":
        arr = arr.astype(np.uint8)
    return arr if arr.dtype == target else arr.astype(target)


def _check_range(arr: np.ndarray, spec: InputSpec, head: str, target: np.dtype) -> None:
    if arr.size == 0:
        return
    lo, hi = arr.min(), arr.max()
    info = np.iinfo(target)
    if lo < info.min or hi > info.max:
        raise DataError(f"{head} holds values outside the range of {spec.type.dtype}")
    if spec.bound is None:
        return
    if spec.bound_what == "classes":
        what, of = "class index", f"{spec.bound} classes"
    else:
        what, of = "id", f"an embedding table of {spec.bound} rows"
    bad = (arr < 0) | (arr >= spec.bound)
    if bad.any():
        at = _first_bad(bad)
        value = int(arr[at])
        sign = "negative " if value < 0 else ""
        raise DataError(
            f"{head} holds {sign}{what} {value} (at index {format_shape(at)}) but "
            f"{spec.describe()} has {of}; values must be in 0..{spec.bound - 1}"
        )


# --- loading -------------------------------------------------------------------------------

_ARG = re.compile(r"^[A-Za-z_]\w*=[^,]*(,[A-Za-z_]\w*=[^,]*)*$")


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`digits:upscale=28,resample=nearest` -> ('digits', {'upscale': 28, ...})."""
    base, sep, rest = spec.rpartition(":")
    if not sep or not base or not _ARG.match(rest):
        return spec, {}
    args = {}
    for item in rest.split(","):
        key, _, value = item.partition("=")
        args[key.strip()] = parse_value(value.strip())
    return base, args


def parse_value(text: str):
    """An argument value: int, float, bool, or the string itself."""
    low = text.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def load_dataset(
    spec: str | None,
    program,
    *,
    source_hint: str | None = None,
    labels: bool = True,
    vocab=None,
) -> Dataset:
    """Load a built-in dataset or a `.npz`/`.csv`/`.txt` file, shaped for and checked against
    `program` (a Program; a Graph or a list of InputSpecs also do).

    `spec` None means the model's default dataset (its `train` section). `source_hint` says
    where the spec came from (`--data`, `model.nn`) for error messages. `labels=False` loads
    data for prediction, where labels may be absent. `vocab` (a `Vocab` or its JSON, from a
    checkpoint) encodes text data with that vocabulary instead of building one.
    """
    from dslc.runtime import datasets  # the built-ins build on this module
    from dslc.runtime.text import text_dataset

    train = getattr(program, "train", None)
    default = getattr(train, "dataset", None)
    if spec is None:
        if not default:
            raise ConfigError(
                "no dataset given: pass --data (a built-in name or a .npz/.csv/.txt file), "
                "or name one in the model's train section",
                hint=f"built-in datasets: {', '.join(sorted(datasets.BUILTINS))}",
            )
        spec = default
    base, args = parse_spec(spec)
    if default and parse_spec(default)[0] == base:
        args = {**(getattr(train, "dataset_args", None) or {}), **parse_spec(default)[1], **args}
    specs = input_specs(program)
    hparams = dict(getattr(program, "hparams", None) or {})
    ext = os.path.splitext(base)[1].lower()
    is_text = base in datasets.TEXT_BUILTINS or (ext == ".txt" and base not in datasets.BUILTINS)
    if vocab is not None and is_text:
        args = {**args, "vocab": vocab}
    if base in datasets.BUILTINS:
        ds = datasets.BUILTINS[base](specs, args, hparams)
    elif ext not in (".npz", ".csv", ".txt"):
        where = f" (from {source_hint})" if source_hint else ""
        raise DataError(
            f"unknown dataset `{spec}`{where}: not a built-in dataset and not a "
            ".npz, .csv or .txt file",
            hint=f"built-in datasets: {', '.join(sorted(datasets.BUILTINS))}",
        )
    elif not os.path.isfile(base):
        where = f" (named by {source_hint})" if source_hint else ""
        raise DataError(f"{base}: no such data file{where}")
    elif ext != ".txt" and args:
        raise ConfigError(f"{base}: {ext} files take no arguments, got {', '.join(args)}")
    elif ext == ".npz":
        ds = load_npz(base)
    elif ext == ".csv":
        ds = load_csv(base, specs)
    else:
        ds = text_dataset(read_text(base), specs, args, hparams, source=base)
    ds.meta.setdefault("source", base)
    return validate(ds, program, base, labels=labels)


def read_text(path: str) -> str:
    """A UTF-8 text file, or a DataError naming the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def load_npz(path: str) -> Dataset:
    """Every array of a `.npz` archive, without unpickling anything."""
    name = os.path.basename(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror})") from None
    if magic[:2] != b"PK":  # np.load would try the other formats, pickle among them
        what = "the file is empty" if not magic else "it is not a zip archive"
        raise DataError(f"{path}: not a readable .npz archive ({what})")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {}
            for key in f.files:
                try:
                    arrays[key] = f[key]
                except ValueError:
                    raise DataError(
                        f"{path}: array `{key}` holds Python objects; dslc loads only numeric "
                        "arrays (no pickle)"
                    ) from None
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: truncated or corrupt .npz archive ({e})") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz archive ({e})") from None
    if not arrays:
        raise DataError(f"{path}: the archive holds no arrays")
    ds = Dataset(arrays, {"source": path})  # errors name the file as given
    ds.meta["source"] = name
    return ds


_INDEXED = re.compile(r"^(?P<name>.+?)(?:_(?P<a>\d+)|\[(?P<b>\d+)\]|(?P<c>\d+))$")
_LABEL_ALIASES = ("label", "labels", "target", "class", "y")


def load_csv(path: str, specs: list[InputSpec]) -> Dataset:
    """A `.csv` with a header row, mapped to inputs and labels by the module's convention."""
    try:
        reader = csv.reader(io.StringIO(read_text(path), newline=""))
        rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    if not rows:
        raise DataError(f"{path}: the file is empty; expected a header row and data rows")
    header = [h.strip() for h in rows[0][1]]
    if all(_is_number(h) for h in header):
        raise DataError(
            f"{path}: the first row holds numbers, not column names; dslc needs a header row",
            hint="name the columns after the model's inputs, e.g. x0,x1,...,y",
        )
    table = np.empty((len(rows) - 1, len(header)), dtype=np.float64)
    for r, (line, row) in enumerate(rows[1:]):
        if len(row) != len(header):
            raise DataError(
                f"{path}:{line}: row has {len(row)} fields but the header has {len(header)}"
            )
        for c, cell in enumerate(row):
            try:
                table[r, c] = float(cell)
            except ValueError:
                raise DataError(
                    f"{path}:{line}: column `{header[c]}` holds {cell.strip()!r}, "
                    "which is not a number"
                ) from None
    columns = {h: i for i, h in enumerate(header)}
    used: set[int] = set()
    arrays: dict[str, np.ndarray] = {}
    indexed: dict[str, list[tuple[int, int]]] = {}
    for h, i in columns.items():
        m = _INDEXED.match(h)
        if m:
            k = int(m.group("a") or m.group("b") or m.group("c"))
            indexed.setdefault(m.group("name"), []).append((k, i))
    for spec in specs:
        if spec.name in columns:
            i = columns[spec.name]
            arrays[spec.name] = _fit(table[:, [i]], spec)
            used.add(i)
        elif spec.name in indexed:
            cols = [i for _, i in sorted(indexed[spec.name])]
            arrays[spec.name] = _fit(table[:, cols], spec)
            used.update(cols)
    for spec in specs:
        if spec.is_label and spec.name not in arrays:
            free = [a for a in _LABEL_ALIASES if a in columns and columns[a] not in used]
            if len(free) == 1:
                arrays[spec.name] = _fit(table[:, [columns[free[0]]]], spec)
                used.add(columns[free[0]])
    missing = [s for s in specs if not s.is_label and s.name not in arrays]
    rest = [i for i in range(len(header)) if i not in used]
    if len(missing) == 1 and rest:
        arrays[missing[0].name] = _fit(table[:, rest], missing[0])
    return Dataset(arrays, {"source": path, "columns": header})


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _fit(block: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Columns [N, k] shaped like the spec: [N] for one column, a fixed shape when it fits."""
    rest = spec.type.shape[1:]
    if all(d.is_const for d in rest):
        sizes = tuple(d.value for d in rest)
        if int(np.prod(sizes, dtype=np.int64)) == block.shape[1]:
            return block.reshape((block.shape[0], *sizes))
    if len(rest) == 0 and block.shape[1] == 1:
        return block[:, 0]
    return block
