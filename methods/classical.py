"""``classical``: a training-free in-context matting method (colour/texture models + closed-form matting).

Algorithm (all at a bounded working resolution, deterministic):

1. ``prepare``: every reference gives foreground/background training pixels and a
   spatial layout. A ``mask`` prompt is used directly (eroded a little so mixed edge pixels
   do not train either class). ``scribble``/``points`` prompts are completed first: the
   marks (dilated into small discs; the image border stands in for background when none is
   marked) train colour/texture models that segment the reference itself, exactly as a
   target is segmented below. Foreground and background are modelled by smoothed
   histograms of quantised Lab colour and local texture energy, pooled over references.
2. ``predict``: the reference models give each target pixel a log-likelihood ratio; the
   references' (blurred) foreground layout adds a weak spatial prior. A few rounds of soft
   self-training then fit models on the *target itself* (weighted by the current
   foreground probability), which adapts to the target's own background and object
   colours while the reference term keeps it anchored; between rounds the probability is
   smoothed with a guided filter so it follows the target's edges.
   Image-border pixels where no reference foreground touches the border add background
   evidence, which seeds the target's own background model.
3. The smoothed probability becomes a pseudo-trimap (confident foreground/background, an
   unknown band around the 0.5 contour and wherever the probability is undecided).
   Closed-form matting fills the unknown pixels, each also pulled softly towards its
   probability in proportion to its confidence (so a large undecided region follows the
   segmentation instead of whichever label surrounds it); the matte is upsampled to full
   resolution.

Measured on icm58-dev (``benchmarks/classical_eval.py``): each of self-training, the spatial
prior and the texture feature lowers SAD; a strong spatial prior (weight 2) hurts.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from benchmark.types import BACKGROUND, FOREGROUND, Episode
from methods._colour_models import Features, HistogramModel, features, log_ratio
from methods._guided_filter import guided_filter
from methods._matting import SOLVERS, solve_alpha, solve_alpha_soft
from methods.base import BaseMethod, MethodError, MethodInfo, Reference, Target
from methods.resize import resize_alpha, resize_image, working_size

#: Side of the square map that stores the references' foreground layout (normalised coordinates).
PRIOR_SIZE = 64


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)


def _logit(p: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    p = np.clip(p, eps, 1.0 - eps)
    return np.log(p / (1.0 - p)).astype(np.float32)


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a disc; falls back to the input when it would erase everything."""
    if radius < 1 or not mask.any():
        return mask
    out = cv2.erode(mask.astype(np.uint8), _disc(radius), borderType=cv2.BORDER_REPLICATE) > 0
    return out if out.any() else mask


def _rgb8(image: np.ndarray, what: str) -> np.ndarray:
    """The image as a contiguous uint8 H×W×3 array, or a MethodError naming it."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise MethodError(f"classical: {what} must be uint8 H×W×3 RGB, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius < 1:
        return mask
    return cv2.dilate(mask.astype(np.uint8), _disc(radius)) > 0


class ClassicalMethod(BaseMethod):
    """Colour/texture-model segmentation + closed-form matting, learnt from the reference(s).

    Parameters (all have generic defaults; see the module docstring for the pipeline):

    - ``long_side``: working resolution of segmentation and matting.
    - ``solver``: pymatting solver for the pseudo-trimap (``cf``, ``lbdm``, ``knn``).
    - ``texture_weight``: weight of the texture log-likelihood next to colour's.
    - ``prior_weight``: weight of the references' spatial layout (logit units);
      ``prior_blur``: its Gaussian blur, as a fraction of the long side.
    - ``self_iters``: rounds of self-training on the target; ``target_weight``: weight of the
      target-fitted models next to the references' (``ref_weight``).
    - ``smooth_radius`` / ``smooth_eps``: guided filter window (fraction of the long side)
      and regulariser.
    - ``fg_threshold`` / ``bg_threshold``: probability above/below which a pixel is known;
      ``band``: half-width of the unknown band around the 0.5 contour (fraction of the long side).
    - ``epsilon``: closed-form Laplacian regulariser; ``soft_lambda``: pull of the probability
      on unknown pixels (0 = plain trimap solve, also used for ``lbdm``/``knn``).
    - ``seed_radius``: scribble/point marks grow into discs of this radius (fraction of the long side).
    - ``border_weight``: background evidence (logit units) on reference-free image borders.
    - ``max_unknown``: most unknown pixels handed to the matting solver; beyond it the matte
      is solved on a proportionally smaller copy (keeps the worst case at a few seconds).
    """

    info = MethodInfo(
        name="classical",
        guidance="in_context",
        prompt_kinds=frozenset({"mask", "scribble", "points"}),
        max_references=4,
        description="training-free: reference colour/texture models + self-training + closed-form matting",
    )

    def __init__(self, long_side: int = 512, solver: str = "cf", texture_weight: float = 0.5,
                 prior_weight: float = 1.0, prior_blur: float = 0.1, self_iters: int = 3,
                 ref_weight: float = 0.5, target_weight: float = 1.5, smooth_radius: float = 0.01,
                 smooth_eps: float = 1e-3, fg_threshold: float = 0.8, bg_threshold: float = 0.2,
                 band: float = 0.01, epsilon: float = 1e-6, seed_radius: float = 0.02,
                 soft_lambda: float = 0.1, border_weight: float = 3.0, max_unknown: int = 60_000) -> None:
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"classical: solver must be one of {list(SOLVERS)}, got '{solver}'")
        if not 0.0 <= bg_threshold < fg_threshold <= 1.0:
            raise ValueError("classical: need 0 ≤ bg_threshold < fg_threshold ≤ 1")
        if long_side < 16:
            raise ValueError(f"classical: long_side must be ≥ 16, got {long_side}")
        self.long_side = int(long_side)
        self.solver = solver
        self.texture_weight = float(texture_weight)
        self.prior_weight = float(prior_weight)
        self.prior_blur = float(prior_blur)
        self.self_iters = int(self_iters)
        self.ref_weight = float(ref_weight)
        self.target_weight = float(target_weight)
        self.smooth_radius = float(smooth_radius)
        self.smooth_eps = float(smooth_eps)
        self.fg_threshold = float(fg_threshold)
        self.bg_threshold = float(bg_threshold)
        self.band = float(band)
        self.epsilon = float(epsilon)
        self.seed_radius = float(seed_radius)
        self.soft_lambda = float(soft_lambda)
        self.border_weight = float(border_weight)
        self.max_unknown = int(max_unknown)
        self._fg: HistogramModel | None = None
        self._bg: HistogramModel | None = None
        self._prior: np.ndarray | None = None

    # ------------------------------------------------------------------ references
    def prepare(self, references: Sequence[Reference], *, seed: int = 0, episode: Episode | None = None) -> None:
        super().prepare(references, seed=seed, episode=episode)
        fgs, bgs, priors = [], [], []
        for ref in references:
            fg_model, bg_model, layout = self._learn_reference(ref)
            fgs.append(fg_model)
            bgs.append(bg_model)
            priors.append(cv2.resize(layout, (PRIOR_SIZE, PRIOR_SIZE), interpolation=cv2.INTER_AREA))
        k = 1.0 / len(references)
        self._fg = sum((m.scaled(k) for m in fgs[1:]), fgs[0].scaled(k))
        self._bg = sum((m.scaled(k) for m in bgs[1:]), bgs[0].scaled(k))
        self._prior = np.mean(priors, axis=0).astype(np.float32)

    def _learn_reference(self, ref: Reference) -> tuple[HistogramModel, HistogramModel, np.ndarray]:
        """(fg model, bg model, soft foreground layout at working size) of one reference."""
        image = _rgb8(ref.image, f"reference {ref.sample_id}")
        if tuple(ref.prompt.shape) != image.shape[:2]:
            raise MethodError(f"classical: prompt shape {ref.prompt.shape} != reference image "
                              f"shape {image.shape[:2]} ({ref.sample_id})")
        size = working_size(image.shape[:2], self.long_side)
        small = resize_image(image, size)
        feats = features(small)
        erode = max(1, round(0.005 * max(size)))
        if ref.prompt.kind == "mask":
            frac = resize_image(ref.prompt.foreground_mask().astype(np.float32), size)
            fg, bg = _erode(frac >= 0.99, erode), _erode(frac <= 0.01, erode)
            layout = frac
        else:
            fg_seed, bg_seed = self._seeds(ref, size)
            layout = self._complete(small, feats, fg_seed, bg_seed)
            fg = _erode(layout >= self.fg_threshold, erode) | fg_seed
            bg = _erode(layout <= self.bg_threshold, erode) | bg_seed
        if not fg.any():
            raise MethodError(f"classical: reference {ref.sample_id} has no foreground in its prompt")
        if not bg.any():
            raise MethodError(f"classical: reference {ref.sample_id} has no background (all foreground)")
        return HistogramModel.fit(feats, fg), HistogramModel.fit(feats, bg), layout.astype(np.float32)

    def _seeds(self, ref: Reference, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Foreground/background seed pixels at working ``size`` from a scribble or point prompt."""
        h, w = ref.prompt.shape
        sy, sx = size[0] / h, size[1] / w
        fg = np.zeros(size, bool)
        bg = np.zeros(size, bool)
        if ref.prompt.kind == "points":
            for y, x, is_fg in ref.prompt.points:
                yy = min(size[0] - 1, max(0, int(y * sy)))
                xx = min(size[1] - 1, max(0, int(x * sx)))
                (fg if is_fg else bg)[yy, xx] = True
        else:
            labels = ref.prompt.labels()
            fg = resize_image((labels == FOREGROUND).astype(np.float32), size) > 0
            bg = resize_image((labels == BACKGROUND).astype(np.float32), size) > 0
            both = fg & bg
            fg, bg = fg & ~both, bg & ~both
        r = max(1, round(self.seed_radius * max(size)))
        fg, bg = _dilate(fg, r), _dilate(bg, r)
        both = fg & bg
        fg, bg = fg & ~both, bg & ~both
        if fg.any() and not bg.any():
            # No background marked: a thin frame far from the foreground marks stands in.
            frame = np.ones(size, bool)
            m = max(1, round(0.02 * max(size)))
            frame[m:-m, m:-m] = False
            bg = frame & ~_dilate(fg, 4 * r)
        return fg, bg

    def _complete(self, image: np.ndarray, feats: Features, fg_seed: np.ndarray,
                  bg_seed: np.ndarray) -> np.ndarray:
        """Soft foreground of a reference from sparse seeds (interactive segmentation)."""
        if not fg_seed.any():
            raise MethodError("classical: the prompt marks no foreground")
        fg_m, bg_m = HistogramModel.fit(feats, fg_seed), HistogramModel.fit(feats, bg_seed)
        clamp = np.zeros(image.shape[:2], np.float32)
        clamp[fg_seed], clamp[bg_seed] = 8.0, -8.0
        return self._segment(image, feats, log_ratio(fg_m, bg_m, feats, self.texture_weight), clamp)

    # ------------------------------------------------------------------ targets
    def _segment(self, image: np.ndarray, feats: Features, llr_ref: np.ndarray,
                 prior_logit: np.ndarray) -> np.ndarray:
        """Foreground probability from the reference term, a prior and self-training (float32)."""
        guide = image.astype(np.float32) / 255.0
        r = max(1, round(self.smooth_radius * max(image.shape[:2])))
        base = self.ref_weight * llr_ref + prior_logit
        p = _sigmoid(llr_ref + prior_logit)
        p = np.clip(guided_filter(guide, p, r, self.smooth_eps), 0.0, 1.0)
        for _ in range(self.self_iters):
            tf = HistogramModel.fit(feats, p)
            tb = HistogramModel.fit(feats, 1.0 - p)
            llr_t = log_ratio(tf, tb, feats, self.texture_weight)
            p = _sigmoid(base + self.target_weight * llr_t)
            p = np.clip(guided_filter(guide, p, r, self.smooth_eps), 0.0, 1.0)
        return p

    def soft_foreground(self, image: np.ndarray) -> np.ndarray:
        """Foreground probability of a target at working resolution (before matting)."""
        if self._fg is None or self._bg is None or self._prior is None:
            raise MethodError("classical: predict() called before prepare()")
        image = _rgb8(image, "target")
        size = working_size(image.shape[:2], self.long_side)
        small = resize_image(image, size)
        feats = features(small)
        llr = log_ratio(self._fg, self._bg, feats, self.texture_weight)
        prior = cv2.resize(self._prior, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        sigma = self.prior_blur * max(size)
        if sigma > 0:
            prior = cv2.GaussianBlur(prior, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
        prior_logit = self.prior_weight * _logit(prior, 0.05)
        if self.border_weight > 0:
            prior_logit -= self.border_weight * self._free_border(size)
        return self._segment(small, feats, llr, prior_logit)

    def _free_border(self, size: tuple[int, int]) -> np.ndarray:
        """Image-border pixels (a 2 % frame) where no reference foreground touches that border region.

        Objects are rarely cut by the frame where the references show background, so these
        pixels are likely background: a generic cue that seeds the target's own background
        model in self-training even when the reference background looks nothing like it.
        """
        assert self._prior is not None
        k = max(1, round(0.15 * PRIOR_SIZE)) * 2 + 1  # tolerate ±15 % shifts along the border
        near_fg = cv2.dilate((self._prior > 0.05).astype(np.uint8), np.ones((k, k), np.uint8))
        near_fg = cv2.resize(near_fg, (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0
        m = max(1, round(0.02 * max(size)))
        frame = np.ones(size, bool)
        frame[m:-m, m:-m] = False
        return (frame & ~near_fg).astype(np.float32)

    def pseudo_trimap(self, p: np.ndarray) -> np.ndarray:
        """Float trimap (0 / 0.5 / 1) from a foreground probability at working resolution."""
        band = max(1, round(self.band * max(p.shape)))
        hard = p >= 0.5
        edge = _dilate(hard, band) & ~_erode(hard, band) if hard.any() else np.zeros_like(hard)
        trimap = np.full(p.shape, 0.5)
        trimap[(p >= self.fg_threshold) & ~edge] = 1.0
        trimap[(p <= self.bg_threshold) & ~edge] = 0.0
        return trimap

    def predict_one(self, target: Target) -> np.ndarray:
        _ = self.references  # raises MethodError before prepare()
        image = _rgb8(target.image, f"target {target.sample_id}")
        size = image.shape[:2]
        p = self.soft_foreground(image)
        trimap = self.pseudo_trimap(p)
        unknown = int((trimap == 0.5).sum())
        if unknown > self.max_unknown:
            # Bound the solver's cost (its preconditioner grows with the unknown pixels): matte a
            # smaller copy when the segmentation leaves too much undecided.
            scale = (self.max_unknown / unknown) ** 0.5
            p = resize_alpha(p, (max(1, round(p.shape[0] * scale)), max(1, round(p.shape[1] * scale))))
            trimap = self.pseudo_trimap(p)
        small = resize_image(image, p.shape).astype(np.float64) / 255.0
        if self.soft_lambda > 0 and self.solver == "cf":
            alpha = solve_alpha_soft(small, trimap, p, np.abs(2.0 * p - 1.0), self.soft_lambda, self.epsilon)
        else:
            alpha = solve_alpha(small, trimap, self.solver, self.epsilon)
        return resize_alpha(alpha, size)
