"""NumPy kernels of scaled dot-product attention and its backward pass (`xp` is numpy or
cupy).

The numbers are those of the unfused graph the `attention` pass replaces:
`softmax(where(mask_n, ... where(mask_1, (q @ k^T) * scale, fill_1) ..., fill_n)) @ v`, with
the softmax taken over the last axis as the `softmax` primitive takes it (subtract the row
maximum, exponentiate, divide by the sum). q, k, v are [B, H, T, d] (views with any strides);
the result is written [B, T, H, d], the layout the heads are merged from, so the merge that
follows is a view.
"""

from __future__ import annotations


def probs(xp, q, k, masks, scale, fills):
    """[B, H, T, S]: the attention weights."""
    s = xp.matmul(q, xp.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    for m, f in zip(masks, fills):
        s = xp.where(m, s, q.dtype.type(f))
    s = s - s.max(axis=-1, keepdims=True)
    p = xp.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return p


def attention(xp, q, k, v, *masks, out=None, scale=1.0, fills=()):
    """(q, k, v, *masks) -> [B, T, H, d]."""
    o = xp.matmul(probs(xp, q, k, masks, scale, fills), v).transpose(0, 2, 1, 3)
    if out is None:
        return xp.ascontiguousarray(o)
    out[...] = o
    return out


def attention_grad(xp, q, k, v, *rest, out=None, scale=1.0, fills=()):
    """(q, k, v, *masks, g) -> [B, T, 3, H, d]: dq, dk, dv side by side, each in the
    [B, T, H, d] layout at index 0, 1, 2 of axis 2 (the layout of one [B, T, 3 * H * d]
    projection's result); g is the gradient of attention's result ([B, T, H, d]). The
    weights are computed again from q and k rather than stored (the backward reads no
    [B, H, T, T] tensor)."""
    masks, g = rest[:-1], rest[-1]
    p = probs(xp, q, k, masks, scale, fills)
    go = g.transpose(0, 2, 1, 3)
    dv = xp.matmul(xp.swapaxes(p, -1, -2), go)
    dp = xp.matmul(go, xp.swapaxes(v, -1, -2))
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    zero = q.dtype.type(0)
    for m in masks:
        ds = xp.where(m, ds, zero)
    ds = ds * q.dtype.type(scale)
    dq = xp.matmul(ds, k)
    dk = xp.matmul(xp.swapaxes(ds, -1, -2), q)
    if out is None:
        out = xp.empty(g.shape[:2] + (3,) + g.shape[2:], dtype=g.dtype)
    for i, x in enumerate((dq, dk, dv)):
        out[:, :, i] = x.transpose(0, 2, 1, 3)
    return out
