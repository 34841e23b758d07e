"""Sampling tokens from a language model's logits, and autoregressive generation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dslc.errors import ConfigError


def sample_next(
    logits,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> int:
    """One token id drawn from softmax(logits / temperature), restricted to the `top_k` largest.

    `logits` is [V] (or [1, V]); temperature 0 picks the argmax.
    """
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    if temperature < 0:
        raise ConfigError(f"temperature must be at least 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top-k must be at least 1, got {top_k}")
    if temperature == 0 or top_k == 1:
        return int(np.argmax(z))
    z = z / temperature
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max())
    cdf = np.cumsum(p)
    # inverse-CDF draw: one uniform number per token, reproducible across NumPy versions
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), z.size - 1))


def generate(
    step: Callable[[np.ndarray], np.ndarray],
    prompt: Sequence[int],
    n_tokens: int,
    rng: np.random.Generator,
    *,
    context: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    pad_id: int | None = None,
    pad_side: str = "right",
    stop_id: int | None = None,
) -> list[int]:
    """Extend `prompt` by `n_tokens` ids; returns the new ids only.

    `step` maps token ids [1, t] (int64) to logits [1, t, V] (a sequence model) or [1, V] (a
    model that predicts the token after its window); the window it sees is the last `context`
    ids. With `pad_id` (a model whose T is fixed) a shorter window is padded to `context`: on
    the right for sequence models, whose logits are read at the last real position (exact for
    causal models), or with `pad_side="left"` for models that read the last step. Generation
    stops early after `stop_id`.
    """
    if pad_side not in ("left", "right"):
        raise ConfigError(f"pad_side must be `left` or `right`, got `{pad_side}`")
    ids = [int(i) for i in prompt]
    if not ids:
        raise ConfigError("the prompt is empty: give at least one token")
    if pad_id is not None and context is None:
        raise ConfigError("padding to a fixed length needs the model's context length")
    out: list[int] = []
    for _ in range(n_tokens):
        window = ids[-context:] if context else ids
        last = len(window) - 1
        if pad_id is not None and len(window) < context:
            pad = [pad_id] * (context - len(window))
            window, last = (window + pad, last) if pad_side == "right" else (pad + window, -1)
        logits = np.asarray(step(np.asarray([window], dtype=np.int64)))
        row = logits[0, last] if logits.ndim == 3 else logits[0]
        nxt = sample_next(row, rng, temperature, top_k)
        ids.append(nxt)
        out.append(nxt)
        if stop_id is not None and nxt == stop_id:
            break
    return out
