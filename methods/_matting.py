"""Trimap-based alpha solving at a working resolution, shared by ``trimap_matting`` and ``classical``.

The classical solvers (closed-form, learning-based, KNN) cost time and memory in the number
of pixels, so they run on a bounded working copy, cropped to the unknown region; the result
is upsampled and the full-resolution known pixels are forced back to exactly 0 or 1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from methods.base import MethodError
from methods.resize import resize_alpha, resize_image

SOLVERS: tuple[str, ...] = ("cf", "lbdm", "knn")

#: Trimap codes used internally (floats, as pymatting expects): background, unknown, foreground.
BG, UNKNOWN, FG = 0.0, 0.5, 1.0


def split_trimap(trimap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, background) boolean maps of a uint8 (0/128/255) or float ([0, 1]) trimap.

    Thresholds follow pymatting (≥ 0.9 foreground, ≤ 0.1 background), so trimaps with
    slightly off codes (e.g. resampled ones) still split sensibly.
    """
    t = np.asarray(trimap)
    if t.ndim == 3:
        t = t[..., 0]
    if t.dtype == np.bool_:
        raise MethodError("expected a trimap (0/128/255), got a boolean mask")
    scale = 255.0 if t.dtype == np.uint8 or (t.size and float(t.max()) > 1.0) else 1.0
    return t >= 0.9 * scale, t <= 0.1 * scale


def downsample_trimap(fg: np.ndarray, bg: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float trimap at ``size`` that is known only where every covered full-res pixel agrees.

    Conservative (area fractions, not nearest): a thin unknown band widens by at most one
    working pixel instead of vanishing, so the solver never fixes a pixel that is mixed.
    """
    out = np.full(size, UNKNOWN, np.float64)
    if fg.shape == size:
        out[fg] = FG
        out[bg] = BG
        return out
    fg_frac = resize_image(fg.astype(np.float32), size)
    bg_frac = resize_image(bg.astype(np.float32), size)
    out[fg_frac >= 0.999] = FG
    out[bg_frac >= 0.999] = BG
    return out


def _solver(name: str) -> Callable[..., np.ndarray]:
    from pymatting import estimate_alpha_cf, estimate_alpha_knn, estimate_alpha_lbdm

    return {"cf": estimate_alpha_cf, "lbdm": estimate_alpha_lbdm, "knn": estimate_alpha_knn}[name]


def solve_alpha(image: np.ndarray, trimap: np.ndarray, solver: str = "cf", epsilon: float = 1e-6,
                margin: int = 3, maxiter: int = 2000) -> np.ndarray:
    """Alpha (float64, [0, 1]) for a float RGB ``image`` in [0, 1] and a float trimap (0/0.5/1).

    Degenerate trimaps have a closed answer and never reach the solver: no unknown pixel →
    the trimap itself; no foreground → 0 (every constraint is 0); no background → 1; nothing
    known → 0.5. Otherwise the solver runs on the bounding box of the unknown pixels plus
    ``margin`` (the closed-form Laplacian only couples pixels two apart, so ``margin`` ≥ 2
    leaves its answer unchanged).
    """
    if solver not in SOLVERS:
        raise MethodError(f"unknown matting solver '{solver}' (choose from {list(SOLVERS)})")
    fg, bg = trimap >= 0.9, trimap <= 0.1
    unknown = ~(fg | bg)
    alpha = np.where(fg, 1.0, 0.0)
    if not unknown.any():
        return alpha
    if not fg.any() or not bg.any():
        alpha[unknown] = 0.5 if not (fg.any() or bg.any()) else float(fg.any())
        return alpha
    ys, xs = np.nonzero(unknown)
    h, w = trimap.shape
    y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + margin + 1)
    x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + margin + 1)
    crop_t = trimap[y0:y1, x0:x1]
    crop_fg, crop_bg = crop_t >= 0.9, crop_t <= 0.1
    if not crop_fg.any() or not crop_bg.any():
        # The crop lost one of the labels: solve on the whole image so both constrain it.
        y0, y1, x0, x1 = 0, h, 0, w
        crop_t = trimap
    crop_i = np.ascontiguousarray(image[y0:y1, x0:x1], dtype=np.float64)
    crop_t = np.ascontiguousarray(crop_t, dtype=np.float64)
    kwargs: dict = {"cg_kwargs": {"maxiter": maxiter}}
    if solver in ("cf", "lbdm"):
        kwargs["laplacian_kwargs"] = {"epsilon": epsilon}
    try:
        sol = _solver(solver)(crop_i, crop_t, **kwargs)
    except (ValueError, ArithmeticError):
        # Incomplete Cholesky can break down on near-singular systems; Jacobi always applies.
        from pymatting import jacobi

        sol = _solver(solver)(crop_i, crop_t, preconditioner=jacobi, **kwargs)
    sol = np.nan_to_num(np.clip(sol, 0.0, 1.0), nan=0.5)
    alpha[y0:y1, x0:x1] = np.where(unknown[y0:y1, x0:x1], sol, alpha[y0:y1, x0:x1])
    return alpha


def solve_alpha_soft(image: np.ndarray, trimap: np.ndarray, prior: np.ndarray, confidence: np.ndarray,
                     lam: float = 0.1, epsilon: float = 1e-6, maxiter: int = 2000,
                     min_confidence: float = 0.01) -> np.ndarray:
    """Closed-form matting whose unknown pixels are also pulled towards a soft ``prior``.

    Minimises αᵀLα + λ Σ cᵢ (αᵢ − priorᵢ)² over the unknown pixels (L: closed-form matting
    Laplacian, c: per-pixel ``confidence`` in [0, 1]) with the trimap's known pixels fixed.
    Where the prior is confident it decides; where it is not, the image's local colour-line
    model propagates alpha from the known pixels. Unlike a pure trimap solve, a large
    undecided region does not get filled by whichever label happens to surround it.
    """
    from pymatting import cf_laplacian, cg, ichol, jacobi

    fg, bg = trimap >= 0.9, trimap <= 0.1
    known = fg | bg
    unknown = ~known
    alpha = np.where(fg, 1.0, 0.0)
    if not unknown.any():
        return alpha
    ys, xs = np.nonzero(unknown)
    h, w = trimap.shape
    y0, y1 = max(0, ys.min() - 3), min(h, ys.max() + 4)
    x0, x1 = max(0, xs.min() - 3), min(w, xs.max() + 4)
    sl = (slice(y0, y1), slice(x0, x1))
    img = np.ascontiguousarray(image[sl], dtype=np.float64)
    k = known[sl].ravel()
    u = ~k
    L = cf_laplacian(img, epsilon=epsilon, is_known=known[sl])
    # A small confidence floor keeps the system positive definite even where nothing is known
    # and the prior is undecided (CG would otherwise crawl on a singular system).
    c = lam * np.clip(confidence[sl], min_confidence, 1.0).ravel()[u].astype(np.float64)
    L_U = (L[u][:, u] + _diag(c)).tocsc()
    rhs = c * prior[sl].ravel()[u].astype(np.float64)
    if k.any():
        rhs -= L[u][:, k].dot(fg[sl].ravel()[k].astype(np.float64))
    x0 = np.clip(prior[sl].ravel()[u].astype(np.float64), 0.0, 1.0)  # warm start: the prior
    try:
        x = cg(L_U, rhs, x0=x0, M=ichol(L_U), maxiter=maxiter)
    except (ValueError, ArithmeticError):
        x = cg(L_U, rhs, x0=x0, M=jacobi(L_U), maxiter=maxiter)
    sub = alpha[sl]
    sub[unknown[sl]] = np.clip(np.nan_to_num(x, nan=0.5), 0.0, 1.0)
    return alpha


def _diag(values: np.ndarray):
    import scipy.sparse as sp

    return sp.diags(values, format="csr")


def upsample_alpha(alpha: np.ndarray, size: tuple[int, int], fg: np.ndarray | None = None,
                   bg: np.ndarray | None = None) -> np.ndarray:
    """Bilinear upsampling to ``size`` (float32), then known pixels forced to exactly 1 / 0."""
    out = resize_alpha(alpha.astype(np.float32), size)
    if fg is not None:
        out[fg] = 1.0
    if bg is not None:
        out[bg] = 0.0
    return out
