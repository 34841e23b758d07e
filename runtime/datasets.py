"""Built-in datasets: no download, no extra package, the same arrays on every run.

Each is shaped from the model's own inputs (`InputSpec`s) and takes optional arguments,
written after the name: `--data digits:upscale=28`.

  digits     the UCI handwritten digits (1,797 8x8 images, pixels scaled to [0, 1], labels
             0..9), shipped with dslc. The image takes the model's shape: `[N, 64]`,
             `[N, 8, 8]`, `[N, 1, 8, 8]`, `[N, 8, 8, 1]`, or larger sizes (`[N, 1, 28, 28]`,
             `[N, 784]`) by resampling. Arguments: `upscale` (side length when the model
             leaves it symbolic), `resample` (`bilinear`, the default, or `nearest`).
  regression y = x @ w_true + b_true + noise, x ~ N(0, 1); `meta["w_true"]` [D, K] and
             `meta["b_true"]` [K] hold the generating weights. Arguments: `n` (1000),
             `noise` (0.01, standard deviation), `seed` (0), `features` and `outputs` (D and
             K when the model leaves them symbolic; default 1).
  sentiment  token sequences [N, T] (T/2 to T tokens, pre-padded with 0) whose label is the
             class of the "sentiment words" they contain: each class owns `words` token ids,
             and a tenth to a fifth of a sequence's tokens are its class's words, the rest
             neutral words drawn with Zipf frequencies (an LSTM learns it to over 95%). The
             vocabulary size and the number of classes come from the model's embedding and
             logits. Arguments: `n` (2000), `seq` (T when symbolic; default 100), `vocab`,
             `words` (20), `seed` (0); `meta["sentiment_words"]` lists the ids per class.
  tiny_text  a small public-domain English corpus (nursery rhymes, Shakespeare sonnets and
             Blake) for character or word language models; arguments as for `.txt` files
             (see `text.py`).
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import numpy as np
from dslc.runtime.data import Dataset, InputSpec
from dslc.runtime.text import text_dataset

from dslc.errors import ConfigError, DataError

Args = Mapping[str, Any]


def _data_file(name: str):
    return resources.files("dslc.datasets").joinpath("data", name)


def _check_args(name: str, args: Args, known: set[str]) -> None:
    unknown = sorted(set(args) - known)
    if unknown:
        raise ConfigError(
            f"{name}: unknown argument `{unknown[0]}`; known: {', '.join(sorted(known)) or 'none'}"
        )


def _feature_and_label(name: str, specs: list[InputSpec]) -> tuple[InputSpec, InputSpec | None]:
    """The one feature input and the (at most one) label a built-in dataset fills."""
    inputs = [s for s in specs if not s.is_label]
    labels = [s for s in specs if s.is_label]
    if len(inputs) != 1 or len(labels) > 1:
        have = ", ".join(f"{s.describe()}: {s.type}" for s in specs) or "none"
        raise DataError(
            f"{name}: the built-in dataset fills one input and one label; the model has {have}"
        )
    return inputs[0], (labels[0] if labels else None)


def _fixed(dim, default: int | None) -> int | None:
    return dim.value if dim.is_const else default


def class_labels(y: np.ndarray, spec: InputSpec | None, classes: int) -> np.ndarray | None:
    """Class indices shaped for the label: indices `[N]`/`[N, 1]`, or one-hot / 0-1 floats."""
    if spec is None:
        return None
    shape = spec.type.shape
    if spec.type.is_float and len(shape) == 2 and shape[1] == classes and classes > 1:
        return np.eye(classes, dtype=np.float32)[y]
    if len(shape) == 2 and shape[1] == 1:
        return y.reshape(-1, 1)
    return y


# --- digits --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def digits_table() -> tuple[np.ndarray, np.ndarray]:
    """The shipped digits: images f32 [1797, 8, 8] in [0, 1] and labels i64 [1797]."""
    with _data_file("digits.csv.gz").open("rb") as raw, gzip.open(raw, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    images = (table[:, :64].astype(np.float32) / 16.0).reshape(-1, 8, 8)
    images.setflags(write=False)
    labels = table[:, 64]
    labels.setflags(write=False)
    return images, labels


def resample_matrix(n_in: int, n_out: int, mode: str = "bilinear") -> np.ndarray:
    """R [n_out, n_in] with `R @ signal` the resampled signal (half-pixel centres, edges
    clamped: like `interpolate(..., align_corners=False)`)."""
    r = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    rows = np.arange(n_out)
    if mode == "nearest":
        r[rows, np.minimum(np.floor((rows + 0.5) * scale).astype(int), n_in - 1)] = 1.0
        return r
    src = np.clip((rows + 0.5) * scale - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    np.add.at(r, (rows, lo), 1.0 - frac)
    np.add.at(r, (rows, hi), frac)
    return r


def resize_images(images: np.ndarray, h: int, w: int, mode: str = "bilinear") -> np.ndarray:
    """[N, h0, w0] -> [N, h, w] by separable resampling."""
    n, h0, w0 = images.shape
    if (h, w) == (h0, w0):
        return images
    ry, rx = resample_matrix(h0, h, mode), resample_matrix(w0, w, mode)
    out = np.einsum("hi,nij,wj->nhw", ry, images.astype(np.float64), rx, optimize=True)
    return out.astype(np.float32)


def digits(specs: list[InputSpec], args: Args, hparams: Args) -> Dataset:
    _check_args("digits", args, {"upscale", "resample"})
    feat, label = _feature_and_label("digits", specs)
    mode = str(args.get("resample", "bilinear"))
    if mode not in ("bilinear", "nearest"):
        raise ConfigError(f"digits: resample must be `bilinear` or `nearest`, got `{mode}`")
    side = args.get("upscale")
    if side is not None and (not isinstance(side, int) or side < 1):
        raise ConfigError(f"digits: upscale must be a positive integer, got {side!r}")
    images, y = digits_table()
    shape = feat.type.shape[1:]
    kind, h, w, c = _image_layout(shape, side, feat)
    if side is not None and (h, w) != (side, side):
        raise ConfigError(f"digits: upscale={side} but {feat.describe()} expects {feat.type}")
    x = resize_images(images, h, w, mode)
    if kind == "flat":
        x = x.reshape(len(x), h * w)
    elif kind == "nchw":
        x = np.repeat(x[:, None], c, axis=1) if c > 1 else x[:, None]
    elif kind == "nhwc":
        x = np.repeat(x[..., None], c, axis=3) if c > 1 else x[..., None]
    arrays = {feat.name: np.ascontiguousarray(x, dtype=np.float32)}
    if label is not None:
        arrays[label.name] = class_labels(np.array(y), label, 10)
    meta = {"source": "digits", "classes": 10, "image_size": [h, w]}
    return Dataset(arrays, meta)


def _image_layout(shape, side: int | None, feat: InputSpec) -> tuple[str, int, int, int]:
    """(layout, H, W, channels) for an image input of non-batch `shape`."""

    def size(dim) -> int:
        return _fixed(dim, side or 8)

    if len(shape) == 1:
        if not shape[0].is_const:
            s = side or 8
            return "flat", s, s, 1
        n = shape[0].value
        s = int(round(n**0.5))
        if s * s != n:
            raise DataError(
                f"digits: {feat.describe()} expects {feat.type}, but {n} is not the pixel "
                f"count of a square image (64 for 8x8, 784 for 28x28)"
            )
        return "flat", s, s, 1
    if len(shape) == 2:
        return "hw", size(shape[0]), size(shape[1]), 1
    if len(shape) == 3:
        first, last = shape[0], shape[2]
        if first.is_const and first.value in (1, 3):
            return "nchw", size(shape[1]), size(shape[2]), first.value
        if last.is_const and last.value in (1, 3):
            return "nhwc", size(shape[0]), size(shape[1]), last.value
    raise DataError(
        f"digits: {feat.describe()} expects {feat.type}; digit images fit [N, 64], [N, 8, 8], "
        "[N, 1, H, W] or [N, H, W, 1]"
    )


# --- regression -----------------------------------------------------------------------------


def regression(specs: list[InputSpec], args: Args, hparams: Args) -> Dataset:
    _check_args("regression", args, {"n", "noise", "seed", "features", "outputs"})
    feat, label = _feature_and_label("regression", specs)
    n = int(args.get("n", 1000))
    noise = float(args.get("noise", 0.01))
    if n < 1 or noise < 0:
        raise ConfigError(f"regression: need n >= 1 and noise >= 0, got n={n}, noise={noise}")
    fshape, lshape = feat.type.shape[1:], label.type.shape[1:] if label else ()
    if len(fshape) > 1 or len(lshape) > 1:
        raise DataError(
            f"regression: inputs must be [N] or [N, D]; {feat.describe()} expects {feat.type}"
            + (f", {label.describe()} expects {label.type}" if label else "")
        )
    d = _fixed(fshape[0], int(args.get("features", 1))) if fshape else 1
    k = _fixed(lshape[0], int(args.get("outputs", 1))) if lshape else 1
    rng = np.random.default_rng(int(args.get("seed", 0)))
    # weights well away from 0, so "within 1%" is a meaningful test of recovery
    w = rng.uniform(0.5, 2.0, (d, k)) * rng.choice([-1.0, 1.0], (d, k))
    b = rng.uniform(0.5, 1.5, k) * rng.choice([-1.0, 1.0], k)
    x = rng.standard_normal((n, d))
    y = x @ w + b + noise * rng.standard_normal((n, k))
    arrays = {feat.name: (x if fshape else x[:, 0]).astype(np.float32)}
    if label is not None:
        arrays[label.name] = (y if lshape else y[:, 0]).astype(np.float32)
    meta = {"source": "regression", "w_true": w.tolist(), "b_true": b.tolist(), "noise": noise}
    return Dataset(arrays, meta)


# --- sentiment ------------------------------------------------------------------------------


def sentiment(specs: list[InputSpec], args: Args, hparams: Args) -> Dataset:
    _check_args("sentiment", args, {"n", "seq", "vocab", "words", "seed"})
    tok, label = _feature_and_label("sentiment", specs)
    if tok.type.dtype[0] != "i" or tok.type.rank != 2:
        raise DataError(
            f"sentiment: token sequences fit an integer input [N, T]; "
            f"{tok.describe()} expects {tok.type}"
        )
    n = int(args.get("n", 2000))
    seq = _fixed(tok.type.shape[1], int(args.get("seq", hparams.get("seq", 100))))
    vocab = int(args.get("vocab", tok.bound or hparams.get("vocab", 1000)))
    classes = 2
    if label is not None and label.bound:
        classes = label.bound
    elif label is not None and label.type.is_float and label.type.rank == 2:
        classes = max(2, _fixed(label.type.shape[1], 2))
    words = min(int(args.get("words", 20)), (vocab - 2) // (2 * classes))
    if words < 1 or n < 1 or seq < 1:
        raise DataError(
            f"sentiment: a vocabulary of {vocab} tokens is too small for {classes} classes "
            "of sentiment words plus neutral ones"
            if words < 1
            else f"sentiment: need n >= 1 and seq >= 1, got n={n}, seq={seq}"
        )
    rng = np.random.default_rng(int(args.get("seed", 0)))
    ids = rng.permutation(np.arange(2, vocab))  # 0 pads, 1 is kept for unknown words
    sent = ids[: classes * words].reshape(classes, words)
    neutral = ids[classes * words :]
    y = rng.permutation(np.arange(n) % classes)
    # neutral words follow Zipf's law, as words in text do: p(rank r) ~ 1 / (r + 10)
    zipf = 1.0 / (np.arange(len(neutral)) + 10.0)
    cdf = np.cumsum(zipf / zipf.sum())
    x = neutral[np.minimum(np.searchsorted(cdf, rng.random((n, seq))), len(neutral) - 1)]
    lengths = rng.integers(max(1, seq // 2), seq + 1, n)
    x[np.arange(seq)[None, :] < (seq - lengths)[:, None]] = 0
    counts = np.maximum(1, rng.integers(lengths // 10, lengths // 5 + 1))
    for i in range(n):
        k = min(counts[i], lengths[i])
        pos = seq - lengths[i] + rng.choice(lengths[i], k, replace=False)
        x[i, pos] = sent[y[i], rng.integers(0, words, k)]
    arrays = {tok.name: x.astype(np.int64)}
    if label is not None:
        arrays[label.name] = class_labels(y, label, classes)
    meta = {
        "source": "sentiment",
        "classes": classes,
        "pad": 0,
        "sentiment_words": sent.tolist(),
    }
    return Dataset(arrays, meta)


# --- tiny_text ------------------------------------------------------------------------------


def tiny_text_corpus() -> str:
    """The shipped public-domain corpus."""
    return _data_file("tiny_text.txt").read_text(encoding="utf-8")


def tiny_text(specs: list[InputSpec], args: Args, hparams: Args) -> Dataset:
    return text_dataset(tiny_text_corpus(), specs, args, hparams, source="tiny_text")


BUILTINS: dict[str, Callable[[list[InputSpec], Args, Args], Dataset]] = {
    "digits": digits,
    "regression": regression,
    "sentiment": sentiment,
    "tiny_text": tiny_text,
}
TEXT_BUILTINS = frozenset({"tiny_text"})  # these take a checkpoint's `vocab`
