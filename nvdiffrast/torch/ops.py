"""All public operations of ``nvdiffrast.torch`` (re-exported by the package)."""

from __future__ import annotations

from ._antialias import TopologyHashWrapper, antialias, antialias_construct_topology_hash  # noqa: F401
from ._context import RasterizeCudaContext
from ._gl_context import RasterizeGLContext
from ._interpolate import interpolate
from ._log import get_log_level, set_log_level
from ._peel import DepthPeeler
from ._rasterize import rasterize
from ._texture import texture, texture_construct_mip

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
