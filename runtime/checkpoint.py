"""Checkpoints: one safetensors file with weights, optimizer state and the run's metadata.

Tensors are `param/<name>` for every parameter (running statistics included) and
`optim/<state>/<name>` for each optimizer state buffer of each trained parameter. The
metadata (safetensors allows only strings) holds JSON values: `format`, `step`, `epoch`,
`seed`, `model_hash`, the optimizer's name and settings, the training options and, for text
models, the vocabulary.

Writing is atomic: the bytes go to a temporary file in the same directory, which is flushed,
fsynced and renamed over the old checkpoint, so a kill at any moment leaves either the old
file or the new one. Reading never executes code (safetensors holds only arrays and strings).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dslc.errors import CheckpointError

FORMAT = "dslc-checkpoint-1"
FILENAME = "checkpoint.safetensors"


def checkpoint_path(where: str) -> str:
    """The checkpoint file of a run directory (or the file itself)."""
    if os.path.isdir(where) or where.endswith(("/", os.sep)):
        return os.path.join(where, FILENAME)
    return where


def atomic_write(path: str, data: bytes) -> None:
    """Replace `path` with `data` so that no reader ever sees a partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _host(a) -> np.ndarray:
    a = a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else a  # cupy -> numpy
    return np.ascontiguousarray(a)


def save_checkpoint(
    path: str,
    params: Mapping[str, Any],
    optim: Mapping[str, Mapping[str, Any]] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write weights, optimizer state (state name -> param name -> array) and metadata."""
    from safetensors.numpy import save

    tensors = {f"param/{n}": _host(a) for n, a in params.items()}
    for state, arrays in (optim or {}).items():
        tensors.update({f"optim/{state}/{n}": _host(a) for n, a in arrays.items()})
    metadata = {"format": FORMAT}
    metadata.update({k: json.dumps(v) for k, v in (meta or {}).items()})
    atomic_write(path, save(tensors, metadata=metadata))


@dataclass
class Checkpoint:
    """A checkpoint read back: its tensors and its metadata (JSON values decoded)."""

    path: str
    meta: dict[str, Any]
    params: dict[str, np.ndarray]
    optim: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def field(self, name: str, kind: type | tuple = object):
        """A metadata value; CheckpointError naming the file and field when absent or wrong."""
        if name not in self.meta:
            raise CheckpointError(f"{self.path}: the metadata has no field `{name}`")
        v = self.meta[name]
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise CheckpointError(f"{self.path}: metadata field `{name}` has a wrong value {v!r}")
        return v


def load_checkpoint(where: str) -> Checkpoint:
    """Read a checkpoint file (or a run directory's); never executes anything from it."""
    from safetensors import SafetensorError, safe_open

    path = checkpoint_path(where)
    if not os.path.exists(path):
        if os.path.isdir(where):
            raise CheckpointError(f"{where}: no {FILENAME} in this directory")
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(path, "numpy") as f:
            raw = f.metadata() or {}
            if raw.get("format") != FORMAT:
                found = raw.get("format")
                raise CheckpointError(
                    f"{path}: not a dslc checkpoint (metadata field `format` is "
                    + (f"{found!r}, expected {FORMAT!r})" if found else "missing)")
                )
            meta = {}
            for k, v in raw.items():
                if k == "format":
                    continue
                try:
                    meta[k] = json.loads(v)
                except json.JSONDecodeError:
                    raise CheckpointError(f"{path}: metadata field `{k}` is not valid") from None
            params: dict[str, np.ndarray] = {}
            optim: dict[str, dict[str, np.ndarray]] = {}
            for key in f.keys():
                try:
                    arr = f.get_tensor(key)
                except SafetensorError as e:
                    raise CheckpointError(f"{path}: tensor `{key}` cannot be read: {e}") from None
                _check_finite(path, key, arr)
                kind, _, rest = key.partition("/")
                if kind == "param":
                    params[rest] = arr
                elif kind == "optim" and "/" in rest:
                    state, _, name = rest.partition("/")
                    optim.setdefault(state, {})[name] = arr
                else:
                    raise CheckpointError(f"{path}: unexpected tensor `{key}`")
    except SafetensorError as e:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({e})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e.strerror})") from None
    return Checkpoint(path, meta, params, optim)


def _check_finite(path: str, key: str, arr: np.ndarray) -> None:
    """A weight or optimizer state that is NaN or Inf is a damaged checkpoint."""
    if arr.dtype.kind != "f" or arr.size == 0:
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        at = [int(i) for i in np.unravel_index(int(np.argmax(bad)), arr.shape)]
        what = "NaN" if np.isnan(arr[tuple(at)]) else "Inf"
        raise CheckpointError(
            f"{path}: tensor `{key}` contains {what} (first at index {at}); the checkpoint "
            "is damaged or was written from a diverged run"
        )


def compare(
    saved: Mapping[str, np.ndarray], model: Mapping[str, Any]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """(added, removed, reshaped, retyped) parameters of the model relative to the
    checkpoint, each entry a name with its dtype and shape (`h.W float32[64, 16]`)."""
    added = [f"{n} {_desc(a)}" for n, a in model.items() if n not in saved]
    removed = [f"{n} {_desc(a)}" for n, a in saved.items() if n not in model]
    both = [n for n in model if n in saved]
    reshaped = [
        f"{n}: {_desc(saved[n])} in the checkpoint, {_desc(model[n])} in the model"
        for n in both
        if saved[n].shape != model[n].shape
    ]
    retyped = [
        f"{n}: {_desc(saved[n])} in the checkpoint, {_desc(model[n])} in the model"
        for n in both
        if saved[n].shape == model[n].shape and saved[n].dtype != model[n].dtype
    ]
    return added, removed, reshaped, retyped


def _desc(a) -> str:
    return f"{np.dtype(a.dtype).name}{list(a.shape)}"


def _listing(what: str, items: list[str], limit: int = 12) -> list[str]:
    notes = [f"{what}: {item}" for item in items[:limit]]
    if len(items) > limit:
        notes.append(f"{what}: ... and {len(items) - limit} more")
    return notes


def restore_params(
    ckpt: Checkpoint, params: Mapping[str, Any], model_hash: str | None = None, xp=np
) -> None:
    """Copy the checkpoint's weights into `params`; a changed model is reported as a whole:
    every parameter added, removed or reshaped, with its shape, before anything is copied."""
    added, removed, reshaped, retyped = compare(ckpt.params, params)
    if added or removed or reshaped or retyped:
        notes = _listing("added in the model", added)
        notes += _listing("removed from the model", removed)
        notes += _listing("reshaped", reshaped)
        notes += _listing("another dtype", retyped)
        saved_hash = ckpt.meta.get("model_hash")
        if model_hash and saved_hash and saved_hash != model_hash:
            notes.append(f"model hash {model_hash[:12]}, checkpoint trained from {saved_hash[:12]}")
        trained = ckpt.meta.get("model_file")
        sets = ckpt.meta.get("overrides") or {}
        how = ""
        if isinstance(sets, dict) and sets:
            how = " with " + " ".join(f"--set {k}={v}" for k, v in sets.items())
        hint = "use the model (and --set overrides) it was trained with, or train afresh"
        if isinstance(trained, str):
            hint = f"the checkpoint was trained from {trained}{how}; {hint}"
        raise CheckpointError(
            f"{ckpt.path}: the checkpoint does not fit the model: "
            f"{len(added)} parameter(s) added, {len(removed)} removed, {len(reshaped)} reshaped"
            + (f", {len(retyped)} with another dtype" if retyped else ""),
            notes=notes,
            hint=hint,
        )
    for name, dst in params.items():
        dst[...] = xp.asarray(ckpt.params[name])


def load_pretrained(path: str, prefix: str, params: Mapping[str, Any], xp=np) -> list[str]:
    """Copy the tensors of `path` into the parameters they name, under `prefix`.

    `path` is a dslc checkpoint (its `param/` tensors) or any safetensors file. A tensor
    `W` goes to parameter `W` when that lies under `prefix`, else to `prefix.W`. Returns the
    names loaded; a tensor whose shape does not fit, or no match at all, is a CheckpointError.
    """
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such weights file")
    tensors: dict[str, np.ndarray] = {}
    try:
        with safe_open(path, "numpy") as f:
            is_ckpt = (f.metadata() or {}).get("format") == FORMAT
            for key in f.keys():
                if is_ckpt and not key.startswith("param/"):
                    continue
                tensors[key[len("param/") :] if is_ckpt else key] = f.get_tensor(key)
    except SafetensorError as e:
        raise CheckpointError(f"{path}: truncated or corrupt weights file ({e})") from None

    def under(name: str) -> bool:
        return not prefix or name == prefix or name.startswith(prefix + ".")

    pairs, misfits = [], []
    for name, arr in tensors.items():
        target = name if under(name) and name in params else f"{prefix}.{name}" if prefix else name
        if target not in params:
            continue
        dst = params[target]
        same_kind = np.dtype(arr.dtype).kind == np.dtype(dst.dtype).kind
        if arr.shape != dst.shape or not same_kind:
            misfits.append(f"{name}: {_desc(arr)} in the file, {target} is {_desc(dst)}")
        else:
            pairs.append((target, arr))
    if misfits:
        raise CheckpointError(
            f"{path}: {len(misfits)} tensor(s) do not fit the parameters they would load into",
            notes=misfits,
        )
    if not pairs:
        some = ", ".join(sorted(tensors)[:3])
        raise CheckpointError(
            f"{path}: no tensor matches a parameter" + (f" under `{prefix}`" if prefix else ""),
            notes=[f"the file holds {len(tensors)} tensor(s): {some}..."] if tensors else [],
        )
    for target, arr in pairs:
        params[target][...] = xp.asarray(arr)
    return [t for t, _ in pairs]
