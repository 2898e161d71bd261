"""CUDA adapters for ``antialias`` and its topology hash (contract: ``nvdiffrast.torch._backend``).

Topology reuse: ``antialias(color, rast, pos, tri)`` without a ``topology_hash`` needs the edge topology
of ``tri`` on every call, and building it is the most expensive part of the op for large meshes. The
adapter keeps the last few topologies it built (per device, stream and triangle count) with a copy of
the triangles they were built from; on the next call the GPU compares the triangles with the copy and
rebuilds only if they differ. The check is on content, so any change of ``tri`` (in place, through
another framework, or a different tensor) is seen, and no host synchronization is involved. The backward
does not read the topology (the forward's saved state suffices), so a rebuild between a forward and its
backward is harmless. ``NVDIFFRAST_TOPOLOGY_CACHE=0`` turns reuse off; :func:`clear_topology_cache` frees
the memory held.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

from ... import _loader

# At most this many reused topologies, each at most this large (the hash of a 1.3M-triangle mesh is 134 MB).
_CACHE_ENTRIES = 4
_CACHE_MAX_BYTES = 1 << 30
# (device index, stream, T) -> [copy of tri, topology, refresh epoch]
_cache: OrderedDict[tuple[int, int, int], list[Any]] = OrderedDict()
_cache_lock = threading.Lock()


def _ops():  # noqa: ANN202 - torch.ops namespace object
    _loader.load_cuda()
    return torch.ops.nvdiffrast


_overloads: dict[str, Any] = {}


def _op(name: str) -> Any:
    """The op's default overload, looked up once (this path is latency bound for small images)."""
    fn = _overloads.get(name)
    if fn is None:
        fn = _overloads[name] = getattr(_ops(), name).default
    return fn


def clear_topology_cache() -> None:
    """Drop the topologies kept for reuse (their GPU memory returns to PyTorch's allocator)."""
    with _cache_lock:
        _cache.clear()


def antialias_topology_hash(tri: Tensor, reuse: bool = False) -> Any:
    """Edge → (triangle, opposite vertex) hash of ``tri``, built on the GPU (an int64 tensor).

    ``reuse=True``: a kept topology brought up to date with ``tri`` on the GPU (see the module notes)."""
    if not reuse or os.environ.get("NVDIFFRAST_TOPOLOGY_CACHE", "1") == "0":
        return _ops().antialias_topology_hash(tri)
    dev = tri.get_device()
    key = (dev, _current_stream(dev), tri.shape[0])
    with _cache_lock:
        entry = _cache.get(key)
        if entry is not None:
            _cache.move_to_end(key)
            # A fresh epoch per refresh lets the GPU-side gate skip a reset (see antialias_refresh_hash_cuda).
            entry[2] = entry[2] % (2**31 - 1) + 1
            tri_copy, topo, epoch = entry
    if entry is not None:
        _op("antialias_topology_refresh")(tri, tri_copy, topo, epoch)
        return topo
    topo = _ops().antialias_topology_hash(tri)
    if topo.numel() * topo.element_size() <= _CACHE_MAX_BYTES:
        with _cache_lock:
            _cache[key] = [tri.clone(), topo, 0]
            while len(_cache) > _CACHE_ENTRIES:
                _cache.popitem(last=False)
    return topo


def _current_stream(dev: int) -> int:
    """Handle of the current CUDA stream of device ``dev`` (the cheap private accessor when present)."""
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    return int(raw(dev)) if raw is not None else torch.cuda.current_stream(dev).cuda_stream


def antialias_fwd(color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, topology: Any) -> tuple[Tensor, Any]:
    """Blend pixels along silhouette edges; returns (out, work). ``work`` is (alpha, flags, items): the
    signed blend weights ([N, H, W, 2] float32, valid where flagged), a byte per pixel telling which of the
    items the pixel forms with its right / upper neighbour were accepted and carry a position gradient,
    and the count and codes of the items with a position gradient (int32); the backward reuses all three."""
    if topology is None:
        topology = antialias_topology_hash(tri)
    out, alpha, flags, items = _op("antialias_fwd")(color, rast, pos, tri, topology)
    return out, (alpha, flags, items)


def antialias_autograd(
    color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, topology: Any, pos_gradient_boost: float
) -> Tensor:
    """The whole op with its autograd node in C++ (optional contract entry, see ``_backend``): same
    results as ``antialias_fwd``/``antialias_bwd`` wired by the API layer's autograd.Function, with less
    host time per call."""
    return _op("antialias")(color, rast, pos, tri, topology, float(pos_gradient_boost))


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

    Without the forward's ``work`` the items are evaluated again from ``topology``. Under
    ``torch.use_deterministic_algorithms(True)`` the position gradient is summed in a fixed order."""
    if topology is None:
        topology = antialias_topology_hash(tri)
    det = torch.are_deterministic_algorithms_enabled()
    alpha = flags = items = None
    if isinstance(work, tuple) and len(work) == 3 and all(isinstance(w, Tensor) for w in work):
        alpha, flags, items = work
    # dy is read with its strides (an expanded gradient needs no copy).
    g_color, g_pos = _op("antialias_bwd")(
        color, rast, pos, tri, dy, alpha, flags, items, topology, float(pos_gradient_boost), det
    )
    return g_color, g_pos
