"""Compiled kernels (numba) for the metrics; imported only when numba is installed.

Each kernel computes a per-pixel quantity once and reduces it over the whole image and over
an optional mask in the same pass, returning per-row or per-tile partial sums that the caller
adds with ``math.fsum``. The numpy/scipy modules hold the reference semantics; these kernels
must give the same numbers (the tests compare both on the golden cases and random mattes).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import numba
import numba as nb
import numpy as np


def _probe() -> int:
    """A function of this file: numba chooses a cache folder per source file."""
    return 0


def private_cache_dir() -> Path | None:
    """``$TMPDIR/icmbench-numba-<uid>``, created private (0700) and checked to be ours, or None.

    A symlink, a folder of another user or one that others may write is refused: numba loads
    what it finds there. (Windows has no uid and per-user temp folders: no ownership check.)
    """
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    folder = Path(tempfile.gettempdir()) / f"icmbench-numba-{uid if uid is not None else 'user'}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.lstat()
        if not stat.S_ISDIR(st.st_mode):
            return None
        if uid is not None and (st.st_uid != uid or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
            return None
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return None
    return folder


def _can_cache() -> tuple[bool, Path | None]:
    """Whether the kernels can be cached on disk, and the folder when numba cannot choose one.

    numba tries ``$NUMBA_CACHE_DIR``, the package's ``__pycache__`` and the user cache
    (``~/.cache/numba``); when none is writable (a read-only install with a read-only home),
    the kernels go to :func:`private_cache_dir`, and without that they compile in every process.
    """
    try:
        nb.njit(cache=True)(_probe)
        return True, None
    except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
        pass
    folder = private_cache_dir()
    if folder is None:
        return False, None
    numba.config.CACHE_DIR = str(folder)  # restored at the end of this module
    try:
        nb.njit(cache=True)(_probe)
        return True, folder
    except RuntimeError:
        return False, None


_CACHE_DIR_BEFORE = numba.config.CACHE_DIR
#: CACHED is False when no cache folder is writable: every process then compiles the kernels
#: again. PRIVATE_CACHE is the private folder used when numba found none of its own.
CACHED, PRIVATE_CACHE = _can_cache()
_JIT = {"cache": CACHED, "nogil": True}


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


@nb.njit(**_JIT)
def diff_row_sums_u8(p, g, mask, has_mask):
    """:func:`diff_row_sums` for uint8 pairs in int64: exact, and free to vectorise."""
    h, w = p.shape
    out = np.zeros((h, 4), np.int64)
    for y in range(h):
        a = 0
        s = 0
        for x in range(w):
            d = np.int64(p[y, x]) - np.int64(g[y, x])
            a += abs(d)
            s += d * d
        out[y, 0] = a
        out[y, 1] = s
        if has_mask:
            am = 0
            sm = 0
            for x in range(w):
                d = np.int64(p[y, x]) - np.int64(g[y, x])
                k = np.int64(mask[y, x])
                am += abs(d) * k
                sm += d * d * k
            out[y, 2] = am
            out[y, 3] = sm
    return out


# --------------------------------------------------------------------------- Grad


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
    inside = c0 >= rad and c1 + rad <= w
    for yy in range(nr + 2 * rad):
        y = min(max(r0 - rad + yy, 0), h - 1)
        if inside:  # no column clamping: read the matte directly (vectorised, same arithmetic)
            xr = x[y, c0 - rad:c1 + rad]
            for k in range(nc):
                m = k + rad
                v0 = np.float64(xr[m])
                vm1, vp1 = np.float64(xr[m - 1]), np.float64(xr[m + 1])
                vm2, vp2 = np.float64(xr[m - 2]), np.float64(xr[m + 2])
                vm3, vp3 = np.float64(xr[m - 3]), np.float64(xr[m + 3])
                vm4, vp4 = np.float64(xr[m - 4]), np.float64(xr[m + 4])
                dbuf[yy, k] = b1 * (vm1 - vp1) + b2 * (vm2 - vp2) + b3 * (vm3 - vp3) + b4 * (vm4 - vp4)
                ebuf[yy, k] = (a0 * v0 + a1 * (vm1 + vp1) + a2 * (vm2 + vp2) + a3 * (vm3 + vp3)
                               + a4 * (vm4 + vp4))
            continue
        for k in range(nc + 2 * rad):
            row[k] = x[y, min(max(c0 - rad + k, 0), w - 1)]
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
def grad_tile_sums(p, g, sp, sg, live_p, live_g, mask, has_mask, g0, g1, th, tw):
    """Per tile: Σ(amp_p − amp_g)² over the tile and over the tile ∩ mask.

    A matte's amplitude is computed only on its ``live`` tiles; elsewhere its 4-pixel-padded
    window is constant, where the computed value would be exactly 0 too.
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
    col_w = np.empty(tw, np.float64)
    col_m = np.empty(tw, np.float64)
    for ty in range(nty):
        r0 = ty * th
        r1 = min(r0 + th, h)
        for tx in range(ntx):
            c0 = tx * tw
            c1 = min(c0 + tw, w)
            do_p = live_p[ty, tx]
            do_g = live_g[ty, tx]
            if not do_p and not do_g:
                continue
            nr = r1 - r0
            nc = c1 - c0
            if do_p:
                _tile_amplitude(p, r0, r1, c0, c1, g0, g1, sp, row, dbuf, ebuf, amp_p)
            else:
                amp_p[:nr, :nc] = 0.0
            if do_g:
                _tile_amplitude(g, r0, r1, c0, c1, g0, g1, sg, row, dbuf, ebuf, amp_g)
            else:
                amp_g[:nr, :nc] = 0.0
            col_w[:nc] = 0.0
            col_m[:nc] = 0.0
            for yy in range(nr):  # one accumulator per column: independent, so vectorised
                for k in range(nc):
                    d = amp_p[yy, k] - amp_g[yy, k]
                    e = d * d
                    col_w[k] += e
                    if has_mask:
                        col_m[k] += e * np.float64(mask[r0 + yy, c0 + k])
            t = ty * ntx + tx
            for k in range(nc):
                out[t, 0] += col_w[k]
                out[t, 1] += col_m[k]
    return out


# --------------------------------------------------------------------------- Conn


#: Runs held at once by :func:`level_codes`: levels are labelled in batches of at most this many
#: runs (a single level may exceed it), so memory stays bounded on adversarial input.
RUN_BUDGET = 1 << 23


@nb.njit(**_JIT)
def _row_runs(p, g, lut, m, y, n, c0, c1, lv, cnt, keep, pos):
    """Row y of ``m = min(lut[p], lut[g])``, written, and its runs of every level: counted in
    ``cnt``, and stored from index n when ``keep``; returns the new n.

    The positions where ``m`` changes are gathered first, without a branch per pixel (noise
    makes that branch unpredictable); the changes themselves then alternate up and down.
    """
    w = m.shape[1]
    k = 0
    prev = 0
    for x in range(w):
        a = lut[p[y, x]]
        b = lut[g[y, x]]
        v = a if a < b else b
        m[y, x] = v
        pos[k] = x
        k += v != prev
        prev = v
    open_run = np.zeros(11, np.int64)
    prev = 0
    for i in range(k):
        x = pos[i]
        v = m[y, x]
        if v > prev:
            for lev in range(prev + 1, v + 1):
                cnt[lev, y + 1] += 1
                if keep:
                    c0[n] = x
                    lv[n] = lev
                    open_run[lev] = n
                    n += 1
        elif keep:
            for lev in range(v + 1, prev + 1):
                c1[open_run[lev]] = x
        prev = v
    if keep:
        for lev in range(1, prev + 1):
            c1[open_run[lev]] = w
    return n


@nb.njit(**_JIT)
def _scan_runs(p, g, lut, m, c0, c1, lv):
    """One scan writing ``m = min(lut[p], lut[g])``: every level's runs in scan order, and
    ``cnt[i, y + 1]``, the number of runs of ``B_i = {m >= i}`` in row y. Returns
    ``(n, cnt)``; the runs are stored while the next row's worst case fits in ``c0`` (``n = -1``
    once it does not: only the counts are complete then).
    """
    h, w = m.shape
    cnt = np.zeros((11, h + 1), np.int64)
    row_max = 10 * ((w + 1) // 2)  # a row holds at most this many runs
    pos = np.empty(w + 1, np.int64)
    n = 0
    for y in range(h):
        keep = n >= 0 and n + row_max <= c0.shape[0]
        n = _row_runs(p, g, lut, m, y, n if keep else 0, c0, c1, lv, cnt, keep, pos)
        if not keep:
            n = -1
    return n, cnt


@nb.njit(**_JIT)
def _offsets(cnt, lo, hi, ptr):
    """``ptr[i, y]``: index of row y's first run of level i, levels lo..hi stored one after
    another; returns the number of runs."""
    h = cnt.shape[1] - 1
    off = 0
    for lev in range(lo, hi + 1):
        ptr[lev, 0] = off
        for y in range(h):
            ptr[lev, y + 1] = ptr[lev, y] + cnt[lev, y + 1]
        off = ptr[lev, h]
    return off


@nb.njit(**_JIT)
def _by_level(n, c0, c1, lv, ptr, d0, d1):
    """Scan-order runs regrouped level by level into ``d0``/``d1`` (a stable counting sort:
    row-major within each level)."""
    fill = ptr[:, 0].copy()
    for k in range(n):
        lev = lv[k]
        i = fill[lev]
        d0[i] = c0[k]
        d1[i] = c1[k]
        fill[lev] = i + 1


@nb.njit(**_JIT)
def _fill_runs(m, lo, hi, ptr, c0, c1):
    """Columns ``[c0, c1)`` of the runs of levels lo..hi, row-major within each level."""
    h, w = m.shape
    fill = np.zeros(11, np.int64)
    for lev in range(lo, hi + 1):
        fill[lev] = ptr[lev, 0]
    for y in range(h):
        prev = 0
        for x in range(w):
            v = m[y, x] & 15
            if v > prev:
                for lev in range(max(prev + 1, lo), min(v, hi) + 1):
                    c0[fill[lev]] = x
            elif v < prev:
                for lev in range(max(v + 1, lo), min(prev, hi) + 1):
                    c1[fill[lev]] = x
                    fill[lev] += 1
            prev = v
        for lev in range(lo, min(prev, hi) + 1):
            c1[fill[lev]] = w
            fill[lev] += 1


@nb.njit(**_JIT)
def _root(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@nb.njit(**_JIT)
def _union_rows(ptr, c0, c1, parent):
    """Union-find over one level's runs; 4-connected runs of adjacent rows touch when their
    column ranges overlap. Roots are the smallest (row-major first) run index, so
    ``parent[k] <= k`` throughout."""
    h = ptr.shape[0] - 1
    base = ptr[0]
    for y in range(h):
        s = ptr[y]
        e = ptr[y + 1]
        for r in range(s, e):
            parent[r - base] = r - base
        if y == 0:
            continue
        i = ptr[y - 1]
        j = s
        while i < s and j < e:
            a0, a1, b0, b1 = c0[i], c1[i], c0[j], c1[j]
            if a0 < b1 and b0 < a1:
                a = _root(parent, i - base)
                b = j - base
                if parent[b] == b:  # run j is still a root, and a <= i - base < b
                    parent[b] = a
                else:
                    b = _root(parent, b)
                    if a < b:
                        parent[b] = a
                    elif b < a:
                        parent[a] = b
            i += a1 <= b1  # advance the run that ends first (both when they end together)
            j += b1 <= a1


@nb.njit(**_JIT)
def _largest(ptr, c0, c1, parent, size, icm):
    """``(root, size, area)`` of the level's largest component; ``area = |B_i|``.

    Ties: the component whose first pixel comes first in column-major order (``dim``, MATLAB's
    numbering) or row-major order (``icm``, scipy's numbering: the smallest root).
    """
    h = ptr.shape[0] - 1
    base = ptr[0]
    n = ptr[h] - base
    area = 0
    for k in range(n):  # flatten: parent[k] < k is already a root
        p = parent[k]
        ln = c1[k + base] - c0[k + base]
        area += ln
        if p == k:
            size[k] = ln
        else:
            p = parent[p]
            parent[k] = p
            size[p] += ln
    best = -1
    bsize = 0
    ties = 0
    for k in range(n):
        if parent[k] == k:
            if size[k] > bsize:
                best = k
                bsize = size[k]
                ties = 1
            elif size[k] == bsize:
                ties += 1
    if ties > 1 and not icm:  # the tied component holding the column-major first run wins
        bkey = np.int64(-1)
        for y in range(h):
            for r in range(ptr[y], ptr[y + 1]):
                root = parent[r - base]
                if size[root] == bsize:
                    key = np.int64(c0[r]) * h + y
                    if bkey < 0 or key < bkey:
                        bkey = key
                        best = root
    return best, bsize, area


@nb.njit(**_JIT)
def _drop_outside(m, lev, ptr, c0, c1, parent, best):
    """Pixels of ``B_lev`` outside its component ``best`` drop at ``lev`` (the first drop is kept).

    A pixel's code is ``((10 − drop) << 4) | m``: 0 in the high bits means "not dropped", so
    the codes need no initialisation, and dropping at ``lev`` (``drop = lev − 1``) raises them.
    """
    h = ptr.shape[0] - 1
    base = ptr[0]
    code = (11 - lev) << 4
    for y in range(h):
        for r in range(ptr[y], ptr[y + 1]):
            if parent[r - base] != best:
                for x in range(c0[r], c1[r]):
                    c = m[y, x]
                    if c < code:
                        m[y, x] = (c & 15) | code


@nb.njit(**_JIT)
def _decode_lut(component_wins):
    """code → j: ``min(drop, j0[m])`` where ``j0[v]`` is the first level that drops every
    pixel of level v as a whole: a component level above v, or (``icm``) a background level
    at most v."""
    j0 = np.full(16, 10, np.int64)
    for v in range(11):
        for i in range(1, 11):
            if (component_wins[i] and v < i) or (not component_wins[i] and v >= i):
                j0[v] = i - 1
                break
    lut = np.empty(256, np.uint8)
    for c in range(256):
        lut[c] = min(max(10 - (c >> 4), 0), j0[c & 15])
    return lut


@nb.njit(**_JIT)
def _label_levels(m, lo, hi, ptr, c0, c1, total, parent, size, wins, icm):
    """Label levels lo..hi (runs in ``c0``/``c1`` at ``ptr``) and drop the pixels outside Ω_i."""
    h, w = m.shape
    for lev in range(lo, hi + 1):
        if total[lev] == 0:
            wins[lev] = not icm  # icm: an empty B_i leaves Ω_i = the whole image
            continue
        _union_rows(ptr[lev], c0, c1, parent)
        best, bsize, area = _largest(ptr[lev], c0, c1, parent, size, icm)
        if icm and h * w - area >= bsize:
            wins[lev] = False  # the background is Ω_i: all of B_i drops, as a whole
            continue
        _drop_outside(m, lev, ptr[lev], c0, c1, parent, best)


def level_codes(p, g, lut, m, icm, budget, index=None):
    """Conn's round-down level, per pixel: fills ``m`` with codes and returns ``decode``,
    uint8[256], with ``j = decode[code]`` the level index (l = t_j; j = 10 means l = 1).

    ``min(lut[p], lut[g])`` is, per pixel, the number of thresholds both mattes pass (0..10):
    ``lut`` maps uint8 values to levels (or is the identity, with ``p = g = m`` holding the
    levels already). The level sets
    ``B_i = {m >= i}`` are nested. One scan of ``m`` yields every level's runs (maximal
    horizontal intervals of B_i); a union-find over each level's runs gives its largest
    4-connected component Ω_i. A pixel drops at the first i with the pixel outside Ω_i and
    takes j = i − 1. ``dim``: Ω_i is that component (empty when B_i is), so the pixels below
    level i drop there too, which leaves j ≤ m. ``icm``: the background (label 0) competes
    and wins ties; when it wins, Ω_i is the complement of B_i.

    At most ``budget`` runs are held at once: beyond that, levels are re-scanned in batches
    (a single level may exceed it), so memory stays bounded on adversarial input: 9 bytes per
    held run, 8 more per run while they are regrouped by level, and 8 per run of the largest
    level for the union-find (16 above 2³¹ pixels). The large
    buffers come from numpy (huge pages where the kernel offers them: page faults on fresh
    memory would otherwise cost as much as the labelling); the kernels only fill them.
    """
    h, w = m.shape
    cap = max(1, min(budget, 10 * h * ((w + 1) // 2)))
    c0, c1, lv = np.empty(cap, np.int32), np.empty(cap, np.int32), np.empty(cap, np.uint8)
    n, cnt = _scan_runs(p, g, lut, m, c0, c1, lv)
    total = cnt[:, 1:].sum(axis=1)
    if index is None:  # run indices and component sizes
        index = np.int32 if h * w < 2**31 else np.int64
    parent = np.empty(max(1, int(total.max())), index)
    size = np.empty_like(parent)
    wins = np.ones(11, np.bool_)  # dim: every level is a component level
    ptr = np.zeros((11, h + 1), np.int64)
    if n >= 0:
        runs = _offsets(cnt, 1, 10, ptr)
        d0, d1 = np.empty(runs, np.int32), np.empty(runs, np.int32)
        _by_level(n, c0, c1, lv, ptr, d0, d1)
        del c0, c1, lv
        _label_levels(m, 1, 10, ptr, d0, d1, total, parent, size, wins, icm)
        return _decode_lut(wins)
    del c0, c1, lv
    lo = 1
    while lo <= 10:
        hi = lo
        while hi < 10 and total[lo:hi + 2].sum() <= budget:
            hi += 1
        runs = _offsets(cnt, lo, hi, ptr)
        d0, d1 = np.empty(runs, np.int32), np.empty(runs, np.int32)
        _fill_runs(m, lo, hi, ptr, d0, d1)
        _label_levels(m, lo, hi, ptr, d0, d1, total, parent, size, wins, icm)
        lo = hi + 1
    return _decode_lut(wins)


@nb.njit(**_JIT)
def conn_row_sums_int(p, g, codes, lut, err, mask, has_mask):
    """Per row: Σ err[j, p, g] over all pixels and over ``mask``, exact in int64.

    ``err`` is the flattened integer table of |φ_p − φ_g| numerators (uint8 mattes, dim rule),
    so each pixel costs one lookup; pixels cluster near p = g, so the lookups stay in cache.
    """
    h, w = p.shape
    out = np.zeros((h, 2), np.int64)
    for y in range(h):
        sw = 0
        sm = 0
        for x in range(w):
            i = (np.int64(lut[codes[y, x]]) << 16) | (np.int64(p[y, x]) << 8) | np.int64(g[y, x])
            c = np.int64(err[i])
            sw += c
            if has_mask:
                sm += c * np.int64(mask[y, x])
        out[y, 0] = sw
        out[y, 1] = sm
    return out


@nb.njit(**_JIT)
def conn_row_sums_table(p, g, codes, lut, table, mask, has_mask):
    """Per row: Σ|T[j,p] − T[j,g]| over all pixels and over ``mask`` (uint8 mattes, float table)."""
    h, w = p.shape
    out = np.zeros((h, 2), np.float64)
    for y in range(h):
        sw = 0.0
        sm = 0.0
        for x in range(w):
            j = lut[codes[y, x]]
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
def conn_row_sums_float(xp, xg, codes, lut, mask, has_mask, tol):
    """Per row: Σ|φ_p − φ_g| for 0..255-scale float mattes (dim rule, snapped values).

    With n = 10·x − 255·j = 2550·d, the θ test d ≥ 0.15 reads n ≥ 382.5.
    """
    h, w = xp.shape
    out = np.zeros((h, 2), np.float64)
    for y in range(h):
        sw = 0.0
        sm = 0.0
        for x in range(w):
            j = np.float64(lut[codes[y, x]])
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
def conn_row_sums_icm_float(xp, xg, codes, lut, lvals, theta, mask, has_mask):
    """Per row: Σ|φ_p − φ_g| with the official code's float32 alpha and float64 d = α − l."""
    h, w = xp.shape
    out = np.zeros((h, 2), np.float64)
    for y in range(h):
        sw = 0.0
        sm = 0.0
        for x in range(w):
            lv = lvals[lut[codes[y, x]]]
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


# Each kernel chose its cache folder when decorated: other libraries' kernels keep numba's own rule.
numba.config.CACHE_DIR = _CACHE_DIR_BEFORE
