"""Metrics accumulated over batches: `m = make_metric("f1"); m.update(pred, y); m.result()`.

Classification metrics take predictions as logits or probabilities (the class is the argmax of
the last axis), as class indices, or as one score per example for a binary task (`[N]` or
`[N, 1]`: above 0.5 when all scores lie in [0, 1], else above 0). Labels are class indices or
one-hot rows. Precision, recall and F1 are macro averages over the classes that occur in the
labels or the predictions, with 0 for a class whose ratio has a zero denominator: the same
numbers as scikit-learn's `average="macro", zero_division=0`.

Perplexity is exp(summed negative log-likelihood / token count): `update(pred, targets)`
takes logits, log-probabilities or probabilities (rows that are non-negative and sum to 1)
over the last axis; `update_loss(sum_nll, count)` takes the sums directly.

BLEU is corpus BLEU-4 (Papineni et al. 2002): clipped n-gram precisions for n = 1..4 summed
over the corpus, their geometric mean, and the brevity penalty exp(1 - r/c) when the
hypotheses are shorter than the closest reference lengths. A hypothesis is a token sequence
(a string is split on spaces); its references are one such sequence or a list of them.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from dslc.errors import ConfigError, DataError
from dslc.ir.dims import format_shape


class Metric:
    """Accumulates over `update` calls; `result()` gives the value so far."""

    name = ""
    higher_is_better = True

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, prediction, label) -> None:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<metric {self.name}>"


# --- classification -----------------------------------------------------------------------


def to_classes(prediction, label) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true class indices (int64, same shape) from any accepted form."""
    p, y = np.asarray(prediction), np.asarray(label)
    if y.dtype.kind == "f" and y.ndim >= 1 and y.shape == p.shape and y.shape[-1] > 1:
        y = y.argmax(-1)  # one-hot labels
    if p.ndim == y.ndim + 1 and p.shape[-1] == 1:
        p = p[..., 0]
    if p.ndim == y.ndim + 1:
        p = p.argmax(-1)
    elif p.ndim == y.ndim and p.dtype.kind == "f" and p.size and (p != np.round(p)).any():
        p = (p > (0.5 if p.min() >= 0 and p.max() <= 1 else 0.0)).astype(np.int64)
    if p.shape != y.shape:
        raise DataError(
            f"predictions of shape {format_shape(np.shape(prediction))} do not match labels "
            f"of shape {format_shape(np.shape(label))}"
        )
    return p.astype(np.int64, copy=False).ravel(), y.astype(np.int64).ravel()


class Confusion(Metric):
    """A growing confusion matrix: rows are true classes, columns predicted classes."""

    def __init__(self, num_classes: int | None = None):
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        k = self.num_classes or 0
        self.matrix = np.zeros((k, k), dtype=np.int64)

    def update(self, prediction, label) -> None:
        p, y = to_classes(prediction, label)
        if p.size == 0:
            return
        if min(p.min(), y.min()) < 0:
            raise DataError(f"metric {self.name}: negative class index")
        k = max(len(self.matrix), int(p.max()) + 1, int(y.max()) + 1)
        if k > len(self.matrix):
            grown = np.zeros((k, k), dtype=np.int64)
            grown[: len(self.matrix), : len(self.matrix)] = self.matrix
            self.matrix = grown
        self.matrix += np.bincount(y * k + p, minlength=k * k).reshape(k, k)

    def per_class(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(tp, fp, fn, present) per class; `present`: occurs in labels or predictions."""
        m = self.matrix
        tp = np.diag(m).astype(np.float64)
        fp = m.sum(0) - tp
        fn = m.sum(1) - tp
        present = (m.sum(0) + m.sum(1)) > 0
        return tp, fp, fn, present


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (zero_division=0)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def _macro(values: np.ndarray, present: np.ndarray) -> float:
    return float(values[present].mean()) if present.any() else 0.0


class Accuracy(Confusion):
    name = "accuracy"

    def result(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else 0.0


class Precision(Confusion):
    name = "precision"

    def result(self) -> float:
        tp, fp, _, present = self.per_class()
        return _macro(_ratio(tp, tp + fp), present)


class Recall(Confusion):
    name = "recall"

    def result(self) -> float:
        tp, _, fn, present = self.per_class()
        return _macro(_ratio(tp, tp + fn), present)


class F1(Confusion):
    name = "f1"

    def result(self) -> float:
        tp, fp, fn, present = self.per_class()
        return _macro(_ratio(2 * tp, 2 * tp + fp + fn), present)


# --- language models ------------------------------------------------------------------------


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


class Perplexity(Metric):
    name = "perplexity"
    higher_is_better = False

    def __init__(self, num_classes: int | None = None):
        self.reset()

    def reset(self) -> None:
        self.nll = 0.0
        self.count = 0

    def update_loss(self, sum_nll: float, count: int) -> None:
        """Add a summed negative log-likelihood over `count` tokens."""
        self.nll += float(sum_nll)
        self.count += int(count)

    def update(self, prediction, label) -> None:
        """Logits, log-probabilities or probabilities [..., V] and integer targets [...]."""
        p = np.asarray(prediction, dtype=np.float64)
        is_prob = p.size and p.min() >= 0 and np.allclose(p.sum(-1), 1.0, atol=1e-4)
        logp = np.log(np.maximum(p, 1e-300)) if is_prob else log_softmax(p)
        y = np.asarray(label).astype(np.int64)
        if logp.shape[:-1] != y.shape:
            raise DataError(
                f"metric perplexity: log-probabilities of shape {format_shape(logp.shape)} do "
                f"not match targets of shape {format_shape(y.shape)}"
            )
        picked = np.take_along_axis(logp, y[..., None], axis=-1)
        self.update_loss(-picked.sum(), y.size)

    def result(self) -> float:
        return math.exp(self.nll / self.count) if self.count else float("nan")


# --- regression -----------------------------------------------------------------------------


class _ErrorMean(Metric):
    higher_is_better = False

    def __init__(self, num_classes: int | None = None):
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, prediction, label) -> None:
        p, y = np.asarray(prediction, np.float64), np.asarray(label, np.float64)
        if p.shape != y.shape and p.size == y.size:
            p = p.reshape(y.shape)  # [N, 1] against [N]
        if p.shape != y.shape:
            raise DataError(
                f"metric {self.name}: predictions of shape {format_shape(p.shape)} do not match "
                f"labels of shape {format_shape(y.shape)}"
            )
        self.total += float(self.error(p - y).sum())
        self.count += y.size

    def result(self) -> float:
        return self.total / self.count if self.count else float("nan")


class MSE(_ErrorMean):
    name = "mse"
    error = staticmethod(np.square)


class MAE(_ErrorMean):
    name = "mae"
    error = staticmethod(np.abs)


# --- BLEU -----------------------------------------------------------------------------------


def _tokens(seq) -> tuple:
    if isinstance(seq, str):
        return tuple(seq.split())
    return tuple(np.asarray(seq).tolist()) if isinstance(seq, np.ndarray) else tuple(seq)


def _ref_list(refs) -> list[tuple]:
    """One hypothesis's references: a token sequence (or a string), or a list of them."""
    if isinstance(refs, str):
        return [_tokens(refs)]
    refs = list(refs)
    if refs and isinstance(refs[0], (list, tuple, np.ndarray)):
        return [_tokens(r) for r in refs]
    return [_tokens(refs)]


def _ngrams(toks: tuple, n: int) -> Counter:
    return Counter(toks[i : i + n] for i in range(len(toks) - n + 1))


class BLEU(Metric):
    """Corpus BLEU: `update(hypotheses, references)` adds sentences to the corpus."""

    name = "bleu"

    def __init__(self, num_classes: int | None = None, max_n: int = 4):
        self.max_n = max_n
        self.reset()

    def reset(self) -> None:
        self.matches = [0] * self.max_n
        self.totals = [0] * self.max_n
        self.hyp_len = 0
        self.ref_len = 0

    def update(self, prediction, label) -> None:
        hyps, refs = list(prediction), list(label)
        if len(hyps) != len(refs):
            raise DataError(f"bleu: {len(hyps)} hypotheses but {len(refs)} references")
        for hyp, ref in zip(hyps, refs):
            self.add(_tokens(hyp), _ref_list(ref))

    def add(self, hyp: tuple, refs: list[tuple]) -> None:
        c = len(hyp)
        self.hyp_len += c
        self.ref_len += min((len(r) for r in refs), key=lambda n: (abs(n - c), n), default=0)
        for n in range(1, self.max_n + 1):
            counts = _ngrams(hyp, n)
            most: Counter = Counter()
            for r in refs:
                most |= _ngrams(r, n)  # per n-gram, the largest count in any reference
            self.matches[n - 1] += sum(min(k, most[g]) for g, k in counts.items())
            self.totals[n - 1] += max(c - n + 1, 0)

    def result(self) -> float:
        if self.hyp_len == 0 or min(self.matches) == 0:
            return 0.0
        log_p = sum(math.log(m / t) for m, t in zip(self.matches, self.totals)) / self.max_n
        bp = 1.0 if self.hyp_len > self.ref_len else math.exp(1 - self.ref_len / self.hyp_len)
        return bp * math.exp(log_p)


def bleu(references: Sequence, hypotheses: Sequence, max_n: int = 4) -> float:
    """Corpus BLEU of token sequences; each reference entry is one sequence or a list of them."""
    m = BLEU(max_n=max_n)
    m.update(hypotheses, references)
    return m.result()


# --- the registry ---------------------------------------------------------------------------

METRICS: dict[str, type[Metric]] = {
    "accuracy": Accuracy,
    "precision": Precision,
    "recall": Recall,
    "f1": F1,
    "perplexity": Perplexity,
    "mse": MSE,
    "mae": MAE,
    "bleu": BLEU,
}


def make_metric(name: str, num_classes: int | None = None) -> Metric:
    """A fresh metric by name; an unknown name is a ConfigError listing the known ones."""
    cls = METRICS.get(name.lower())
    if cls is None:
        close = difflib.get_close_matches(name.lower(), METRICS, n=1)
        raise ConfigError(
            f"unknown metric `{name}`; known metrics: {', '.join(sorted(METRICS))}",
            hint=f"did you mean `{close[0]}`?" if close else None,
        )
    return cls(num_classes)
