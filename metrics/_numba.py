"""Compiled kernels (numba) for the metrics; imported only when numba is installed.

Each kernel computes a per-pixel quantity once and reduces it over the whole image and over
an optional mask in the same pass, returning per-row or per-tile partial sums that the caller
adds with ``math.fsum``. The numpy/scipy modules hold the reference semantics; these kernels
must give the same numbers (the tests compare both on the golden cases and random mattes).
"""

from __future__ import annotations

import numba as nb
import numpy as np

_JIT = {"cache": True, "nogil": True}


# --------------------------------------------------------------------------- SAD / MSE


@nb.njit(**_JIT)
def diff_row_sums(p, g, mask, has_mask):
    """Per row: Σ|p−g|, Σ(p−g)² over all pixels, then the same two over ``mask``."""
    h, w = p.shape
    out = np.zeros((h, 4), np.float64)
    for y in range(h):
        a = 0.0
        s = 0.0
        am = 0.0
        sm = 0.0
        for x in range(w):
            d = np.float64(p[y, x]) - np.float64(g[y, x])
            ad = abs(d)
            sq = d * d
            a += ad
            s += sq
            if has_mask and mask[y, x]:
                am += ad
                sm += sq
        out[y, 0] = a
        out[y, 1] = s
        out[y, 2] = am
        out[y, 3] = sm
    return out


# --------------------------------------------------------------------------- Grad


@nb.njit(**_JIT)
def _window_is_constant(x, r0, r1, c0, c1):
    v = x[r0, c0]
    for y in range(r0, r1):
        for c in range(c0, c1):
            if x[y, c] != v:
                return False
    return True


@nb.njit(**_JIT)
def _tile_amplitude(x, r0, r1, c0, c1, g0, g1, scale, row, dbuf, ebuf, amp):
    """Gradient amplitude on rows r0..r1, cols c0..c1 with replicate borders, times ``scale``.

    gx = Gaussian down the rows of the column derivative, gy = derivative down the rows of the
    column Gaussian. Derivative taps use differences ``x[c-u] - x[c+u]``, so a constant
    window gives exactly 0.
    """
    h, w = x.shape
    rad = 4
    nr = r1 - r0
    nc = c1 - c0
    a0, a1, a2, a3, a4 = g0[0], g0[1], g0[2], g0[3], g0[4]
    b1, b2, b3, b4 = g1[1], g1[2], g1[3], g1[4]
    for yy in range(nr + 2 * rad):
        y = min(max(r0 - rad + yy, 0), h - 1)
        for k in range(nc + 2 * rad):
            c = min(max(c0 - rad + k, 0), w - 1)
            row[k] = x[y, c]
        for k in range(nc):
            m = k + rad
            dbuf[yy, k] = (b1 * (row[m - 1] - row[m + 1]) + b2 * (row[m - 2] - row[m + 2])
                           + b3 * (row[m - 3] - row[m + 3]) + b4 * (row[m - 4] - row[m + 4]))
            ebuf[yy, k] = (a0 * row[m] + a1 * (row[m - 1] + row[m + 1]) + a2 * (row[m - 2] + row[m + 2])
                           + a3 * (row[m - 3] + row[m + 3]) + a4 * (row[m - 4] + row[m + 4]))
    for yy in range(nr):
        m = yy + rad
        for k in range(nc):
            gx = (a0 * dbuf[m, k] + a1 * (dbuf[m - 1, k] + dbuf[m + 1, k])
                  + a2 * (dbuf[m - 2, k] + dbuf[m + 2, k]) + a3 * (dbuf[m - 3, k] + dbuf[m + 3, k])
                  + a4 * (dbuf[m - 4, k] + dbuf[m + 4, k]))
            gy = (b1 * (ebuf[m - 1, k] - ebuf[m + 1, k]) + b2 * (ebuf[m - 2, k] - ebuf[m + 2, k])
                  + b3 * (ebuf[m - 3, k] - ebuf[m + 3, k]) + b4 * (ebuf[m - 4, k] - ebuf[m + 4, k]))
            amp[yy, k] = np.sqrt(gx * gx + gy * gy) * scale


@nb.njit(**_JIT)
def grad_tile_sums(p, g, sp, sg, mask, has_mask, g0, g1, th, tw):
    """Per tile: Σ(amp_p − amp_g)² over the tile and over the tile ∩ mask.

    Tiles whose 4-pixel-padded window is constant in a matte give that matte amplitude 0
    without computing it (the computed value would be exactly 0 too).
    """
    h, w = p.shape
    rad = 4
    nty = (h + th - 1) // th
    ntx = (w + tw - 1) // tw
    out = np.zeros((nty * ntx, 2), np.float64)
    row = np.empty(tw + 2 * rad, np.float64)
    dbuf = np.empty((th + 2 * rad, tw), np.float64)
    ebuf = np.empty((th + 2 * rad, tw), np.float64)
    amp_p = np.empty((th, tw), np.float64)
    amp_g = np.empty((th, tw), np.float64)
    for ty in range(nty):
        r0 = ty * th
        r1 = min(r0 + th, h)
        wr0 = max(r0 - rad, 0)
        wr1 = min(r1 + rad, h)
        for tx in range(ntx):
            c0 = tx * tw
            c1 = min(c0 + tw, w)
            wc0 = max(c0 - rad, 0)
            wc1 = min(c1 + rad, w)
            live_p = sp != 0.0 and not _window_is_constant(p, wr0, wr1, wc0, wc1)
            live_g = sg != 0.0 and not _window_is_constant(g, wr0, wr1, wc0, wc1)
            if not live_p and not live_g:
                continue
            nr = r1 - r0
            nc = c1 - c0
            if live_p:
                _tile_amplitude(p, r0, r1, c0, c1, g0, g1, sp, row, dbuf, ebuf, amp_p)
            else:
                amp_p[:nr, :nc] = 0.0
            if live_g:
                _tile_amplitude(g, r0, r1, c0, c1, g0, g1, sg, row, dbuf, ebuf, amp_g)
            else:
                amp_g[:nr, :nc] = 0.0
            sw = 0.0
            sm = 0.0
            for yy in range(nr):
                for k in range(nc):
                    d = amp_p[yy, k] - amp_g[yy, k]
                    e = d * d
                    sw += e
                    if has_mask and mask[r0 + yy, c0 + k]:
                        sm += e
            t = ty * ntx + tx
            out[t, 0] = sw
            out[t, 1] = sm
    return out


# --------------------------------------------------------------------------- Conn


@nb.njit(**_JIT)
def min_levels_u8(p, g, lut):
    """``min(lut[p], lut[g])`` per pixel: the highest threshold index both mattes pass."""
    h, w = p.shape
    m = np.empty((h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            a = lut[p[y, x]]
            b = lut[g[y, x]]
            m[y, x] = a if a < b else b
    return m


@nb.njit(**_JIT)
def _find(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@nb.njit(**_JIT)
def chain_levels(m, icm):
    """Round-down level index j (l = t_j, j = 10 means l = 1) per pixel under the Conn rule.

    ``m`` holds, per pixel, the number of thresholds both mattes pass (0..10), so
    ``B_i = {m >= i}`` are nested. Horizontal runs of equal ``m`` are the graph nodes; a
    union-find pass in decreasing level order yields every level's largest 4-connected
    component (ties: first pixel in column-major order, or row-major for ``icm``).

    Levels where Ω_i is a component form a prefix 1..c: for ``dim`` up to the last non-empty
    B_i, for ``icm`` while the component is strictly larger than the background (which wins
    ties as label 0). The pixels still unassigned after step i are Ω_1 ∩ … ∩ Ω_i, i.e. Ω_i
    while Ω_i ⊆ Ω_{i-1} (a chain of length K ≤ c) and empty after a break. With b the
    widest-path level from a seed in Ω_K (one bucket-queue flood), ``dim`` gives
    j = min(b, K); ``icm`` gives j = b if b < K, else K if K < c, else K if the pixel is in
    the first background level K + 1 (m > K), else 10.
    """
    h, w = m.shape
    # runs of equal nonzero level, row by row
    n = 0
    for y in range(h):
        prev = 0
        for x in range(w):
            v = m[y, x]
            if v != prev and v != 0:
                n += 1
            prev = v
    row_ptr = np.empty(h + 1, np.int64)
    rc0 = np.empty(n, np.int64)
    rc1 = np.empty(n, np.int64)
    rlv = np.empty(n, np.uint8)
    ry = np.empty(n, np.int64)
    k = 0
    for y in range(h):
        row_ptr[y] = k
        prev = 0
        for x in range(w):
            v = m[y, x]
            if v != prev:
                if prev != 0:
                    rc1[k - 1] = x
                if v != 0:
                    rc0[k] = x
                    rlv[k] = v
                    ry[k] = y
                    k += 1
                prev = v
        if prev != 0:
            rc1[k - 1] = w
    row_ptr[h] = k

    # edges between touching runs, weight = min level of the two
    cap = 3 * n + 1
    ea = np.empty(cap, np.int64)
    eb = np.empty(cap, np.int64)
    ew = np.empty(cap, np.uint8)
    ne = 0
    for y in range(h):
        s = row_ptr[y]
        e = row_ptr[y + 1]
        for r in range(s, e - 1):
            if rc1[r] == rc0[r + 1]:
                ea[ne] = r
                eb[ne] = r + 1
                ew[ne] = min(rlv[r], rlv[r + 1])
                ne += 1
        if y > 0:
            i = row_ptr[y - 1]
            j = s
            while i < s and j < e:
                if rc0[i] < rc1[j] and rc0[j] < rc1[i]:
                    ea[ne] = i
                    eb[ne] = j
                    ew[ne] = min(rlv[i], rlv[j])
                    ne += 1
                if rc1[i] < rc1[j]:
                    i += 1
                elif rc1[j] < rc1[i]:
                    j += 1
                else:
                    i += 1
                    j += 1

    # bucket runs and edges by level
    rstart = np.zeros(12, np.int64)
    for r in range(n):
        rstart[rlv[r] + 1] += 1
    for i in range(1, 12):
        rstart[i] += rstart[i - 1]
    rorder = np.empty(n, np.int64)
    fill = rstart.copy()
    for r in range(n):
        rorder[fill[rlv[r]]] = r
        fill[rlv[r]] += 1
    estart = np.zeros(12, np.int64)
    for t in range(ne):
        estart[ew[t] + 1] += 1
    for i in range(1, 12):
        estart[i] += estart[i - 1]
    eorder = np.empty(ne, np.int64)
    fill = estart.copy()
    for t in range(ne):
        eorder[fill[ew[t]]] = t
        fill[ew[t]] += 1

    # union-find from level 10 down to 1, tracking the best component
    parent = np.empty(n, np.int64)
    size = np.zeros(n, np.int64)
    key = np.zeros(n, np.int64)
    rep = np.full(11, -1, np.int64)
    best_size = np.zeros(11, np.int64)
    in_b = np.zeros(11, np.int64)
    contained = np.zeros(11, np.bool_)
    active = 0
    best = -1
    bsize = 0
    bkey = 0
    for lev in range(10, 0, -1):
        for q in range(rstart[lev], rstart[lev + 1]):
            r = rorder[q]
            parent[r] = r
            size[r] = rc1[r] - rc0[r]
            active += size[r]
            key[r] = ry[r] * w + rc0[r] if icm else rc0[r] * h + ry[r]
            if size[r] > bsize or (size[r] == bsize and key[r] < bkey):
                best = r
                bsize = size[r]
                bkey = key[r]
        for q in range(estart[lev], estart[lev + 1]):
            t = eorder[q]
            a = _find(parent, ea[t])
            b = _find(parent, eb[t])
            if a == b:
                continue
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
            if key[b] < key[a]:
                key[a] = key[b]
            if size[a] > bsize or (size[a] == bsize and key[a] < bkey):
                best = a
                bsize = size[a]
                bkey = key[a]
        in_b[lev] = active
        if best >= 0:
            if lev < 10 and rep[lev + 1] >= 0:
                contained[lev + 1] = _find(parent, rep[lev + 1]) == best
            rep[lev] = best
            best_size[lev] = bsize

    ncomp = 0  # c: levels 1..c take a component as Ω
    for i in range(1, 11):
        if rep[i] < 0 or (icm and best_size[i] <= h * w - in_b[i]):
            break
        ncomp = i
    kmax = 0
    for i in range(1, ncomp + 1):
        if i >= 2 and not contained[i]:
            break
        kmax = i

    jm = np.full((h, w), 10 if (icm and kmax == 0) else 0, np.uint8)
    if n == 0:
        return jm
    # adjacency (CSR) and widest-path flood from a seed in Ω_K
    ptr = np.zeros(n + 1, np.int64)
    for t in range(ne):
        ptr[ea[t] + 1] += 1
        ptr[eb[t] + 1] += 1
    for r in range(n):
        ptr[r + 1] += ptr[r]
    adj = np.empty(2 * ne, np.int64)
    fill = ptr[:n].copy()
    for t in range(ne):
        adj[fill[ea[t]]] = eb[t]
        fill[ea[t]] += 1
        adj[fill[eb[t]]] = ea[t]
        fill[eb[t]] += 1
    reach = np.zeros(n, np.uint8)
    nxt = np.full(n, -1, np.int64)
    head = np.full(11, -1, np.int64)
    if kmax > 0:
        seed = rep[kmax]
        reach[seed] = rlv[seed]
        head[rlv[seed]] = seed
    for lev in range(10, 0, -1):
        while head[lev] != -1:
            r = head[lev]
            head[lev] = nxt[r]
            for q in range(ptr[r], ptr[r + 1]):
                o = adj[q]
                if reach[o] == 0:
                    v = min(lev, rlv[o])
                    reach[o] = v
                    nxt[o] = head[v]
                    head[v] = o
    for r in range(n):
        b = np.int64(reach[r])
        if not icm:
            j = min(kmax, b)
        elif b < kmax:
            j = b
        elif kmax < ncomp or (kmax < 10 and rlv[r] > kmax):
            j = kmax
        else:
            j = 10
        y = ry[r]
        for x in range(rc0[r], rc1[r]):
            jm[y, x] = j
    return jm


@nb.njit(**_JIT)
def conn_row_sums_table(p, g, jm, table, mask, has_mask):
    """Per row: Σ|T[j,p] − T[j,g]| over all pixels and over ``mask`` (uint8 mattes).

    ``table`` is float64; with integer entries (dim numerators) the row sums stay exact.
    """
    h, w = p.shape
    out = np.zeros((h, 2), np.float64)
    for y in range(h):
        sw = 0.0
        sm = 0.0
        for x in range(w):
            j = jm[y, x]
            c = abs(table[j, p[y, x]] - table[j, g[y, x]])
            sw += c
            if has_mask and mask[y, x]:
                sm += c
        out[y, 0] = sw
        out[y, 1] = sm
    return out


@nb.njit(**_JIT)
def _snap(x, tol):
    r = np.rint(x)
    return r if abs(x - r) <= tol else x


@nb.njit(**_JIT)
def _level(x):
    """Number of i in 1..10 with 10·x >= 255·i (x on the 0..255 scale)."""
    ten_x = 10.0 * x
    lev = 0
    for i in range(1, 11):
        if ten_x >= 255.0 * i:
            lev += 1
    return lev


@nb.njit(**_JIT)
def min_levels_float(xp, xg, tol):
    """``min(level(snap(xp)), level(snap(xg)))`` per pixel for 0..255-scale float mattes."""
    h, w = xp.shape
    m = np.empty((h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            m[y, x] = min(_level(_snap(xp[y, x], tol)), _level(_snap(xg[y, x], tol)))
    return m


@nb.njit(**_JIT)
def conn_row_sums_float(xp, xg, jm, mask, has_mask, tol):
    """Per row: Σ|φ_p − φ_g| for 0..255-scale float mattes (dim rule, snapped values).

    With n = 10·x − 255·j = 2550·d, the θ test d ≥ 0.15 reads n ≥ 382.5.
    """
    h, w = xp.shape
    out = np.zeros((h, 2), np.float64)
    for y in range(h):
        sw = 0.0
        sm = 0.0
        for x in range(w):
            j = np.float64(jm[y, x])
            n_p = 10.0 * _snap(xp[y, x], tol) - 255.0 * j
            n_g = 10.0 * _snap(xg[y, x], tol) - 255.0 * j
            dp = n_p / 2550.0 if n_p >= 382.5 else 0.0
            dg = n_g / 2550.0 if n_g >= 382.5 else 0.0
            c = abs(dp - dg)
            sw += c
            if has_mask and mask[y, x]:
                sm += c
        out[y, 0] = sw
        out[y, 1] = sm
    return out


@nb.njit(**_JIT)
def _icm_alpha(x):
    return np.float64(np.float32(x) / np.float32(255.0))


@nb.njit(**_JIT)
def min_levels_icm_float(xp, xg, thresholds):
    """Per pixel, the number of ``thresholds[1:]`` both float32-scaled mattes reach (icm)."""
    h, w = xp.shape
    m = np.empty((h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            ap = _icm_alpha(xp[y, x])
            ag = _icm_alpha(xg[y, x])
            lev = 0
            for i in range(1, 11):
                if ap >= thresholds[i] and ag >= thresholds[i]:
                    lev += 1
            m[y, x] = lev
    return m


@nb.njit(**_JIT)
def conn_row_sums_icm_float(xp, xg, jm, lvals, theta, mask, has_mask):
    """Per row: Σ|φ_p − φ_g| with the official code's float32 alpha and float64 d = α − l."""
    h, w = xp.shape
    out = np.zeros((h, 2), np.float64)
    for y in range(h):
        sw = 0.0
        sm = 0.0
        for x in range(w):
            lv = lvals[jm[y, x]]
            dp = _icm_alpha(xp[y, x]) - lv
            dg = _icm_alpha(xg[y, x]) - lv
            fp = 1.0 - dp if dp >= theta else 1.0
            fg = 1.0 - dg if dg >= theta else 1.0
            c = abs(fp - fg)
            sw += c
            if has_mask and mask[y, x]:
                sm += c
        out[y, 0] = sw
        out[y, 1] = sm
    return out
