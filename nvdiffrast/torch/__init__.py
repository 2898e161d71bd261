"""nvdiffrast.torch: differentiable rasterization primitives for PyTorch.

CUDA tensors run on the native CUDA backend, CPU tensors on the vectorized reference backend;
``RasterizeGLContext`` rasterizes with OpenGL.
"""

from __future__ import annotations

from . import ops  # noqa: F401 - the submodule is part of the public surface
from .ops import (
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
