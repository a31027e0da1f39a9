"""Property tests: fast path == straightforward path, and both == a brute-force oracle.

The oracle below is written from the definitions in ``shared/docs/metrics.md`` only: a
literal 9×9 convolution on an edge-padded, min-max normalised matte, and the Conn loop with
a breadth-first labeller that numbers components in column-major order and exact rational
arithmetic. It is slow and only meant for tiny mattes.
"""

from __future__ import annotations

import math
from collections import deque
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from metrics import METRIC_NAMES, evaluate, numba_available

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba not installed")

BOUNDARY = [0, 1, 25, 26, 38, 39, 51, 52, 76, 77, 102, 103, 127, 128, 153, 154, 178, 179, 204, 205, 229, 230,
            254, 255]


@st.composite
def matte_pairs(draw, max_side: int = 9):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    values = st.sampled_from(BOUNDARY) if draw(st.booleans()) else st.integers(0, 255)
    p = draw(arrays(np.uint8, (h, w), elements=values))
    g = draw(arrays(np.uint8, (h, w), elements=values))
    t = draw(arrays(np.uint8, (h, w), elements=st.sampled_from([0, 128, 255])))
    return p, g, t


# --------------------------------------------------------------------------- oracle


def _oracle_kernel() -> np.ndarray:
    sigma, eps = 1.4, 0.01
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * eps)))
    size = 2 * half + 1
    hx = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            u, v = i - half, j - half
            gu = math.exp(-u * u / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
            gv = math.exp(-v * v / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
            hx[i, j] = gu * (-v * gv / sigma**2)
    return hx / math.sqrt((hx**2).sum())


def _oracle_amp(a: np.ndarray) -> np.ndarray:
    x = a.astype(np.float64)
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo) if hi > lo else np.clip(x, 0, 1)
    hx = _oracle_kernel()
    r = hx.shape[0] // 2
    pad = np.pad(x, r, mode="edge")
    h, w = x.shape
    gx = np.zeros_like(x)
    gy = np.zeros_like(x)
    for i in range(2 * r + 1):
        for j in range(2 * r + 1):  # true convolution: image index y - (i - r)
            win = pad[2 * r - i:2 * r - i + h, 2 * r - j:2 * r - j + w]
            gx += hx[i, j] * win
            gy += hx[j, i] * win
    return np.sqrt(gx**2 + gy**2)


def _components_colmajor(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    h, w = mask.shape
    seen = np.zeros_like(mask)
    comps = []
    for x in range(w):
        for y in range(h):
            if mask[y, x] and not seen[y, x]:
                comp, todo = [], deque([(y, x)])
                seen[y, x] = True
                while todo:
                    cy, cx = todo.popleft()
                    comp.append((cy, cx))
                    for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            todo.append((ny, nx))
                comps.append(comp)
    return comps


def _oracle_conn_map(p: np.ndarray, g: np.ndarray) -> list[list[Fraction]]:
    h, w = p.shape
    level: list[list[Fraction | None]] = [[None] * w for _ in range(h)]
    for i in range(1, 11):
        both = (10 * p.astype(int) >= 255 * i) & (10 * g.astype(int) >= 255 * i)
        comps = _components_colmajor(both)
        omega = set()
        if comps:
            best = max(len(c) for c in comps)
            omega = set(next(c for c in comps if len(c) == best))  # first maximum, column-major numbering
        for y in range(h):
            for x in range(w):
                if level[y][x] is None and (y, x) not in omega:
                    level[y][x] = Fraction(i - 1, 10)
    out = []
    for y in range(h):
        row = []
        for x in range(w):
            lv = level[y][x] if level[y][x] is not None else Fraction(1)
            phis = []
            for k in (int(p[y, x]), int(g[y, x])):
                d = Fraction(k, 255) - lv
                phis.append(1 - d if d >= Fraction(15, 100) else Fraction(1))
            row.append(abs(phis[0] - phis[1]))
        out.append(row)
    return out


def oracle(p: np.ndarray, g: np.ndarray, t: np.ndarray) -> dict[str, dict[str, float]]:
    e = (p.astype(np.float64) - g.astype(np.float64)) / 255
    gerr = (_oracle_amp(p) - _oracle_amp(g)) ** 2
    cmap = _oracle_conn_map(p, g)
    res = {}
    for region, mask in (("whole", np.ones(p.shape, bool)), ("unknown", t == 128)):
        n = int(mask.sum())
        csum = sum((cmap[y][x] for y, x in zip(*np.nonzero(mask), strict=True)), Fraction(0))
        res[region] = {
            "SAD": math.fsum(np.abs(e[mask])) / 1000,
            "MSE": math.fsum(e[mask] ** 2) / n if n else math.nan,
            "Grad": math.fsum(gerr[mask]) / 1000,
            "Conn": float(csum) / 1000,
        }
    return res


def _close(a: dict, b: dict, rel: float, abs_: float) -> list[str]:
    bad = []
    for region in b:
        for k in METRIC_NAMES:
            x, y = a[region][k], b[region][k]
            if math.isnan(y) and math.isnan(x):
                continue
            if not abs(x - y) <= rel * abs(y) + abs_:
                bad.append(f"{region} {k}: {x!r} vs {y!r}")
    return bad


# --------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(matte_pairs(max_side=7))
def test_numpy_path_matches_bruteforce_oracle(pair):
    p, g, t = pair
    bad = _close(evaluate(p, g, t, backend="numpy"), oracle(p, g, t), 1e-9, 1e-15)
    assert not bad, bad


@needs_numba
@settings(max_examples=60, deadline=None)
@given(matte_pairs(max_side=7))
def test_numba_path_matches_bruteforce_oracle(pair):
    p, g, t = pair
    bad = _close(evaluate(p, g, t, backend="numba"), oracle(p, g, t), 1e-9, 1e-15)
    assert not bad, bad


@needs_numba
@settings(max_examples=200, deadline=None)
@given(matte_pairs(max_side=14), st.sampled_from(["dim", "icm"]))
def test_fast_path_equals_straightforward_path_uint8(pair, protocol):
    p, g, t = pair
    fast = evaluate(p, g, t, protocol=protocol, backend="numba")
    slow = evaluate(p, g, t, protocol=protocol, backend="numpy")
    exact = ("SAD", "MSE", "Conn") if protocol == "dim" else ("SAD", "MSE")
    for region in slow:  # integer sums: SAD, MSE and dim Conn are exactly equal
        for k in exact:
            x, y = fast[region][k], slow[region][k]
            assert x == y or (math.isnan(x) and math.isnan(y)), (region, k, x, y)
    assert not _close(fast, slow, 1e-10, 1e-15)


@needs_numba
@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 12).flatmap(lambda h: st.integers(1, 12).flatmap(lambda w: st.tuples(
        arrays(np.float64, (h, w), elements=st.floats(0, 1)),
        arrays(np.float64, (h, w), elements=st.floats(0, 1)),
        arrays(np.uint8, (h, w), elements=st.sampled_from([0, 128, 255])),
    ))),
    st.sampled_from(["dim", "icm"]),
)
def test_fast_path_equals_straightforward_path_float(arrs, protocol):
    p, g, t = arrs
    fast = evaluate(p, g, t, protocol=protocol, backend="numba")
    slow = evaluate(p, g, t, protocol=protocol, backend="numpy")
    assert not _close(fast, slow, 1e-10, 1e-15)


@settings(max_examples=80, deadline=None)
@given(matte_pairs(max_side=10))
def test_sad_mse_symmetric_and_zero_on_identity(pair):
    p, g, t = pair
    a = evaluate(p, g, t)
    b = evaluate(g, p, t)
    for region in a:
        assert a[region]["SAD"] == b[region]["SAD"]
        assert a[region]["MSE"] == b[region]["MSE"] or math.isnan(a[region]["MSE"])
        assert a[region]["Grad"] == pytest.approx(b[region]["Grad"], rel=1e-12, abs=1e-18)
    same = evaluate(p, p, t)
    assert all(v == 0 for v in same["whole"].values())


# --------------------------------------------------------------------------- Conn level map


def _oracle_levels_dim(m: np.ndarray) -> np.ndarray:
    """Round-down index per pixel from the definition, with the breadth-first labeller."""
    j = np.full(m.shape, -1)
    for i in range(1, 11):
        comps = _components_colmajor(m >= i)
        omega = set()
        if comps:
            best = max(len(c) for c in comps)
            omega = set(next(c for c in comps if len(c) == best))
        for y, x in zip(*np.nonzero(j == -1), strict=True):
            if (y, x) not in omega:
                j[y, x] = i - 1
    j[j == -1] = 10
    return j


@st.composite
def level_maps(draw, max_side: int = 12):
    """Per-pixel level counts 0..10: uniform, a few values, percolating 0/10 or speckled 9/10."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    kind = draw(st.sampled_from(["uniform", "few", "percolation", "speckle"]))
    if kind == "uniform":
        return draw(arrays(np.uint8, (h, w), elements=st.integers(0, 10)))
    if kind == "few":
        values = draw(st.lists(st.integers(0, 10), min_size=1, max_size=3, unique=True))
        return draw(arrays(np.uint8, (h, w), elements=st.sampled_from(values)))
    lo = 0 if kind == "percolation" else 9
    return draw(arrays(np.uint8, (h, w), elements=st.sampled_from([lo, 10])))


def _level_codes(m: np.ndarray, icm: bool, budget: int, index: type | None = None) -> np.ndarray:
    from metrics import _numba
    from metrics.connectivity import IDENTITY_LUT

    codes = np.empty_like(m)
    decode = _numba.level_codes(m, m, IDENTITY_LUT, codes, icm, budget, index)
    return decode[codes]


#: run budgets: one level per batch and below (re-scans), a few levels per batch, all at once
BUDGETS = [1, 7, 40, 1 << 23]


@needs_numba
@settings(max_examples=300, deadline=None)
@given(level_maps(), st.sampled_from(BUDGETS))
def test_level_codes_match_the_definition_dim(m, budget):
    got = _level_codes(m, False, budget)
    assert np.array_equal(got, _oracle_levels_dim(m)), (m, got)


@needs_numba
@settings(max_examples=300, deadline=None)
@given(level_maps(), st.sampled_from(BUDGETS))
def test_level_codes_match_the_official_labelling_icm(m, budget):
    from metrics.connectivity import icm_levels

    got = _level_codes(m, True, budget)
    assert np.array_equal(got, icm_levels(m)), (m, got)


@needs_numba
@pytest.mark.parametrize("kind", ["percolation", "speckle", "noisy-ramp"])
@pytest.mark.parametrize("icm", [False, True])
def test_level_codes_on_large_fragmented_maps(kind, icm):
    """Near the percolation threshold every level breaks into many components, the case that
    made the old run chain slow; 240×320 maps against scipy's labelling, all budgets."""
    from metrics.connectivity import icm_levels, reference_levels

    rng = np.random.default_rng(17)
    h, w = 240, 320
    if kind == "percolation":
        m = np.where(rng.random((h, w)) < 0.593, 10, 0)
    elif kind == "speckle":
        m = np.where(rng.random((h, w)) < 0.6, 10, 9)
    else:  # a ramp through every level with ±1 noise at each boundary
        ramp = np.linspace(0, 10.99, w)[None, :] + rng.integers(-1, 2, (h, w))
        m = np.clip(ramp, 0, 10)
    m = m.astype(np.uint8)
    want = icm_levels(m) if icm else reference_levels(m)
    for budget in (1, 5000, 1 << 23):
        assert np.array_equal(_level_codes(m, icm, budget), want), budget
    # the int64 indices of images above 2³¹ pixels, on the same map
    assert np.array_equal(_level_codes(m, icm, 5000, np.int64), want)


# --------------------------------------------------------------------------- Grad tiles


def _live_brute(x: np.ndarray, th: int, tw: int) -> np.ndarray:
    h, w = x.shape
    out = np.zeros((-(-h // th), -(-w // tw)), bool)
    for i, r0 in enumerate(range(0, h, th)):
        for j, c0 in enumerate(range(0, w, tw)):
            win = x[max(r0 - 4, 0):min(r0 + th + 4, h), max(c0 - 4, 0):min(c0 + tw + 4, w)]
            out[i, j] = win.min() != win.max()
    return out


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(4, 12), st.integers(4, 12),
       st.sampled_from([0.0, 0.003, 0.03, 0.3]), st.integers(0, 2**32 - 1))
def test_live_tiles_are_the_tiles_with_a_non_constant_padded_window(h, w, th, tw, density, seed):
    from metrics.gradient import live_tiles

    rng = np.random.default_rng(seed)
    x = np.where(rng.random((h, w)) < density, rng.integers(0, 256, (h, w)), 7).astype(np.uint8)
    assert np.array_equal(live_tiles(x, 1.0, (th, tw)), _live_brute(x, th, tw))
    assert not live_tiles(x, 0.0, (th, tw)).any()


@needs_numba
@pytest.mark.parametrize("protocol", ["dim", "icm"])
def test_grad_tile_skipping_is_exact_on_large_mattes(protocol):
    """Sparse blobs on constant ground: most tiles are skipped in one matte or both, and the
    compiled path still equals the numpy path (which computes every pixel)."""
    rng = np.random.default_rng(5)
    h, w = 300, 700
    yy, xx = np.mgrid[0:h, 0:w]
    soft = np.zeros((h, w))
    for cy, cx in ((60, 90), (200, 420), (250, 650)):  # soft discs of radius 30 on a flat ground
        soft = np.maximum(soft, np.clip(1 - np.hypot(yy - cy, xx - cx) / 30, 0, 1))
    p = np.rint(soft * 255).astype(np.uint8)
    g = np.roll(p, (3, 150), axis=(0, 1))
    g[:40] = 255
    t = np.where(rng.random((h, w)) < 0.5, 128, 0).astype(np.uint8)
    from metrics.gradient import live_tiles

    live_p, live_g = live_tiles(p, 1.0), live_tiles(g, 1.0)
    assert 0 < live_p.mean() < 0.7 and 0 < live_g.mean() < 0.7, "the case must skip tiles"
    assert (live_p != live_g).any(), "and skip them in one matte only, too"
    fast = evaluate(p, g, t, protocol=protocol, backend="numba")
    slow = evaluate(p, g, t, protocol=protocol, backend="numpy")
    assert fast["whole"]["Grad"] > 0
    assert not _close(fast, slow, 1e-10, 1e-15)
