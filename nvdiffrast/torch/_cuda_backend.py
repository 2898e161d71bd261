"""CUDA backend: thin adapters from the backend contract (``_backend``) to ``torch.ops.nvdiffrast``."""

from ._cuda.antialias import antialias_autograd, antialias_bwd, antialias_fwd, antialias_topology_hash
from ._cuda.interpolate import interpolate_bwd, interpolate_fwd
from ._cuda.rasterize import rasterize_bwd, rasterize_fwd
from ._cuda.texture import texture_bwd, texture_fwd

__all__ = [
    "rasterize_fwd", "rasterize_bwd", "interpolate_fwd", "interpolate_bwd", "texture_fwd", "texture_bwd",
    "antialias_topology_hash", "antialias_fwd", "antialias_bwd", "antialias_autograd",
]
