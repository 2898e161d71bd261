"""nvdiffrast.torch: differentiable rasterization primitives for PyTorch.

CUDA tensors run on the native CUDA backend, CPU tensors on the vectorized reference backend;
``RasterizeGLContext`` rasterizes with OpenGL.
"""

from __future__ import annotations

import torch as _torch  # noqa: F401 - torch's libraries load before ours

from .. import _loader

# The import guard: both native modules load here, or an ImportError names the cause and the fix
# (torch/CUDA mismatch, driver, GPU architecture, missing library). Never compiles anything.
_loader.ensure_loaded()

from . import ops  # noqa: E402, F401 - the submodule is part of the public surface
from .ops import (  # noqa: E402
    DepthPeeler,
    RasterizeCudaContext,
    RasterizeGLContext,
    antialias,
    antialias_construct_topology_hash,
    get_log_level,
    interpolate,
    rasterize,
    set_log_level,
    texture,
    texture_construct_mip,
)

__all__ = [
    "RasterizeCudaContext",
    "RasterizeGLContext",
    "rasterize",
    "DepthPeeler",
    "interpolate",
    "texture",
    "texture_construct_mip",
    "antialias",
    "antialias_construct_topology_hash",
    "get_log_level",
    "set_log_level",
]
