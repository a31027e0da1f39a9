"""Trimap-guided classical matting: the upper reference that in-context methods are compared to.

The runner passes each target a trimap derived from its ground truth (paper Table 3 style);
a pymatting solver fills the unknown region at a bounded working resolution, and the result
is upsampled with the full-resolution known pixels kept exact.
"""

from __future__ import annotations

import numpy as np

from methods._matting import SOLVERS, downsample_trimap, solve_alpha, split_trimap, upsample_alpha
from methods.base import BaseMethod, MethodError, MethodInfo, Target
from methods.resize import resize_image, working_size


class TrimapMattingMethod(BaseMethod):
    """Closed-form (``cf``), learning-based (``lbdm``) or KNN (``knn``) matting from a trimap.

    ``long_side`` bounds the working resolution (the solvers' cost grows with pixels);
    ``epsilon`` is the Laplacian regulariser of ``cf``/``lbdm``.
    """

    info = MethodInfo(
        name="trimap_matting",
        guidance="trimap",
        description="pymatting solver on the ground-truth-derived trimap (upper reference)",
    )

    def __init__(self, solver: str = "cf", long_side: int = 800, epsilon: float = 1e-6,
                 maxiter: int = 2000) -> None:
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"trimap_matting: solver must be one of {list(SOLVERS)}, got '{solver}'")
        if long_side is not None and long_side < 8:
            raise ValueError(f"trimap_matting: long_side must be ≥ 8, got {long_side}")
        self.solver = solver
        self.long_side = long_side
        self.epsilon = float(epsilon)
        self.maxiter = int(maxiter)

    def predict_one(self, target: Target) -> np.ndarray:
        image = target.image
        if target.guidance is None:
            raise MethodError("trimap_matting: target has no trimap guidance")
        size = image.shape[:2]
        if target.guidance.shape[:2] != size:
            raise MethodError(
                f"trimap_matting: trimap shape {target.guidance.shape[:2]} != image shape {size}"
            )
        fg, bg = split_trimap(target.guidance)
        if not (fg | bg).all() and (fg | bg).any():
            work = working_size(size, self.long_side)
            small = resize_image(image, work).astype(np.float64) / 255.0
            trimap = downsample_trimap(fg, bg, work)
            alpha = solve_alpha(small, trimap, self.solver, self.epsilon, maxiter=self.maxiter)
            return upsample_alpha(alpha, size, fg, bg)
        # Nothing unknown (the trimap is the answer) or nothing known (no information: 0.5).
        return np.where(fg, 1.0, np.where(bg, 0.0, 0.5)).astype(np.float32)
