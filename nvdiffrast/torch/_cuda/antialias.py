"""CUDA adapters for ``antialias`` and its topology hash (contract: ``nvdiffrast.torch._backend``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ... import _loader


def _ops():  # noqa: ANN202 - torch.ops namespace object
    _loader.load_cuda()
    return torch.ops.nvdiffrast


def antialias_topology_hash(tri: Tensor) -> Any:
    """Edge → (triangle, opposite vertex) hash of ``tri``, built on the GPU (an int64 tensor)."""
    return _ops().antialias_topology_hash(tri)


def antialias_fwd(color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, topology: Any) -> tuple[Tensor, Any]:
    """Blend pixels along silhouette edges; returns (out, work). ``work`` ([N, H, W, 2] float32) holds the
    signed blend weight of the item each pixel forms with its right and its upper neighbour (2.0 where
    there is none); the backward reuses it."""
    if topology is None:
        topology = antialias_topology_hash(tri)
    out, work = _ops().antialias_fwd(color, rast, pos, tri, topology)
    return out, work


def antialias_bwd(
    color: Tensor,
    rast: Tensor,
    pos: Tensor,
    tri: Tensor,
    dy: Tensor,
    work: Any,
    topology: Any,
    pos_gradient_boost: float,
) -> tuple[Tensor, Tensor]:
    """Gradients w.r.t. color and pos (x, y, w; z is 0), the latter scaled by ``pos_gradient_boost``.

    Under ``torch.use_deterministic_algorithms(True)`` the position gradient is summed in a fixed order."""
    if topology is None:
        topology = antialias_topology_hash(tri)
    det = torch.are_deterministic_algorithms_enabled()
    saved = work if isinstance(work, Tensor) else None  # anything else: the items are evaluated again
    g_color, g_pos = _ops().antialias_bwd(
        color, rast, pos, tri, dy.contiguous(), saved, topology, float(pos_gradient_boost), det
    )
    return g_color, g_pos
