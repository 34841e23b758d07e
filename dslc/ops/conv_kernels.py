"""Array kernels of convolution and pooling (NCHW), for numpy and cupy alike.

Convolution is im2col plus GEMMs, in chunks of images so the column buffer stays a few MB.
Without groups, a chunk's columns are copied once from a strided window view into a reused
[m, C*kh*kw, Ho*Wo] buffer, whose per-image GEMMs write the NCHW output in place (no output
transpose); the weight gradient is the same GEMMs against the output gradient, and the input
gradient (stride 1) the transposed GEMMs followed by col2im as one contiguous add per kernel
position over flattened rows (`_Flat`). NumPy runs the images in slabs, one per thread with
single-threaded BLAS (`blas_pool`). Grouped convolutions (and the input gradient of strided
ones) take a general path with a GEMM per group over a transposed column layout. Pooling
loops over kernel positions only: each step is one vectorised op over the whole batch.
"""

from __future__ import annotations

from dslc.ops.blas_pool import in_slabs

COLS_BUDGET = 1 << 21  # elements of the im2col buffer per chunk (8 MB in float32)


def _pads(xp, x, ph, pw, value=0.0):
    if not ph and not pw:
        return x
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _windows(xp, xpad, kh, kw, sh, sw, dh, dw, ho, wo):
    """[N, C, kh, kw, Ho, Wo] view of the padded input under every kernel position."""
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    v = xp.lib.stride_tricks.sliding_window_view(xpad, (ekh, ekw), axis=(2, 3))
    v = v[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, ::dh, ::dw]
    return v.transpose(0, 1, 4, 5, 2, 3)


def _chunk(n, per_image):
    return max(1, min(n, COLS_BUDGET // max(1, per_image)))


def _conv2d_general(xp, x, w, out, stride, padding, dilation, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho, wo = out_size(h, kh, sh, ph, dh), out_size(wd, kw, sw, pw, dw)
    ck, p = cg * kh * kw, ho * wo
    cols = _windows(xp, _pads(xp, x, ph, pw), kh, kw, sh, sw, dh, dw, ho, wo)
    w2 = w.reshape(groups, o // groups, ck)
    direct = out is not None and out.flags.c_contiguous
    y = out.reshape(n, o, p) if direct else xp.empty((n, o, p), x.dtype)
    step = _chunk(n, c * kh * kw * p)
    for n0 in range(0, n, step):
        # one GEMM per chunk of m images: [G, O/G, CK] @ [G, CK, m*P]
        chunk = cols[n0 : n0 + step]
        m = chunk.shape[0]
        flat = chunk.transpose(1, 2, 3, 0, 4, 5).reshape(groups, ck, m * p)
        y[n0 : n0 + m] = xp.matmul(w2, flat).reshape(o, m, p).transpose(1, 0, 2)
    if direct:
        return out
    if out is None:
        return y.reshape(n, o, ho, wo)
    xp.copyto(out, y.reshape(n, o, ho, wo))
    return out


def _grad_input_general(xp, g, w, out, in_size, stride, padding, dilation, groups):
    n, o, ho, wo = g.shape
    _, cg, kh, kw = w.shape
    h, wd = in_size
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    c, p, og = cg * groups, ho * wo, o // groups
    padded = (n, c, h + 2 * ph, wd + 2 * pw)
    direct = out is not None and not ph and not pw and out.flags.c_contiguous
    dx = out if direct else xp.empty(padded, g.dtype)
    dx.fill(0)
    # dcols[G, kh, kw, Cg, m*P] = W^T g, one GEMM per chunk of m images; rows are ordered
    # by kernel position so each position's slab is contiguous for its col2im add
    wt = w.reshape(groups, og, cg, kh, kw).transpose(0, 3, 4, 2, 1)
    wt = xp.ascontiguousarray(wt).reshape(groups, kh * kw * cg, og)
    step = _chunk(n, c * kh * kw * p)
    for n0 in range(0, n, step):
        gc = g[n0 : n0 + step]
        m = gc.shape[0]
        g2 = gc.transpose(1, 0, 2, 3).reshape(groups, og, m * p)
        dcols = xp.matmul(wt, g2).reshape(groups, kh, kw, cg, m, ho, wo)
        # the chunk of dx as [G, Cg, m, H, W] (a view)
        dst = dx[n0 : n0 + m].transpose(1, 0, 2, 3).reshape(groups, cg, m, *padded[2:])
        for i in range(kh):
            for j in range(kw):
                r, s = i * dh, j * dw
                rows = slice(r, r + (ho - 1) * sh + 1, sh)
                cols = slice(s, s + (wo - 1) * sw + 1, sw)
                dst[..., rows, cols] += dcols[:, i, j]
    return dx if direct else _unpad(xp, dx, ph, pw, h, wd, out)


def _grad_weight_general(xp, x, g, out, kernel, stride, padding, dilation, groups):
    n, c, h, wd = x.shape
    _, o, ho, wo = g.shape
    kh, kw = kernel
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    cg, p = c // groups, ho * wo
    ck = cg * kh * kw
    cols = _windows(xp, _pads(xp, x, ph, pw), kh, kw, sh, sw, dh, dw, ho, wo)
    g4 = g.reshape(n, groups, o // groups, p)
    acc = xp.zeros((groups, o // groups, ck), dtype=x.dtype)
    step = _chunk(n, c * kh * kw * p)
    for n0 in range(0, n, step):
        chunk = cols[n0 : n0 + step].reshape(-1, groups, ck, p)
        acc += xp.matmul(g4[n0 : n0 + step], chunk.transpose(0, 1, 3, 2)).sum(axis=0)
    res = acc.reshape(o, cg, kh, kw)
    if out is None:
        return res
    xp.copyto(out, res)
    return out


def _slabs(xp, n, fn):
    """fn(lo, hi) over slabs of the n images: one per thread for NumPy (see blas_pool)."""
    if xp.__name__ == "numpy":
        in_slabs(n, fn)
    else:
        fn(0, n)


def _chunks(lo, hi, step):
    for n0 in range(lo, hi, step):
        yield n0, min(step, hi - n0)


class _Flat:
    """Stride-1 col2im over flattened rows: output position q = r*Wp + s for s < Wp.

    With the output gradient put on the full padded width Wp (zeros in columns s >= wo),
    the columns of kernel position (i, j) add to one contiguous run of the flattened input
    gradient, starting at i*dh*Wp + j*dw: col2im becomes kh*kw long contiguous adds instead
    of strided ones over rows of wo elements (measured 1.6x faster). A run's positions that
    would wrap into the next row or past the image come from the zero columns.
    """

    def __init__(self, c, hp, wp, kh, kw, dh, dw):
        self.c, self.kh, self.kw = c, kh, kw
        self.hw = hp * wp
        self.ho, self.wo = hp - dh * (kh - 1), wp - dw * (kw - 1)
        self.wp = wp
        self.length = self.ho * wp
        self.runs = []  # (i, j, offset, length)
        for i in range(kh):
            for j in range(kw):
                off = i * dh * wp + j * dw
                self.runs.append((i, j, off, min(self.length, self.hw - off)))

    def col2im(self, cols, dflat):
        for i, j, off, n in self.runs:
            dflat[:, :, off : off + n] += cols[:, :, i, j, :n]


def conv2d(xp, x, w, out=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    if groups != 1:
        return _conv2d_general(xp, x, w, out, stride, padding, dilation, groups)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho, wo = out_size(h, kh, sh, ph, dh), out_size(wd, kw, sw, pw, dw)
    ck, p = c * kh * kw, ho * wo
    y = out if out is not None and out.flags.c_contiguous else xp.empty((n, o, ho, wo), x.dtype)
    y3 = y.reshape(n, o, p)
    w2 = w.reshape(o, ck)
    one = kh == kw == 1 and sh == sw == 1 and not ph and not pw
    cols = None if one else _windows(xp, _pads(xp, x, ph, pw), kh, kw, sh, sw, dh, dw, ho, wo)
    step = _chunk(n, ck * p)

    def slab(lo, hi):
        if one:  # a 1x1 convolution is one GEMM per image
            xp.matmul(w2, x[lo:hi].reshape(hi - lo, c, h * wd), out=y3[lo:hi])
            return
        buf = xp.empty((min(step, hi - lo), ck, p), x.dtype)
        for n0, m in _chunks(lo, hi, step):
            b = buf[:m]
            b.reshape((m,) + cols.shape[1:])[...] = cols[n0 : n0 + m]  # im2col: one copy
            xp.matmul(w2, b, out=y3[n0 : n0 + m])

    _slabs(xp, n, slab)
    if out is not None and y is not out:
        xp.copyto(out, y)
        return out
    return y


def conv2d_grad_weight(
    xp, x, g, out=None, kernel=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1
):
    if groups != 1:
        return _grad_weight_general(xp, x, g, out, kernel, stride, padding, dilation, groups)
    n, c, h, wd = x.shape
    _, o, ho, wo = g.shape
    kh, kw = kernel
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ck, p = c * kh * kw, ho * wo
    g3 = g.reshape(n, o, p)
    cols = _windows(xp, _pads(xp, x, ph, pw), kh, kw, sh, sw, dh, dw, ho, wo)
    step = _chunk(n, ck * p)
    parts = []

    def slab(lo, hi):
        buf = xp.empty((min(step, hi - lo), ck, p), x.dtype)
        part = xp.empty((min(step, hi - lo), o, ck), x.dtype)
        acc = xp.zeros((o, ck), x.dtype)
        for n0, m in _chunks(lo, hi, step):
            b = buf[:m]
            b.reshape((m,) + cols.shape[1:])[...] = cols[n0 : n0 + m]
            # dW += sum over the chunk's images of g[n] @ cols[n]^T
            xp.matmul(g3[n0 : n0 + m], b.transpose(0, 2, 1), out=part[:m])
            acc += part[:m].sum(axis=0)
        parts.append(acc)

    _slabs(xp, n, slab)
    res = parts[0]
    for a in parts[1:]:
        res += a
    res = res.reshape(o, c, kh, kw)
    if out is None:
        return res
    xp.copyto(out, res)
    return out


def _padded_grad(xp, g, fl, n0, m, gbuf):
    """g[n0:n0+m] on the full padded width (zeros in the discarded columns), [m, O, L]."""
    o, wo = g.shape[1], fl.wo
    if fl.wp == wo:
        return g[n0 : n0 + m].reshape(m, o, fl.length)
    gb = gbuf[:m]
    gb.reshape(m, o, fl.ho, fl.wp)[..., :wo] = g[n0 : n0 + m]
    return gb


def _grad_buffer(xp, fl, m, o, dtype):
    gbuf = xp.empty((m, o, fl.ho, fl.wp), dtype)
    gbuf[..., fl.wo :] = 0
    return gbuf.reshape(m, o, fl.length)


def conv2d_grad_input(
    xp, g, w, out=None, in_size=(0, 0), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1
):
    if groups != 1 or stride != (1, 1):
        return _grad_input_general(xp, g, w, out, in_size, stride, padding, dilation, groups)
    n, o = g.shape[:2]
    _, c, kh, kw = w.shape
    h, wd = in_size
    (ph, pw), (dh, dw) = padding, dilation
    fl = _Flat(c, h + 2 * ph, wd + 2 * pw, kh, kw, dh, dw)
    ck, length = c * kh * kw, fl.length
    padded = (n, c, h + 2 * ph, wd + 2 * pw)
    direct = out is not None and not ph and not pw and out.flags.c_contiguous
    dx = out if direct else xp.empty(padded, g.dtype)
    dflat = dx.reshape(n, c, fl.hw)
    wt = xp.ascontiguousarray(w.reshape(o, ck).T)
    step = _chunk(n, ck * length)

    def slab(lo, hi):
        if kh == kw == 1 and not ph and not pw:  # 1x1: one GEMM per image, no col2im
            xp.matmul(wt, g[lo:hi].reshape(hi - lo, o, h * wd), out=dflat[lo:hi])
            return
        dflat[lo:hi].fill(0)
        m0 = min(step, hi - lo)
        buf = xp.empty((m0, c, kh, kw, length), g.dtype)
        gbuf = _grad_buffer(xp, fl, m0, o, g.dtype)
        for n0, m in _chunks(lo, hi, step):
            gm = _padded_grad(xp, g, fl, n0, m, gbuf)
            xp.matmul(wt, gm, out=buf[:m].reshape(m, ck, length))
            fl.col2im(buf[:m], dflat[n0 : n0 + m])

    _slabs(xp, n, slab)
    return dx if direct else _unpad(xp, dx, ph, pw, h, wd, out)


# --- pooling ----------------------------------------------------------------------------------


def _pool_views(a, kh, kw, sh, sw, ho, wo):
    """(i, j, view) for each kernel position: the input elements it covers, [N, C, Ho, Wo]."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, a[:, :, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw]


def max_pool2d(xp, x, out=None, kernel=(2, 2), stride=(2, 2), padding=(0, 0)):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, wd = x.shape
    ho, wo = out_size(h, kh, sh, ph, 1), out_size(wd, kw, sw, pw, 1)
    y = out if out is not None else xp.empty((n, c, ho, wo), x.dtype)
    xpad = _pads(xp, x, ph, pw, -xp.inf)

    def slab(lo, hi):
        views = _pool_views(xpad[lo:hi], kh, kw, sh, sw, ho, wo)
        ys = y[lo:hi]
        xp.copyto(ys, next(views)[2])
        for _, _, v in views:
            xp.maximum(ys, v, out=ys)

    _slabs(xp, n, slab)
    return y


def max_pool2d_grad(xp, x, y, g, out=None, kernel=(2, 2), stride=(2, 2), padding=(0, 0)):
    """Route each output's gradient to the first (row-major) maximum of its window."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, wd = x.shape
    ho, wo = y.shape[2:]
    direct = out is not None and not ph and not pw
    if (sh, sw) == (kh, kw) and not ph and not pw:
        return _max_pool_grad_tiled(xp, x, y, g, out, kh, kw)
    dx = out if direct else xp.empty((n, c, h + 2 * ph, wd + 2 * pw), g.dtype)
    dx.fill(0)
    free = xp.ones(y.shape, dtype=bool)  # windows whose maximum is not found yet
    hit = xp.empty(y.shape, dtype=bool)
    share = xp.empty(y.shape, dtype=g.dtype)
    xpad = _pads(xp, x, ph, pw, -xp.inf)
    for (_, _, xv), (_, _, dv) in zip(
        _pool_views(xpad, kh, kw, sh, sw, ho, wo), _pool_views(dx, kh, kw, sh, sw, ho, wo)
    ):
        xp.equal(xv, y, out=hit)
        hit &= free
        free ^= hit
        xp.multiply(g, hit, out=share)
        dv += share
    if direct:
        return dx
    res = dx[:, :, ph : ph + h, pw : pw + wd]
    if out is None:
        return xp.ascontiguousarray(res)
    xp.copyto(out, res)
    return out


def _max_pool_grad_tiled(xp, x, y, g, out, kh, kw):
    """Windows that tile the input (stride = kernel, no padding): each kernel position's
    share is written straight into its strided view of dx, no zero-fill and no adds."""
    n, c, h, wd = x.shape
    ho, wo = y.shape[2:]
    dx = out if out is not None else xp.empty(x.shape, g.dtype)

    def slab(lo, hi):
        d = dx[lo:hi]
        if ho * kh < h:
            d[:, :, ho * kh :] = 0  # rows no window covers
        if wo * kw < wd:
            d[:, :, :, wo * kw :] = 0
        ys, gs = y[lo:hi], g[lo:hi]
        hit = xp.empty(ys.shape, dtype=bool)
        free = xp.empty(ys.shape, dtype=bool)  # windows whose maximum is not found yet
        xviews = _pool_views(x[lo:hi], kh, kw, kh, kw, ho, wo)
        dviews = _pool_views(d, kh, kw, kh, kw, ho, wo)
        for k, ((_, _, xv), (_, _, dv)) in enumerate(zip(xviews, dviews)):
            xp.equal(xv, ys, out=hit)
            if k == 0:
                xp.logical_not(hit, out=free)
            else:
                hit &= free
                free ^= hit
            xp.multiply(gs, hit, out=dv)

    _slabs(xp, n, slab)
    return dx


def avg_pool2d(xp, x, out=None, kernel=(2, 2), stride=(2, 2), padding=(0, 0)):
    """Mean over each window, padding counted (torch's count_include_pad=True)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, wd = x.shape
    ho, wo = out_size(h, kh, sh, ph, 1), out_size(wd, kw, sw, pw, 1)
    y = out if out is not None else xp.empty((n, c, ho, wo), x.dtype)
    views = _pool_views(_pads(xp, x, ph, pw), kh, kw, sh, sw, ho, wo)
    xp.copyto(y, next(views)[2])
    for _, _, v in views:
        y += v
    y *= 1.0 / (kh * kw)
    return y


def avg_pool2d_grad(xp, g, out=None, in_size=(0, 0), kernel=(2, 2), stride=(2, 2), padding=(0, 0)):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, ho, wo = g.shape
    h, wd = in_size
    direct = out is not None and not ph and not pw
    dx = out if direct else xp.empty((n, c, h + 2 * ph, wd + 2 * pw), g.dtype)
    dx.fill(0)
    share = g * (1.0 / (kh * kw))
    for _, _, dv in _pool_views(dx, kh, kw, sh, sw, ho, wo):
        dv += share
    if direct:
        return dx
    res = dx[:, :, ph : ph + h, pw : pw + wd]
    if out is None:
        return xp.ascontiguousarray(res)
    xp.copyto(out, res)
    return out


def _unpad(xp, dx, ph, pw, h, wd, out):
    """The gradient of the unpadded input from that of the padded one, into `out` if given."""
    res = dx[:, :, ph : ph + h, pw : pw + wd]
    if out is None:
        return xp.ascontiguousarray(res) if ph or pw else res
    xp.copyto(out, res)
    return out
