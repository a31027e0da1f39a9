"""The derivative-of-Gaussian kernel of the reference Grad metric, in separable form.

The reference (``gaussgradient.m``) builds a 9×9 kernel ``hx[r, c] = G(u_r) * G'(u_c)`` with
σ = 1.4, u = -4..4, and divides it by its Frobenius norm. An outer product's Frobenius norm
is the product of the factors' L2 norms, so ``hx = g0 ⊗ g1`` with ``g0 = G/‖G‖`` (even) and
``g1 = G'/‖G'‖`` (odd). Only the halves ``u = 0..4`` are kept: ``g0[0]`` is the centre tap
and ``g1[0] = 0``. The compiled kernel is written for this R = 4.
"""

from __future__ import annotations

import math

import numpy as np

SIGMA = 1.4
EPSILON = 0.01


def half_size(sigma: float = SIGMA, epsilon: float = EPSILON) -> int:
    """Kernel half size ``ceil(σ·sqrt(-2·ln(√(2π)·σ·ε)))``: 4 for σ = 1.4, ε = 0.01."""
    return math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2.0 * math.pi) * sigma * epsilon)))


RADIUS = half_size()


def full_factors(sigma: float = SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """``(G, G')`` sampled at u = -R..R, unnormalised, as in the reference."""
    u = np.arange(-RADIUS, RADIUS + 1, dtype=np.float64)
    g = np.exp(-(u**2) / (2.0 * sigma**2)) / (sigma * math.sqrt(2.0 * math.pi))
    dg = -u * g / sigma**2
    return g, dg


def half_factors(sigma: float = SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Normalised halves ``(g0[0..R], g1[0..R])``; ``g0 ⊗ g1`` over -R..R has unit Frobenius norm."""
    g, dg = full_factors(sigma)
    g0 = g / math.sqrt(float(np.sum(g * g)))
    g1 = dg / math.sqrt(float(np.sum(dg * dg)))
    return np.ascontiguousarray(g0[RADIUS:]), np.ascontiguousarray(g1[RADIUS:])

