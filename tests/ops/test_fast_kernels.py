"""The fast kernel paths agree with the plain NumPy ones they replace."""

from __future__ import annotations

import numpy as np
import pytest

from dslc.ops import blas_pool
from dslc.ops import conv_kernels as ck
from dslc.ops.linalg import _scatter_add_rows

RNG = np.random.default_rng(7)


def arr(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize(
    "ashape,bshape",
    [((6, 3, 4, 5), (6, 3, 5, 2)), ((1, 4, 5), (3, 5, 2)), ((5, 4, 3), (5, 3, 2)),
     ((3, 2, 4, 5), (2, 5, 6)), ((1, 2, 3), (1, 3, 4))],
)  # fmt: skip
def test_stacked_matmul_matches_numpy(ashape, bshape):
    a, b = arr(*ashape), arr(*bshape)
    want = np.matmul(a, b)
    assert np.allclose(blas_pool.stacked_matmul(a, b), want)
    out = np.empty_like(want)
    assert blas_pool.stacked_matmul(a, b, out=out) is out
    assert np.allclose(out, want)


def test_stacked_matmul_of_transposed_views():
    q = arr(4, 6, 2, 3, dtype=np.float32).transpose(0, 2, 1, 3)
    k = arr(4, 6, 2, 3, dtype=np.float32).transpose(0, 2, 3, 1)
    assert np.allclose(blas_pool.stacked_matmul(q, k), np.matmul(q, k), atol=1e-6)


@pytest.mark.parametrize("m,k,n", [(3, 4, 5), (200, 150, 160)])
def test_matmul2d_matches_numpy(m, k, n):
    a, b = arr(m, k), arr(k, n)
    assert np.allclose(blas_pool.matmul2d(a, b), a @ b)
    assert np.allclose(blas_pool.matmul2d(a.T.copy().T, b), a @ b)


def test_in_slabs_covers_every_index_once():
    seen = np.zeros(11, dtype=int)

    def fn(lo, hi):
        seen[lo:hi] += 1

    blas_pool.in_slabs(11, fn)
    blas_pool.in_slabs(1, lambda lo, hi: seen.__setitem__(slice(lo, hi), seen[lo:hi] + 1))
    assert seen.tolist() == [2] + [1] * 10


@pytest.mark.parametrize("n", [1, 3, 7, 8, 100])
@pytest.mark.parametrize("chunks", [1, 4])
def test_row_slabs_cover_every_index_once(n, chunks):
    """With chunks, the threads take slabs in turn; each slab runs once, whoever takes it."""
    import threading
    import time

    seen = np.zeros(n, dtype=int)

    def fn(lo, hi):
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.002)  # a worker that is slow to run: the caller takes more slabs
        seen[lo:hi] += 1

    blas_pool.in_row_slabs(n, fn, chunks)
    assert seen.tolist() == [1] * n


@pytest.mark.parametrize("vocab,rows", [(50, 40), (3, 200), (1000, 7), (5, 0)])
def test_scatter_add_rows_matches_add_at(vocab, rows):
    idx = RNG.integers(0, vocab, size=(rows,))
    g = arr(rows, 4)
    want = np.zeros((vocab, 4))
    np.add.at(want, idx, g)
    out = np.full((vocab, 4), 9.0)
    assert np.allclose(_scatter_add_rows(np, g, idx, out=out, n=vocab), want)


@pytest.mark.parametrize("vocab,rows", [(65, 4096), (3, 200), (1000, 7), (5, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_scatter_add_rows_matches_add_at(vocab, rows, dtype):
    pytest.importorskip("numba")
    from dslc.ops.gather_numba import scatter_add_rows

    idx = RNG.integers(-vocab, vocab, size=(2, rows // 2))  # negative indices count from the end
    g = arr(2, rows // 2, 3, 2, dtype=dtype)
    want = np.zeros((vocab, 3, 2))
    np.add.at(want, idx.ravel(), g.reshape(-1, 3, 2).astype(np.float64))
    out = np.full((vocab, 3, 2), 9.0, dtype)
    assert scatter_add_rows(np, g, idx, out=out, n=vocab) is out
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)


def test_gather_into_a_buffer_matches_take():
    from dslc.ops.linalg import _gather

    table, idx = arr(7, 3), np.array([[0, -1, 6], [-7, 2, 2]])
    out = np.full((2, 3, 3), 9.0)
    assert _gather(np, table, idx, out=out) is out
    np.testing.assert_array_equal(out, np.take(table, idx, axis=0))
    for bad in (np.array([0, 7]), np.array([-8, 1])):
        with pytest.raises(IndexError) as plain:
            np.take(table, bad, axis=0, out=np.empty((2, 3)))
        with pytest.raises(IndexError) as ours:
            _gather(np, table, bad, out=np.empty((2, 3)))
        assert str(ours.value) == str(plain.value)


def test_compiled_scatter_add_rows_reports_bad_indices_as_numpy_does():
    pytest.importorskip("numba")
    from dslc.ops.gather_numba import scatter_add_rows

    g, idx = arr(4, 3), np.array([0, 1, 7, 2])
    with pytest.raises(IndexError) as compiled:
        scatter_add_rows(np, g, idx, n=5)
    with pytest.raises(IndexError) as plain:
        _scatter_add_rows(np, g, idx, n=5)
    assert str(compiled.value) == str(plain.value)


CONVS = [  # c, o, (kh, kw), stride, padding, dilation, size
    (1, 4, (3, 3), (1, 1), (0, 0), (1, 1), (8, 9)),
    (3, 5, (3, 3), (1, 1), (1, 1), (1, 1), (7, 7)),
    (2, 3, (2, 3), (1, 1), (0, 2), (2, 1), (9, 8)),
    (4, 6, (1, 1), (1, 1), (0, 0), (1, 1), (5, 6)),
    (3, 4, (3, 3), (2, 2), (1, 1), (1, 1), (9, 9)),
]


@pytest.mark.parametrize("c,o,k,s,p,d,hw", CONVS)
def test_conv_fast_paths_match_the_general_path(c, o, k, s, p, d, hw):
    x, w = arr(5, c, *hw), arr(o, c, *k)
    y = ck._conv2d_general(np, x, w, None, s, p, d, 1)
    assert np.allclose(ck.conv2d(np, x, w, None, s, p, d), y)
    out_t = np.empty(y.shape[::-1]).T  # a non-contiguous out
    ck.conv2d(np, x, w, out_t, s, p, d)
    assert np.allclose(out_t, y)
    g = arr(*y.shape)
    gi = ck._grad_input_general(np, g, w, None, hw, s, p, d, 1)
    assert np.allclose(ck.conv2d_grad_input(np, g, w, None, hw, s, p, d), gi)
    gi_t = np.empty(x.shape[::-1]).T
    ck.conv2d_grad_input(np, g, w, gi_t, hw, s, p, d)
    assert np.allclose(gi_t, gi)
    gw = ck._grad_weight_general(np, x, g, None, k, s, p, d, 1)
    assert np.allclose(ck.conv2d_grad_weight(np, x, g, None, k, s, p, d), gw)


def test_conv_over_several_chunks(monkeypatch):
    monkeypatch.setattr(ck, "COLS_BUDGET", 200)
    x, w = arr(7, 2, 6, 6), arr(3, 2, 3, 3)
    y = ck._conv2d_general(np, x, w, None, (1, 1), (0, 0), (1, 1), 1)
    assert np.allclose(ck.conv2d(np, x, w), y)
    g = arr(*y.shape)
    gi = ck._grad_input_general(np, g, w, None, (6, 6), (1, 1), (0, 0), (1, 1), 1)
    assert np.allclose(ck.conv2d_grad_input(np, g, w, None, (6, 6)), gi)
    gw = ck._grad_weight_general(np, x, g, None, (3, 3), (1, 1), (0, 0), (1, 1), 1)
    assert np.allclose(ck.conv2d_grad_weight(np, x, g, None, (3, 3)), gw)


@pytest.mark.parametrize("shape,k", [((3, 2, 8, 8), (2, 2)), ((2, 3, 9, 7), (2, 2)),
                                     ((2, 2, 7, 9), (3, 3))])  # fmt: skip
def test_tiled_max_pool_gradient_routes_ties_to_the_first(shape, k):
    x = RNG.integers(-1, 2, size=shape).astype(np.float32)  # many ties
    y = ck.max_pool2d(np, x, None, k, k)
    g = arr(*y.shape, dtype=np.float32)
    got = ck.max_pool2d_grad(np, x, y, g, np.full(shape, 5.0, np.float32), k, k)
    want = np.zeros(shape, np.float32)
    ho, wo = y.shape[2:]
    for n in range(shape[0]):
        for c in range(shape[1]):
            for i in range(ho):
                for j in range(wo):
                    win = x[n, c, i * k[0] : (i + 1) * k[0], j * k[1] : (j + 1) * k[1]]
                    r, s = np.unravel_index(np.argmax(win), win.shape)
                    want[n, c, i * k[0] + r, j * k[1] + s] += g[n, c, i, j]
    assert np.array_equal(got, want)


def test_row_slabs_leave_the_callers_blas_threads_as_they_were():
    """Slabs set BLAS to one thread while they run; the caller's count is back afterwards
    (a worker that set it and never set it back once left every later GEMM on one thread)."""
    blas_pool._setup()
    setter = blas_pool._state["setter"]
    if setter is None:
        pytest.skip("no OpenBLAS with a per-thread setting, or one thread")
    before = setter(2)
    seen = np.zeros(9, dtype=int)

    def fn(lo, hi):
        seen[lo:hi] += 1
        np.dot(np.ones((4, 4)), np.ones((4, 4)))

    try:
        blas_pool.in_row_slabs(9, fn)
        assert setter(2) == 2
    finally:
        setter(before)
    assert (seen == 1).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bsz,steps,h", [(5, 7, 3), (32, 20, 16)])
def test_lstm_scan_compiled_matches_numpy(dtype, bsz, steps, h):
    """The Numba LSTM scan (rows split over threads) against the NumPy scan, both ways."""
    pytest.importorskip("numba")
    from dslc.ops import scan_kernels as sk
    from dslc.ops import scan_numba as sn

    xw, u = arr(bsz, steps, 4 * h, dtype=dtype), arr(h, 4 * h, dtype=dtype) * 0.3
    h0, c0 = arr(bsz, h, dtype=dtype), arr(bsz, h, dtype=dtype)
    g = arr(bsz, steps, 2, h, dtype=dtype)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    y = sn.lstm_scan(np, xw, u, h0, c0)
    np.testing.assert_allclose(y, sk.lstm_scan(np, xw, u, h0, c0), rtol=tol, atol=tol)
    got = sn.lstm_scan_grad(np, xw, u, h0, c0, y, g)
    np.testing.assert_allclose(got, sk.lstm_scan_grad(np, xw, u, h0, c0, y, g), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape,k,s,p",
    [((3, 2, 8, 8), (2, 2), (2, 2), (0, 0)), ((2, 3, 9, 7), (3, 3), (2, 2), (1, 1)),
     ((2, 2, 7, 9), (2, 3), (1, 2), (0, 1)), ((2, 1, 5, 5), (2, 2), (2, 2), (0, 0))],
)  # fmt: skip
def test_max_pool_compiled_matches_numpy(dtype, shape, k, s, p):
    """The Numba max pool and its gradient give the NumPy kernels' numbers, ties and NaN too."""
    pytest.importorskip("numba")
    from dslc.ops import pool_numba as pn

    x = np.round(arr(*shape, dtype=dtype), 1)  # rounded: ties inside windows
    x.reshape(-1)[5] = np.nan
    attrs = dict(kernel=k, stride=s, padding=p)
    want = ck.max_pool2d(np, x, kernel=k, stride=s, padding=p)
    got = pn.max_pool2d(np, x, **attrs)
    np.testing.assert_array_equal(got, want)
    g = arr(*want.shape, dtype=dtype)
    g.reshape(-1)[1] = np.inf
    with np.errstate(invalid="ignore"):
        want_dx = ck.max_pool2d_grad(np, x, want, g, kernel=k, stride=s, padding=p)
        got_dx = pn.max_pool2d_grad(np, x, want, g, **attrs)
    # overlapping windows add into an element in another order: equal to rounding
    np.testing.assert_allclose(got_dx, want_dx, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bsz,steps,h", [(5, 7, 3), (32, 20, 16)])
def test_gru_and_rnn_scans_compiled_match_numpy(dtype, bsz, steps, h):
    pytest.importorskip("numba")
    from dslc.ops import scan_kernels as sk
    from dslc.ops import scan_numba as sn

    tol = 2e-5 if dtype == np.float32 else 1e-12
    close = dict(rtol=tol, atol=tol)
    xw, u, bu = arr(bsz, steps, 3 * h, dtype=dtype), arr(h, 3 * h, dtype=dtype) * 0.3, arr(3 * h)
    bu = bu.astype(dtype)
    h0, g = arr(bsz, h, dtype=dtype), arr(bsz, steps, h, dtype=dtype)
    y = sn.gru_scan(np, xw, u, bu, h0)
    np.testing.assert_allclose(y, sk.gru_scan(np, xw, u, bu, h0), **close)
    want = sk.gru_scan_grad(np, xw, u, bu, h0, y, g)
    np.testing.assert_allclose(sn.gru_scan_grad(np, xw, u, bu, h0, y, g), want, **close)
    xw, u = arr(bsz, steps, h, dtype=dtype), arr(h, h, dtype=dtype) * 0.3
    y = sn.rnn_scan(np, xw, u, h0)
    np.testing.assert_allclose(y, sk.rnn_scan(np, xw, u, h0), **close)
    np.testing.assert_allclose(
        sn.rnn_scan_grad(np, u, y, g), sk.rnn_scan_grad(np, u, y, g), **close
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masks", [0, 1, 2])
@pytest.mark.parametrize("row_block", [None, 2, 4])
def test_attention_compiled_matches_numpy_on_head_views(dtype, masks, row_block, monkeypatch):
    """q, k, v as the plan passes them: [B, H, T, d] views of [B, T, H*d] projections (rows
    with a stride), a causal [T, T] mask and a [B, 1, 1, T] padding mask; one slab per thread.
    With row blocks, each block of queries reads the keys up to the last one it keeps."""
    pytest.importorskip("numba")
    from dslc.ops import attention_kernels as ak
    from dslc.ops import attention_numba as an

    if row_block is not None:
        monkeypatch.setattr(an, "ROW_BLOCK", row_block)

    bsz, heads, t, d = 5, 3, 9, 4
    qkv = arr(bsz, t, 3, heads, d, dtype=dtype)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    pad = RNG.random((bsz, 1, 1, t)) < 0.7
    pad[0] = False  # a row with every key masked: uniform weights, as the unfused graph gives
    ms = (np.tril(np.ones((t, t), bool)), pad)[:masks]
    attrs = {"scale": d**-0.5, "fills": (-1e9, -1e4)[:masks]}
    g = arr(bsz, t, heads, d, dtype=dtype)
    tol = 2e-6 if dtype == np.float32 else 1e-12
    want = ak.attention(np, q, k, v, *ms, **attrs)
    out = np.full(want.shape, 7, dtype)
    assert an.attention(np, q, k, v, *ms, out=out, **attrs) is out
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
    want = ak.attention_grad(np, q, k, v, *ms, g, **attrs)
    out = np.full(want.shape, 7, dtype)
    assert an.attention_grad(np, q, k, v, *ms, g, out=out, **attrs) is out
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fill", [-1e9, -np.inf, -1.0, 0.5])
@pytest.mark.parametrize("t,s", [(9, 9), (7, 12), (12, 5)])
def test_attention_row_blocks_skip_only_keys_of_zero_weight(dtype, fill, t, s, monkeypatch):
    """A fill close to the scores (-1.0, 0.5) gives the masked keys a weight: the blocks are
    computed again over every key. Queries and keys of different lengths; a mask that keeps
    a different number of keys per row and per batch entry."""
    pytest.importorskip("numba")
    from dslc.ops import attention_kernels as ak
    from dslc.ops import attention_numba as an

    monkeypatch.setattr(an, "ROW_BLOCK", 3)
    bsz, heads, d = 3, 2, 4
    q, k, v = (
        arr(bsz, heads, t, d, dtype=dtype),
        *(arr(bsz, heads, s, d, dtype=dtype) for _ in "kv"),
    )
    keep = np.arange(s)[None, None, None, :] <= (
        np.arange(t)[:, None] % s + np.arange(bsz)[:, None, None, None]
    )
    attrs = {"scale": 0.7, "fills": (fill,)}
    g = arr(bsz, t, heads, d, dtype=dtype)
    tol = 2e-6 if dtype == np.float32 else 1e-12
    want = ak.attention(np, q, k, v, keep, **attrs)
    np.testing.assert_allclose(an.attention(np, q, k, v, keep, **attrs), want, rtol=tol, atol=tol)
    if t != s:
        return  # attention_grad is the self-attention backward (others use primitives)
    want = ak.attention_grad(np, q, k, v, keep, g, **attrs)
    got = an.attention_grad(np, q, k, v, keep, g, **attrs)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_attention_row_blocks_are_used_only_where_keys_can_be_skipped():
    pytest.importorskip("numba")
    from dslc.ops import attention_numba as an

    t = 2 * an.ROW_BLOCK + 5
    causal = np.broadcast_to(np.tril(np.ones((t, t), bool)), (4, 2, t, t))
    ext, rows = an._blocks(causal, causal, 1, t, t)
    assert rows == an.ROW_BLOCK and ext.shape == (1, 1, 3)  # one scan for every (b, h)
    assert ext.ravel().tolist() == [an.ROW_BLOCK, 2 * an.ROW_BLOCK, t]
    full = np.ones((4, 2, t, t), bool)
    ext, rows = an._blocks(full, full, 1, t, t)
    assert rows == t and ext.ravel().tolist() == [t]


def test_attention_compiled_propagates_nan_like_numpy():
    pytest.importorskip("numba")
    from dslc.ops import attention_kernels as ak
    from dslc.ops import attention_numba as an

    q, k, v = (arr(2, 2, 5, 3, dtype=np.float32) for _ in range(3))
    q[1, 0, 2, 1] = np.nan
    want = ak.attention(np, q, k, v, scale=0.5)
    got = an.attention(np, q, k, v, scale=0.5)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got).any()
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 5), (4, 33, 128), (1, 1)])
def test_layer_norm_compiled_matches_numpy(dtype, shape):
    """One slab per thread; d gamma and d beta summed over the slabs."""
    pytest.importorskip("numba")
    from dslc.ops import norm_kernels as nk
    from dslc.ops import norm_numba as nn_

    x = arr(*shape, dtype=dtype) * 3 + 1
    gamma, beta, dy = arr(shape[-1], dtype=dtype), arr(shape[-1], dtype=dtype), arr(*shape)
    dy = dy.astype(dtype)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    want = nk.layer_norm(np, x, gamma, beta, eps=1e-3)
    out = np.full(shape, 7, dtype)
    assert nn_.layer_norm(np, x, gamma, beta, out=out, eps=1e-3) is out
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
    want = nk.layer_norm_grad(np, x, gamma, dy, eps=1e-3)
    out = np.full(want.shape, 7, dtype)
    assert nn_.layer_norm_grad(np, x, gamma, dy, out=out, eps=1e-3) is out
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "xs,ws,attrs",
    [
        ((3, 4, 9, 8), (5, 4, 3, 3), {}),
        ((2, 3, 9, 8), (4, 3, 3, 3), {"padding": (1, 2)}),
        ((3, 2, 10, 11), (5, 2, 3, 2), {"padding": (2, 1), "dilation": (2, 3)}),
        ((2, 4, 7, 7), (6, 4, 1, 1), {}),
        ((1, 1, 5, 5), (2, 1, 5, 5), {"padding": 2}),
        ((2, 3, 9, 8), (4, 3, 3, 3), {"stride": (2, 1), "padding": 1}),  # the NumPy kernels
    ],
)
def test_convolution_compiled_matches_numpy(dtype, xs, ws, attrs):
    """Wide columns, one image at a time: forward, weight and input gradients, with padding
    and dilation (the junk columns past each output row must add nothing)."""
    pytest.importorskip("numba")
    from dslc.ops import conv_numba as cn
    from dslc.ops.nn import conv_attrs

    a = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, **attrs}
    ca = conv_attrs(a)
    x, w = arr(*xs, dtype=dtype), arr(*ws, dtype=dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    want = ck.conv2d(np, x, w, **ca)
    out = np.full(want.shape, 7, dtype)
    assert cn.conv2d(np, x, w, out=out, **a) is out
    np.testing.assert_allclose(out, want, **tol)
    g = arr(*want.shape, dtype=dtype)
    want = ck.conv2d_grad_input(np, g, w, in_size=xs[2:], **ca)
    out = np.full(xs, 7, dtype)
    assert cn.conv2d_grad_input(np, g, w, out=out, in_size=xs[2:], **a) is out
    np.testing.assert_allclose(out, want, **tol)
    want = ck.conv2d_grad_weight(np, x, g, kernel=ws[2:], **ca)
    out = np.full(ws, 7, dtype)
    assert cn.conv2d_grad_weight(np, x, g, out=out, kernel=ws[2:], **a) is out
    np.testing.assert_allclose(out, want, **tol)


def test_attention_compiled_takes_any_stride_on_length_one_axes():
    """A one-row GEMM operand whose row axis carries a stride below its width (NumPy leaves
    strides of length-1 axes free) is passed with a valid leading dimension, not refused by
    BLAS (which would leave the scores unwritten)."""
    pytest.importorskip("numba")
    from dslc.ops import attention_kernels as ak
    from dslc.ops import attention_numba as an

    q = arr(2, 3, 1, 8, dtype=np.float32)
    q = np.lib.stride_tricks.as_strided(q, strides=q.strides[:2] + (4, 4))
    k, v = arr(2, 3, 5, 8, dtype=np.float32), arr(2, 3, 5, 6, dtype=np.float32)
    want = ak.attention(np, q, k, v, scale=0.5)
    np.testing.assert_allclose(an.attention(np, q, k, v, scale=0.5), want, rtol=2e-6, atol=2e-6)
