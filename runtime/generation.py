"""Text generation from a language model: encode the prompt, sample token by token, decode."""

from __future__ import annotations

import numpy as np
from dslc.runtime.model import Model
from dslc.runtime.sampling import generate
from dslc.runtime.text import _CONTEXT_HPARAMS, Vocab

from dslc.errors import ConfigError, DataError


def logits_output(model: Model) -> tuple[str, bool]:
    """The output to sample from, and whether it holds probabilities (a softmax) not logits."""
    g = model.infer_graph
    name = "logits" if "logits" in g.outputs else model.prediction
    if name is None:
        raise ConfigError(f"model {model.name} declares no output to sample from")
    return name, g.data(g.outputs[name])["op"] == "softmax"


def generate_text(
    model: Model,
    vocab: Vocab | str,
    prompt: str,
    *,
    tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    context: int | None = None,
) -> str:
    """`prompt` continued by `tokens` sampled tokens (the same seed gives the same text)."""
    v = Vocab.from_json(vocab) if isinstance(vocab, str) else vocab
    g = model.infer_graph
    if len(model.inputs) != 1 or g.data(g.inputs[model.inputs[0]])["type"].rank != 2:
        raise ConfigError(
            f"model {model.name} is not a language model: generate needs one input of token ids"
            " [B, T]"
        )
    tok = model.inputs[0]
    t_dim = g.data(g.inputs[tok])["type"].shape[1]
    name, probs = logits_output(model)
    exe = model.executor((name,))
    fixed = t_dim.is_const
    if fixed:
        context = t_dim.value
    elif context is None:
        context = next((model.program.hparams[k] for k in _CONTEXT_HPARAMS
                        if k in model.program.hparams), None)  # fmt: skip
    sequence_out = g.data(g.outputs[name])["type"].rank == 3

    def step(ids: np.ndarray) -> np.ndarray:
        out = exe.run({tok: ids})[name]
        if probs:
            out = np.log(np.maximum(out, 1e-30))
        out[..., len(v) :] = -np.inf  # rows of the embedding table no token uses
        return out

    ids = v.encode(prompt)
    if len(ids) == 0:
        raise DataError("the prompt is empty after tokenising: give at least one token")
    new = generate(
        step,
        ids.tolist(),
        tokens,
        np.random.default_rng(seed),
        context=context,
        temperature=temperature,
        top_k=top_k,
        pad_id=0 if fixed else None,
        pad_side="right" if sequence_out else "left",
    )
    if v.level == "char":
        return prompt + v.decode(new)
    return v.decode(ids.tolist() + new)
