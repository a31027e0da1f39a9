"""MAM's Mask-to-Matte (M2M) head, re-implemented with the official parameter names and shapes.

Source: SHI-Labs/Matting-Anything @ eb01e1c1f0016e2a4d00615b115f3b5ddcd031e4 (MIT):
``networks/m2ms/conv_sam.py`` (``BasicBlock``, ``SAM_Decoder_Deep``), ``networks/m2ms/__init__.py``
(``sam_decoder_deep``: layers ``[2, 3, 3, 2]``, of which ``layer1`` is unused) and ``networks/ops.py``
(``SpectralNorm``, SAGAN style). Our own code; the state dict matches the official one key for key, so the
released ``mam_vitb.pth`` (``checkpoint['state_dict']``) loads strictly (:func:`load_m2m`).

Shape of the state dict (ViT-B release, 2.7 M parameters in total):

- ``layer2`` (3 blocks, 260 → 128, OS16 → OS8), ``layer3`` (3 blocks, 132 → 64, → OS4), ``layer4`` (2 blocks,
  68 → 32, → OS2); each stage's input is the previous features + image (3) + mask (1). The first block of a
  stage: ``conv1`` = spectral-normalised ``ConvTranspose2d(c+4, c+4, 4, stride 2, pad 1)``, ``bn1``,
  ``conv2`` = SN 3×3 conv ``c+4 → out``, ``bn2``, ``upsample`` = [nearest ×2, SN 1×1 conv ``c+4 → out``, BN].
  The other blocks: SN 3×3 ``conv1``/``conv2`` ``out → out`` with ``bn1``/``bn2``.
- ``conv1`` (SN ``ConvTranspose2d(32, 32, 4, 2, 1)``, OS2 → OS1) and ``bn1`` at the top level.
- ``refine_OS8`` / ``refine_OS4`` / ``refine_OS1``: conv 3×3 (128 / 64 / 32 → 32, no bias), BN, LeakyReLU(0.2),
  conv 3×3 → 1 (with bias).
- Every SN-wrapped conv stores ``<name>.module.weight_u`` (out-rows), ``weight_v`` (the rest, flattened) and
  ``weight_bar`` (the raw weight) instead of ``weight``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

M2M_LAYERS = (2, 3, 3, 2)


def l2normalize(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``v / (‖v‖ + eps)`` (``ops.py:l2normalize``)."""
    return v / (v.norm() + eps)


class SpectralNorm(nn.Module):
    """SAGAN-style spectral normalisation of ``module.<name>`` (``networks/ops.py:SpectralNorm``).

    The raw weight W is stored as ``<name>_bar`` and the power-iteration vectors as ``<name>_u`` (rows) and
    ``<name>_v`` (columns of W viewed as rows × rest). The module runs with ``W / σ``, ``σ = uᵀ W v``: in
    training mode after ``power_iterations`` updates of u and v, in eval mode from the stored u, v unchanged
    (the official ``_noupdate_u_v``)."""

    def __init__(self, module: nn.Module, name: str = "weight", power_iterations: int = 1) -> None:
        super().__init__()
        self.module, self.name, self.power_iterations = module, name, int(power_iterations)
        if not all(hasattr(module, f"{name}_{s}") for s in ("u", "v", "bar")):
            self._make_params()

    def _make_params(self) -> None:
        w = getattr(self.module, self.name)
        height = w.shape[0]
        width = w.reshape(height, -1).shape[1]
        u = l2normalize(w.detach().new_empty(height).normal_(0, 1))
        v = l2normalize(w.detach().new_empty(width).normal_(0, 1))
        del self.module._parameters[self.name]
        self.module.register_parameter(f"{self.name}_u", nn.Parameter(u, requires_grad=False))
        self.module.register_parameter(f"{self.name}_v", nn.Parameter(v, requires_grad=False))
        self.module.register_parameter(f"{self.name}_bar", nn.Parameter(w.detach().clone()))

    def _vectors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.module
        return getattr(m, f"{self.name}_u"), getattr(m, f"{self.name}_v"), getattr(m, f"{self.name}_bar")

    def sigma(self) -> torch.Tensor:
        """``uᵀ W v`` from the stored vectors (the σ an eval-mode forward divides by)."""
        u, v, w = self._vectors()
        return u.dot(w.reshape(w.shape[0], -1).mv(v))

    def _power_iteration(self) -> None:
        u, v, w = self._vectors()
        mat = w.detach().reshape(w.shape[0], -1)
        with torch.no_grad():
            for _ in range(self.power_iterations):
                v.copy_(l2normalize(mat.t().mv(u)))
                u.copy_(l2normalize(mat.mv(v)))

    def forward(self, *args: Any) -> torch.Tensor:
        if self.module.training:
            self._power_iteration()
        w = self._vectors()[2]
        # a plain attribute, as the official setattr: not a parameter, so not in the state dict
        object.__setattr__(self.module, self.name, w / self.sigma().expand_as(w))
        return self.module(*args)


def conv3x3(in_planes: int, out_planes: int) -> nn.Conv2d:
    """3×3 convolution, padding 1, no bias (``conv_sam.py:conv3x3``)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int) -> nn.Conv2d:
    """1×1 convolution, no bias (``conv_sam.py:conv1x1``)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, bias=False)


class BasicBlock(nn.Module):
    """Residual block; with ``stride > 1`` its first conv is a ×2 transposed conv (``conv_sam.py:BasicBlock``)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, upsample: nn.Module | None = None) -> None:
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.conv1 = SpectralNorm(nn.ConvTranspose2d(inplanes, inplanes, kernel_size=4, stride=2, padding=1,
                                                         bias=False))
        else:
            self.conv1 = SpectralNorm(conv3x3(inplanes, inplanes))
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.activation = nn.LeakyReLU(0.2, inplace=True)
        self.conv2 = SpectralNorm(conv3x3(inplanes, planes))
        self.bn2 = nn.BatchNorm2d(planes)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.upsample(x) if self.upsample is not None else x
        return self.activation(out + identity)


def _refine_head(channels: int, activation: nn.Module) -> nn.Sequential:
    """conv 3×3 → 32 (no bias), BN, LeakyReLU, conv 3×3 → 1: the ``refine_OS*`` heads."""
    return nn.Sequential(nn.Conv2d(channels, 32, kernel_size=3, stride=1, padding=1, bias=False), nn.BatchNorm2d(32),
                         activation, nn.Conv2d(32, 1, kernel_size=3, stride=1, padding=1))


class SAM_Decoder_Deep(nn.Module):  # the official class name
    """The M2M module: SAM features (OS16) + image + mask at each stage → alphas at OS8, OS4 and OS1.

    ``forward(x_os16, img, mask)``: ``x_os16`` SAM's image embeddings (B, 256, S/16, S/16), ``img`` the
    normalised, padded model input (B, 3, S, S), ``mask`` the binarised low-res SAM mask (B, 1, S/4, S/4).
    Returns ``alpha_os1`` / ``alpha_os4`` / ``alpha_os8`` (all (B, 1, S, S), ``(tanh + 1) / 2``) and ``mask``
    (the guidance at S)."""

    def __init__(self, nc: int = 256, layers: tuple[int, ...] = M2M_LAYERS) -> None:
        super().__init__()
        self.inplanes, self.midplanes = nc, 32  # official: inplanes 256 (``nc`` is unused there), late_downsample off
        self.conv1 = SpectralNorm(nn.ConvTranspose2d(self.midplanes, 32, kernel_size=4, stride=2, padding=1,
                                                     bias=False))
        self.bn1 = nn.BatchNorm2d(32)
        self.leaky_relu = nn.LeakyReLU(0.2, inplace=True)
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(64, layers[2])
        self.layer4 = self._make_layer(self.midplanes, layers[3])
        self.refine_OS1 = _refine_head(32, self.leaky_relu)
        self.refine_OS4 = _refine_head(64, self.leaky_relu)
        self.refine_OS8 = _refine_head(128, self.leaky_relu)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        """One ×2 stage: a transposed-conv block taking the +4 image/mask channels, then ``blocks - 1`` blocks."""
        upsample = nn.Sequential(nn.UpsamplingNearest2d(scale_factor=2),
                                 SpectralNorm(conv1x1(self.inplanes + 4, planes)), nn.BatchNorm2d(planes))
        stage = [BasicBlock(self.inplanes + 4, planes, stride=2, upsample=upsample)]
        self.inplanes = planes
        stage += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self) -> None:
        """The official init: xavier on every Conv2d (its ``weight_bar`` when spectral-normalised; transposed convs
        keep PyTorch's default), BN to identity, and each block's last BN weight to zero."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight_bar if hasattr(m, "weight_bar") else m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.constant_(m.bn2.weight, 0)

    @staticmethod
    def _with_guidance(x: torch.Tensor, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` with the image and the mask resized (bilinear) to its size appended: C + 4 channels."""
        size = x.shape[2:]
        return torch.cat((x, F.interpolate(img, size, mode="bilinear", align_corners=False),
                          F.interpolate(mask, size, mode="bilinear", align_corners=False)), dim=1)

    def forward(self, x_os16: torch.Tensor, img: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.layer2(self._with_guidance(x_os16, img, mask))
        x_os8 = self.refine_OS8(x)
        x = self.layer3(self._with_guidance(x, img, mask))
        x_os4 = self.refine_OS4(x)
        x = self.layer4(self._with_guidance(x, img, mask))
        x = self.leaky_relu(self.bn1(self.conv1(x)))
        x_os1 = self.refine_OS1(x)
        x_os4 = F.interpolate(x_os4, scale_factor=4.0, mode="bilinear", align_corners=False)
        x_os8 = F.interpolate(x_os8, scale_factor=8.0, mode="bilinear", align_corners=False)
        return {"alpha_os1": (torch.tanh(x_os1) + 1.0) / 2.0, "alpha_os4": (torch.tanh(x_os4) + 1.0) / 2.0,
                "alpha_os8": (torch.tanh(x_os8) + 1.0) / 2.0,
                "mask": F.interpolate(mask, x_os1.shape[2:], mode="bilinear", align_corners=False)}


def sam_decoder_deep(nc: int = 256) -> SAM_Decoder_Deep:
    """The released M2M configuration (``networks/m2ms/__init__.py:sam_decoder_deep``)."""
    return SAM_Decoder_Deep(nc, M2M_LAYERS)


def m2m_state(path: Path, *, method: str = "mam") -> dict[str, Any]:
    """The M2M tensors of a MAM checkpoint, read as the official loaders do.

    ``gradio_app.py`` / ``inference_benchmark.py``: ``torch.load(ckpt)['state_dict']``, then
    ``utils.remove_prefix_state_dict`` (drops a DataParallel ``module.`` prefix) and a **strict** load into
    ``mam_model.m2m``. The training script (``trainer.py:save_model``) writes ``{'iter', 'loss', 'state_dict':
    G.module.m2m.state_dict(), 'opt_state_dict', 'lr_state_dict'}``: everything outside ``state_dict`` is
    ignored; inside it, any key that is not an M2M parameter is an error (the official ``strict=True``). A plain
    state dict (no ``state_dict`` entry) is accepted too. Read with ``weights_only=True``."""
    from methods._hub import read_state_dict

    return read_state_dict(path, method=method, key="state_dict", strip="module.")


def load_m2m(module: nn.Module, state: Mapping[str, Any], *, path: Path | str, method: str = "mam") -> None:
    """Strict load of :func:`m2m_state`'s tensors into ``module`` (every bad key named)."""
    from methods.sam import load_strict

    load_strict(module, state, method=method, what="M2M checkpoint", path=path)
