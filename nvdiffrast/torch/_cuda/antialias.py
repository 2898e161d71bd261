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
    """Blend pixels along silhouette edges; returns (out, work). ``work`` is the pair (weights, items):
    weights ([N, H, W, 2] float32) holds the signed blend weight of the item each pixel forms with its
    right and its upper neighbour (2.0 where there is none), items (int32) the count and codes of the
    items with a position gradient; the backward reuses both."""
    if topology is None:
        topology = antialias_topology_hash(tri)
    out, weights, items = _ops().antialias_fwd(color, rast, pos, tri, topology)
    return out, (weights, items)


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
    # (weights, items) from antialias_fwd, or weights alone; anything else: the items are evaluated again.
    weights, items = work if isinstance(work, tuple) and len(work) == 2 else (work, None)
    weights = weights if isinstance(weights, Tensor) else None
    items = items if isinstance(items, Tensor) else None
    # dy is read with its strides (an expanded gradient needs no copy).
    g_color, g_pos = _ops().antialias_bwd(
        color, rast, pos, tri, dy, weights, items, topology, float(pos_gradient_boost), det
    )
    return g_color, g_pos
