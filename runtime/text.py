"""Text for language models: vocabularies and next-token windows.

A `.txt` file (or the built-in `tiny_text`) becomes windows of the model's context length T.
The model needs one integer input `[B, T]` (token ids) and, for training, one integer label:
`[B, T]` gets the next token at every position (GPT style), `[B]` gets the one token after
the window (a next-word classifier). Arguments (`corpus.txt:level=word,seq=32`):

  level     `char` (default: every character a token) or `word` (words and punctuation,
            newlines kept as tokens)
  seq       window length T when the model leaves T symbolic (else the model's `ctx`,
            `context`, `block_size`, `seq_len` or `max_len` hyper-parameter)
  stride    tokens between the starts of consecutive windows (default T // 4, at least 1)
  lower     lower-case the text first (default: true for words, false for characters)
  min_freq  words seen fewer times become `<unk>` (word level, default 1)
  vocab     a `Vocab` to reuse (a checkpoint's), instead of building one from the text

A word vocabulary keeps the most frequent words that fit the model's embedding table; a
character vocabulary must fit in it whole. The vocabulary is `dataset.meta["vocab"]`, and
`Vocab.to_json()` is what a checkpoint stores.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from dslc.errors import ConfigError, DataError

UNK = "<unk>"
_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]|\n")
_NO_SPACE_BEFORE = set(".,;:!?)]}'\"")
_NO_SPACE_AFTER = set("([{\n")


class Vocab:
    """A character- or word-level vocabulary: token strings <-> integer ids."""

    def __init__(
        self,
        tokens: Iterable[str],
        level: str = "char",
        unk: str | None = None,
        lower: bool = False,
    ):
        if level not in ("char", "word"):
            raise DataError(f"vocabulary level must be `char` or `word`, got `{level}`")
        self.tokens: list[str] = list(tokens)
        self.level = level
        self.unk = unk
        self.lower = lower
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise DataError("vocabulary has a repeated token")
        if unk is not None and unk not in self.index:
            raise DataError(f"vocabulary has no unknown token `{unk}`")
        self._unk_id = self.index[unk] if unk is not None else None
        if level == "char":
            singles = [(ord(t), i) for t, i in self.index.items() if len(t) == 1]
            singles.sort()
            self._cps = np.array([c for c, _ in singles], dtype=np.uint32)
            self._cp_ids = np.array([i for _, i in singles], dtype=np.int64)

    # --- building -------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        text: str,
        level: str = "char",
        *,
        max_size: int | None = None,
        min_freq: int = 1,
        lower: bool | None = None,
    ) -> Vocab:
        """The vocabulary of `text`: sorted characters, or words by falling frequency.

        Word vocabularies start with `<unk>` and keep at most `max_size` tokens in all.
        """
        if level not in ("char", "word"):
            raise DataError(f"vocabulary level must be `char` or `word`, got `{level}`")
        lower = (level == "word") if lower is None else lower
        if lower:
            text = text.lower()
        if level == "char":
            return cls(sorted(set(text)), "char", None, lower)
        counts = Counter(tokenize_words(text))
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            words = words[: max(max_size - 1, 0)]
        return cls([UNK, *words], "word", UNK, lower)

    # --- use -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"<Vocab {self.level}, {len(self)} tokens>"

    def split(self, text: str) -> list[str]:
        """`text` as a list of tokens (before any lookup)."""
        if self.lower:
            text = text.lower()
        return list(text) if self.level == "char" else tokenize_words(text)

    def encode(self, text: str, errors: str = "unk") -> np.ndarray:
        """Token ids (int64) of `text`. Unknown tokens: `unk` maps them to the unknown token
        (an error when the vocabulary has none), `skip` drops them, `strict` is an error."""
        if errors not in ("unk", "skip", "strict"):
            raise DataError(f"unknown `errors` mode `{errors}`: use unk, skip or strict")
        if self.level == "char":
            if self.lower:
                text = text.lower()
            cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            pos = np.searchsorted(self._cps, cps)
            pos = np.minimum(pos, max(len(self._cps) - 1, 0))
            known = (self._cps[pos] == cps) if len(self._cps) else np.zeros(len(cps), bool)
            ids = self._cp_ids[pos] if len(self._cps) else np.zeros(len(cps), np.int64)
            if known.all():
                return ids
            first = chr(int(cps[int(np.argmin(known))]))
            return self._unknown(ids, known, first, errors)
        toks = self.split(text)
        ids = np.array([self.index.get(t, -1) for t in toks], dtype=np.int64)
        known = ids >= 0
        if known.all():
            return ids
        return self._unknown(ids, known, toks[int(np.argmin(known))], errors)

    def _unknown(self, ids: np.ndarray, known: np.ndarray, first: str, errors: str):
        if errors == "skip":
            return ids[known]
        if errors == "strict" or self._unk_id is None:
            raise DataError(
                f"{first!r} is not in the {self.level} vocabulary ({len(self)} tokens)",
                hint="use only characters the model was trained on"
                if self.level == "char"
                else None,
            )
        out = ids.copy()
        out[~known] = self._unk_id
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text from token ids; words are joined with spaces, punctuation kept tight."""
        toks = [self.tokens[int(i)] for i in ids]
        if self.level == "char":
            return "".join(toks)
        out = ""
        for t in toks:
            if not out or out[-1] in _NO_SPACE_AFTER or t == "\n" or t in _NO_SPACE_BEFORE:
                out += t
            else:
                out += " " + t
        return out

    # --- storage (a JSON string in checkpoint metadata; never pickle) ----------------------
    def to_json(self) -> str:
        return json.dumps(
            {"level": self.level, "unk": self.unk, "lower": self.lower, "tokens": self.tokens},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        try:
            d = json.loads(text)
            tokens = d["tokens"]
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise TypeError("`tokens` must be a list of strings")
            return cls(tokens, d.get("level", "char"), d.get("unk"), bool(d.get("lower", False)))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(f"vocabulary: not a valid vocabulary JSON ({e})") from None


def tokenize_words(text: str) -> list[str]:
    """Words (with inner apostrophes), single punctuation marks, and newlines."""
    return _WORD.findall(text)


def windows(ids: np.ndarray, seq: int, stride: int = 1, next_only: bool = False):
    """Windows `x[i] = ids[s:s+seq]` at starts s = 0, stride, ... with next-token targets:
    `y[i] = ids[s+1:s+seq+1]`, or the single `ids[s+seq]` when `next_only`."""
    ids = np.asarray(ids)
    if len(ids) <= seq:
        raise DataError(f"the text has {len(ids)} tokens; windows of {seq} need {seq + 1}")
    w = np.lib.stride_tricks.sliding_window_view(ids, seq + 1)[::stride]
    x = np.ascontiguousarray(w[:, :-1])
    y = np.ascontiguousarray(w[:, -1] if next_only else w[:, 1:])
    return x, y


_CONTEXT_HPARAMS = ("ctx", "context", "block_size", "seq_len", "max_len", "seq")


def text_dataset(
    text: str,
    specs,
    args: Mapping[str, Any],
    hparams: Mapping[str, Any],
    *,
    source: str,
):
    """Windows of `text` for the language model described by `specs` (see the module doc)."""
    from dslc.runtime.data import Dataset

    known = {"level", "seq", "stride", "lower", "min_freq", "vocab"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown text argument `{unknown[0]}`; known: {', '.join(sorted(known))}"
        )
    inputs = [s for s in specs if not s.is_label]
    labels = [s for s in specs if s.is_label]
    if len(inputs) != 1 or inputs[0].type.dtype[0] != "i" or inputs[0].type.rank != 2:
        have = ", ".join(f"{s.describe()}: {s.type}" for s in inputs) or "none"
        raise DataError(
            f"{source}: text feeds a language model with one integer input [B, T]; "
            f"this model has {have}"
        )
    tok = inputs[0]
    label = labels[0] if len(labels) == 1 else None
    if label is not None and (label.type.dtype[0] != "i" or label.type.rank not in (1, 2)):
        raise DataError(
            f"{source}: text gives next-token labels [B, T] or [B]; "
            f"{label.describe()} expects {label.type}"
        )
    seq = _context(tok, args, hparams, source)
    stride = int(args.get("stride", max(1, seq // 4)))
    if stride < 1:
        raise DataError(f"{source}: stride must be at least 1, got {stride}")
    level = str(args.get("level", "char"))
    if level not in ("char", "word"):
        raise ConfigError(f"{source}: level must be `char` or `word`, got `{level}`")
    bounds = [s.bound for s in (tok, label) if s is not None and s.bound is not None]
    limit = min(bounds) if bounds else None
    vocab = args.get("vocab")
    if vocab is None:
        vocab = Vocab.build(
            text,
            level,
            max_size=limit,
            min_freq=int(args.get("min_freq", 1)),
            lower=args.get("lower"),
        )
    elif isinstance(vocab, str):
        vocab = Vocab.from_json(vocab)
    if limit is not None and len(vocab) > limit:
        raise DataError(
            f"{source}: the text has {len(vocab)} distinct "
            f"{'characters' if vocab.level == 'char' else 'tokens'} but "
            f"{tok.describe()} indexes an embedding table of {limit} rows",
            hint=f"raise the model's vocabulary size to at least {len(vocab)} "
            "(e.g. --set vocab=...), or use level=word",
        )
    ids = vocab.encode(text)
    if len(ids) <= seq:
        raise DataError(
            f"{source}: the text has {len(ids)} tokens; windows of {seq} tokens need at "
            f"least {seq + 1}"
        )
    x, y = windows(ids, seq, stride, next_only=label is not None and label.type.rank == 1)
    arrays = {tok.name: x}
    if label is not None:
        arrays[label.name] = y
    meta = {"source": source, "vocab": vocab, "seq": seq, "stride": stride, "tokens": len(ids)}
    return Dataset(arrays, meta)


def _context(tok, args: Mapping[str, Any], hparams: Mapping[str, Any], source: str) -> int:
    """The window length: `seq=`, else the input's fixed T, else a context hyper-parameter."""
    if "seq" in args:
        seq = args["seq"]
    elif tok.type.shape[1].is_const:
        seq = tok.type.shape[1].value
    else:
        seq = next((hparams[k] for k in _CONTEXT_HPARAMS if k in hparams), None)
        if seq is None:
            raise DataError(
                f"{source}: {tok.describe()} expects {tok.type}, and nothing fixes T",
                hint="give the window length as an argument, e.g. `--data corpus.txt:seq=64`",
            )
    if not isinstance(seq, int) or seq < 1:
        raise DataError(f"{source}: window length must be a positive integer, got {seq!r}")
    return seq
