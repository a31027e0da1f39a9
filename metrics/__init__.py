"""Exact matting metrics (SAD, MSE, Grad, Conn) and alpha-matte readers.

``protocol="dim"`` (default) reproduces the Deep Image Matting MATLAB reference;
``protocol="icm"`` reproduces the official In-Context Matting Python functions.
See ``metrics/README.md``. Importing this package needs only numpy, scipy and Pillow;
numba (``icmbench[fast]``) is used when installed.
"""

from metrics._backend import compile_notice, numba_available
from metrics.functional import METRIC_NAMES, REGIONS, conn, evaluate, grad, mse, sad
from metrics.io import AlphaDecodeError, alpha_from_array, read_alpha, read_trimap

__all__ = [
    "METRIC_NAMES",
    "REGIONS",
    "AlphaDecodeError",
    "alpha_from_array",
    "compile_notice",
    "conn",
    "evaluate",
    "grad",
    "mse",
    "numba_available",
    "read_alpha",
    "read_trimap",
    "sad",
]
