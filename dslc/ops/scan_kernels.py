"""Array kernels of the recurrent scans and their backward passes (BPTT in one call).

The input projection `xw = x @ W + b` is computed outside the scan (one big GEMM); a scan
loops over time with one [B, H] @ [H, kH] GEMM per step. The backward kernels recompute
the gates of every step at once from the stored states (one GEMM over all of B*T), then
run the reverse loop, again one GEMM per step.

LSTM gates are in PyTorch's order i, f, g, o; GRU gates r, z, n with
n = tanh(xw_n + r * (h @ U_n + bu_n)) as in torch.nn.GRU.
"""

from __future__ import annotations

from dslc.ops.blas_pool import single_threaded


def sigmoid(xp, x, out=None):
    """1 / (1 + e^-x) as (1 + tanh(x/2)) / 2: no overflow for any x."""
    r = xp.multiply(x, 0.5, out=out)
    xp.tanh(r, out=r)
    r += 1.0
    r *= 0.5
    return r


def _lstm_gate_scales(xp, h, dtype):
    """Per-column a, b with gate = a * tanh(a * z) + b: sigmoid for i, f, o and tanh for g."""
    a = xp.full(4 * h, 0.5, dtype=dtype)
    a[2 * h : 3 * h] = 1.0
    b = xp.full(4 * h, 0.5, dtype=dtype)
    b[2 * h : 3 * h] = 0.0
    return a, b


def _lstm_gates(xp, z, a, b):
    """Activate pre-activations z[..., 4H] in place: i, f, o sigmoid; g tanh."""
    z *= a
    xp.tanh(z, out=z)
    z *= a
    z += b
    return z


def _rows(xp, n, fn):
    """fn(0, n) with one BLAS thread for NumPy: a time step's GEMM is small, and a join of
    several BLAS threads per step costs more than it saves (100x more on a busy machine).
    Splitting the batch rows over Python threads was measured too: the GIL hand-offs of a
    dozen small calls per step ate the gain."""
    if xp.__name__ != "numpy":
        fn(0, n)
        return
    with single_threaded():
        fn(0, n)


def lstm_scan(xp, xw, u, h0, c0, *bias, out=None, gates=False):
    """[B, T, 2, H] of h and c; with `gates`, [B, T, 6, H]: h, c, then i, f, g, o activated.
    An optional [4H] bias is added to every step's pre-activations."""
    bsz, steps, h4 = xw.shape
    y = out if out is not None else xp.empty((bsz, steps, 6 if gates else 2, h4 // 4), xw.dtype)
    b = bias[0] if bias else None
    _rows(xp, bsz, lambda lo, hi: _lstm_fwd(xp, xw[lo:hi], u, h0[lo:hi], c0[lo:hi], y[lo:hi], b))
    return y


def _lstm_fwd(xp, xw, u, h0, c0, y, bias):
    bsz, steps, h4 = xw.shape
    h = h4 // 4
    a, b = _lstm_gate_scales(xp, h, xw.dtype)
    z = xp.empty((bsz, h4), xw.dtype)
    tmp = xp.empty((bsz, h), xw.dtype)
    hp, cp = h0, c0
    for t in range(steps):
        # the states live in y: [B, H] rows with a unit inner stride, which BLAS takes
        xp.matmul(hp, u, out=z)
        z += xw[:, t]
        if bias is not None:
            z += bias
        _lstm_gates(xp, z, a, b)
        if y.shape[2] == 6:
            y[:, t, 2:] = z.reshape(bsz, 4, h)
        i, f, g, o = z[:, :h], z[:, h : 2 * h], z[:, 2 * h : 3 * h], z[:, 3 * h :]
        hp, cp = y[:, t, 0], y[:, t, 1]
        xp.multiply(f, c0 if t == 0 else y[:, t - 1, 1], out=cp)
        xp.multiply(i, g, out=tmp)
        cp += tmp
        xp.tanh(cp, out=hp)
        hp *= o


def _previous(xp, first, seq):
    """[B, T, H] of the state before each step: first, seq[:, 0], ..., seq[:, T-2]."""
    return xp.concatenate([first[:, None], seq[:, :-1]], axis=1)


def lstm_grad_parts(res, bsz, steps):
    """The two parts of lstm_scan_grad's [B*T + B, 4H] result: d xw as [B, T, 4H] (rows
    b*T + t) and the last B rows, [dh0, dc0, 0, 0] per batch row."""
    return res[: bsz * steps].reshape(bsz, steps, -1), res[bsz * steps :]


def lstm_scan_grad(xp, xw, u, h0, c0, y, g, *bias, out=None):
    """[B*T + B, 4H]: rows b*T + t hold d(loss)/d(xw[b, t]), row B*T + b [dh0, dc0, 0, 0]
    of batch row b (so d xw is a contiguous [B, T, 4H] view)."""
    bsz, steps, h4 = xw.shape
    res = out if out is not None else xp.empty((bsz * steps + bsz, h4), xw.dtype)
    body, tail = lstm_grad_parts(res, bsz, steps)
    ut = xp.ascontiguousarray(u.T)

    def rows(lo, hi):
        b = bias[0] if bias else None
        _lstm_bwd(
            xp,
            xw[lo:hi],
            u,
            ut,
            h0[lo:hi],
            c0[lo:hi],
            y[lo:hi],
            g[lo:hi],
            body[lo:hi],
            tail[lo:hi],
            b,
        )

    _rows(xp, bsz, rows)
    return res


def _lstm_bwd(xp, xw, u, ut, h0, c0, y, g, res, last, bias):
    bsz, steps, h4 = xw.shape
    h = h4 // 4
    hs, cs = y[:, :, 0], y[:, :, 1]
    cprev = _previous(xp, c0, cs)
    if y.shape[2] == 6:  # the forward pass kept the activated gates: a copy to write over
        gates = y[:, :, 2:].reshape(bsz, steps, h4).copy()
    else:  # the gates of every step at once, from the stored states
        hprev = _previous(xp, h0, hs)
        gates = xp.matmul(hprev.reshape(-1, h), u).reshape(bsz, steps, h4)
        gates += xw
        if bias is not None:
            gates += bias
        _lstm_gates(xp, gates, *_lstm_gate_scales(xp, h, xw.dtype))
    i, f, gg, o = (gates[..., k * h : (k + 1) * h] for k in range(4))
    tc = xp.tanh(cs)
    dc_from_h = xp.multiply(tc, tc)
    xp.subtract(1.0, dc_from_h, out=dc_from_h)
    dc_from_h *= o
    # d(pre-activation) = dc * [g, c_prev, i] and dh * tanh(c), each times the activation's
    # derivative (sigmoid' = s(1-s), tanh' = 1-t^2): the factors, for all steps at once,
    # written over the gates (the loop below still needs f, kept aside, and nothing else)
    f = f.copy()
    i_act = i.copy()
    tmp = xp.subtract(1.0, o)
    o *= tmp  # o(1-o)
    o *= tc
    xp.subtract(1.0, i, out=tmp)
    i *= tmp  # i(1-i)
    i *= gg
    xp.subtract(1.0, f, out=tmp)
    fac_f = gates[..., h : 2 * h]
    fac_f *= tmp  # f(1-f)
    fac_f *= cprev
    gg *= gg
    xp.subtract(1.0, gg, out=gg)  # 1 - g^2
    gg *= i_act
    del tmp, i_act
    fac = gates
    fac3 = fac[..., : 3 * h].reshape(bsz, steps, 3, h)
    dh = xp.zeros((bsz, h), xw.dtype)
    dc = xp.zeros((bsz, h), xw.dtype)
    dht = xp.empty((bsz, h), xw.dtype)
    tmp = xp.empty((bsz, h), xw.dtype)
    for t in range(steps - 1, -1, -1):
        xp.add(g[:, t, 0], dh, out=dht)
        dc += g[:, t, 1]
        xp.multiply(dht, dc_from_h[:, t], out=tmp)
        dc += tmp
        dz = res[:, t]  # written in place: [B, 4H] rows with a unit inner stride
        xp.multiply(dc[:, None, :], fac3[:, t], out=dz[:, : 3 * h].reshape(bsz, 3, h))
        xp.multiply(dht, fac[:, t, 3 * h :], out=dz[:, 3 * h :])
        xp.matmul(dz, ut, out=dh)
        dc *= f[:, t]
    last[:, :h] = dh
    last[:, h : 2 * h] = dc
    last[:, 2 * h :] = 0


def gru_scan(xp, xw, u, bu, h0, out=None):
    bsz, steps, h3 = xw.shape
    y = out if out is not None else xp.empty((bsz, steps, h3 // 3), xw.dtype)
    _rows(xp, bsz, lambda lo, hi: _gru_fwd(xp, xw[lo:hi], u, bu, h0[lo:hi], y[lo:hi]))
    return y


def _gru_fwd(xp, xw, u, bu, h0, y):
    bsz, steps, h3 = xw.shape
    h = h3 // 3
    hu = xp.empty((bsz, h3), xw.dtype)
    rz = xp.empty((bsz, 2 * h), xw.dtype)
    n = xp.empty((bsz, h), xw.dtype)
    hs = xp.array(h0, copy=True)  # contiguous state, for BLAS
    for t in range(steps):
        xp.matmul(hs, u, out=hu)
        hu += bu
        xt = xw[:, t]
        xp.add(xt[:, : 2 * h], hu[:, : 2 * h], out=rz)
        sigmoid(xp, rz, out=rz)
        r, z = rz[:, :h], rz[:, h:]
        xp.multiply(r, hu[:, 2 * h :], out=n)
        n += xt[:, 2 * h :]
        xp.tanh(n, out=n)
        # h' = n + z (h - n)
        hs -= n
        hs *= z
        hs += n
        y[:, t] = hs


def gru_scan_grad(xp, xw, u, bu, h0, y, g, out=None):
    """[B, T+1, 2, 3H]: [:, :T, 0] d/d(xw), [:, :T, 1] d/d(h @ u + bu), [:, T, 0, :H] dh0."""
    bsz, steps, h3 = xw.shape
    res = out if out is not None else xp.empty((bsz, steps + 1, 2, h3), xw.dtype)

    def rows(lo, hi):
        _gru_bwd(xp, xw[lo:hi], u, bu, h0[lo:hi], y[lo:hi], g[lo:hi], res[lo:hi])

    _rows(xp, bsz, rows)
    return res


def _gru_bwd(xp, xw, u, bu, h0, y, g, res):
    bsz, steps, h3 = xw.shape
    h = h3 // 3
    hprev = _previous(xp, h0, y)
    hu = xp.matmul(hprev.reshape(-1, h), u).reshape(bsz, steps, h3)
    hu += bu
    rz = sigmoid(xp, xw[..., : 2 * h] + hu[..., : 2 * h])
    r, z = rz[..., :h], rz[..., h:]
    n = xp.tanh(xw[..., 2 * h :] + r * hu[..., 2 * h :])
    # per-step factors that do not depend on the incoming gradient
    a_n = (1.0 - z) * (1.0 - n * n)  # dh -> d n_pre
    a_z = (hprev - n) * z * (1.0 - z)  # dh -> d z_pre
    a_r = hu[..., 2 * h :] * r * (1.0 - r)  # d n_pre -> d r_pre
    dh = xp.zeros((bsz, h), xw.dtype)
    dht = xp.empty((bsz, h), xw.dtype)
    ut = xp.ascontiguousarray(u.T)
    dhu = xp.empty((bsz, h3), xw.dtype)  # contiguous, for BLAS
    for t in range(steps - 1, -1, -1):
        xp.add(g[:, t], dh, out=dht)
        dx = res[:, t, 0]
        dn = xp.multiply(dht, a_n[:, t], out=dx[:, 2 * h :])
        xp.multiply(dht, a_z[:, t], out=dx[:, h : 2 * h])
        xp.multiply(dn, a_r[:, t], out=dx[:, :h])
        dhu[:, : 2 * h] = dx[:, : 2 * h]
        xp.multiply(dn, r[:, t], out=dhu[:, 2 * h :])
        res[:, t, 1] = dhu
        xp.matmul(dhu, ut, out=dh)
        dht *= z[:, t]
        dh += dht
    last = res[:, steps]
    last[...] = 0
    last[:, 0, :h] = dh


def rnn_scan(xp, xw, u, h0, out=None):
    bsz, steps, h = xw.shape
    y = out if out is not None else xp.empty((bsz, steps, h), xw.dtype)
    _rows(xp, bsz, lambda lo, hi: _rnn_fwd(xp, xw[lo:hi], u, h0[lo:hi], y[lo:hi]))
    return y


def _rnn_fwd(xp, xw, u, h0, y):
    bsz, steps, h = xw.shape
    hs = xp.array(h0, copy=True)
    nxt = xp.empty_like(hs)  # contiguous states, for BLAS
    for t in range(steps):
        xp.matmul(hs, u, out=nxt)
        nxt += xw[:, t]
        xp.tanh(nxt, out=nxt)
        y[:, t] = nxt
        hs, nxt = nxt, hs


def rnn_scan_grad(xp, u, y, g, out=None):
    """[B, T+1, H]: rows 0..T-1 d/d(xw), row T dh0."""
    bsz, steps, h = y.shape
    res = out if out is not None else xp.empty((bsz, steps + 1, h), y.dtype)
    _rows(xp, bsz, lambda lo, hi: _rnn_bwd(xp, u, y[lo:hi], g[lo:hi], res[lo:hi]))
    return res


def _rnn_bwd(xp, u, y, g, res):
    bsz, steps, h = y.shape
    dtanh = 1.0 - y * y
    dh = xp.zeros((bsz, h), y.dtype)
    d = xp.empty((bsz, h), y.dtype)  # contiguous, for BLAS
    ut = xp.ascontiguousarray(u.T)
    for t in range(steps - 1, -1, -1):
        xp.add(g[:, t], dh, out=d)
        d *= dtanh[:, t]
        res[:, t] = d
        xp.matmul(d, ut, out=dh)
    res[:, steps] = dh
