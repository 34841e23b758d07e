"""NumPy kernels of layer normalisation over the last axis and its backward pass (`xp` is
numpy or cupy).

The numbers are those of the graph the `layer_norm` pass replaces:
`(x - mean(x)) * rsqrt(var(x) + eps) * gamma + beta`, with the population variance.
"""

from __future__ import annotations


def _stats(xp, x, eps):
    """Each row's mean and 1 / sqrt(variance + eps), with a kept last axis."""
    mu = x.mean(axis=-1, keepdims=True)
    inv = 1 / xp.sqrt(x.var(axis=-1, keepdims=True) + x.dtype.type(eps))
    return mu, inv


def layer_norm(xp, x, gamma, beta, out=None, eps=1e-5):
    """(x[..., D], gamma[D], beta[D]) -> [..., D]."""
    mu, inv = _stats(xp, x, eps)
    y = (x - mu) * inv * gamma + beta
    if out is None:
        return y
    out[...] = y
    return out


def layer_norm_grad(xp, x, gamma, dy, out=None, eps=1e-5):
    """(x[..., D], gamma[D], dy[..., D]) -> [R + 2, D] for R rows of x: dx as rows, then
    d gamma, then d beta. The row statistics are computed again, not stored."""
    d = x.shape[-1]
    x2, dy2 = x.reshape(-1, d), dy.reshape(-1, d)
    rows = x2.shape[0]
    mu, inv = _stats(xp, x2, eps)
    xhat = (x2 - mu) * inv
    dxhat = dy2 * gamma
    dx = inv * (
        dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True)
    )
    if out is None:
        out = xp.empty((rows + 2, d), dtype=x.dtype)
    out[:rows] = dx
    out[rows] = (dy2 * xhat).sum(axis=0)
    out[rows + 1] = dy2.sum(axis=0)
    return out
