"""CPU reference backend: every op of the spec in vectorized PyTorch (see ``.._backend``)."""

from .antialias import antialias_bwd, antialias_fwd, antialias_topology_hash
from .interpolate import interpolate_bwd, interpolate_fwd
from .rasterize import rasterize_bwd, rasterize_fwd
from .texture import texture_bwd, texture_fwd

__all__ = [
    "rasterize_fwd", "rasterize_bwd", "interpolate_fwd", "interpolate_bwd", "texture_fwd", "texture_bwd",
    "antialias_topology_hash", "antialias_fwd", "antialias_bwd",
]
