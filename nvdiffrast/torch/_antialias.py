"""Public ``antialias`` and ``antialias_construct_topology_hash`` (spec §3.8, §3.9, §4.5)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from . import _checks
from ._dispatch import backend_for

_OP = "antialias"
_OP_HASH = "antialias_construct_topology_hash"


class TopologyHashWrapper:
    """Opaque edge-topology object returned by :func:`antialias_construct_topology_hash`.

    It belongs to the ``tri`` it was built from and to that tensor's device.
    """

    def __init__(self, impl: Any, device: torch.device, num_triangles: int) -> None:
        self.impl = impl
        self.device = device
        self.num_triangles = num_triangles

    def __repr__(self) -> str:
        return f"<TopologyHashWrapper: {self.num_triangles} triangles on {self.device}>"


def _check_tri(op: str, tri: Tensor) -> None:
    _checks.check_dtype(op, torch.int32, tri=tri)
    _checks.check_contiguous(op, tri=tri)
    _checks.check_tri(op, tri)


def antialias_construct_topology_hash(tri: Tensor) -> TopologyHashWrapper:
    """Build the edge topology of ``tri`` (int32 ``[T, 3]``) once, for reuse by :func:`antialias`.

    Triangles with a negative or repeated vertex index are ignored.
    """
    _checks.require_tensor(_OP_HASH, "tri", tri)
    _checks.check_same_device(_OP_HASH, tri=tri)
    _check_tri(_OP_HASH, tri)
    impl = backend_for(tri).antialias_topology_hash(tri)
    return TopologyHashWrapper(impl, tri.device, tri.shape[0])


class _AntialiasFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        color: Tensor,
        rast: Tensor,
        pos: Tensor,
        tri: Tensor,
        topology: TopologyHashWrapper,
        pos_gradient_boost: float,
    ) -> Tensor:
        backend = backend_for(color)
        out, work = backend.antialias_fwd(color, rast, pos, tri, topology.impl)
        ctx.save_for_backward(color, rast, pos, tri)
        ctx.backend = backend
        ctx.work = work
        ctx.topology = topology
        ctx.boost = pos_gradient_boost
        return out

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Optional[Tensor], ...]:  # type: ignore[override]
        color, rast, pos, tri = ctx.saved_tensors
        # The CUDA kernels read a strided dy in place (the gradient of out.sum() is an expanded view).
        g_color, g_pos = ctx.backend.antialias_bwd(
            color, rast, pos, tri, dy if dy.is_cuda else dy.contiguous(), ctx.work, ctx.topology.impl, ctx.boost
        )
        return (
            g_color if ctx.needs_input_grad[0] else None,
            None,
            g_pos if ctx.needs_input_grad[2] else None,
            None,
            None,
            None,
        )


def antialias(
    color: Tensor,
    rast: Tensor,
    pos: Tensor,
    tri: Tensor,
    topology_hash: Optional[TopologyHashWrapper] = None,
    pos_gradient_boost: float = 1.0,
) -> Tensor:
    """Blend pixels along visible silhouette edges by their analytic coverage (differentiable).

    Args:
        color: float32 ``[N, H, W, C]`` shaded image.
        rast: ``rast`` from :func:`rasterize` for the same geometry and resolution.
        pos: the clip-space positions used for rasterization, ``[N, V, 4]`` or ``[V, 4]``.
        tri: the int32 ``[T, 3]`` used for rasterization (shared vertices must share indices).
        topology_hash: optional result of :func:`antialias_construct_topology_hash` for ``tri``.
        pos_gradient_boost: multiplier for the position gradient only.

    Returns:
        The antialiased image, same shape as ``color``. Gradients flow to ``color`` and ``pos``.
    """
    _checks.require_tensor(_OP, "color", color)
    _checks.require_tensor(_OP, "rast", rast)
    _checks.require_tensor(_OP, "pos", pos)
    _checks.require_tensor(_OP, "tri", tri)
    if not (topology_hash is None or isinstance(topology_hash, TopologyHashWrapper)):
        raise AssertionError(
            f"{_OP}(): topology_hash must be None or the result of antialias_construct_topology_hash(), "
            f"got {type(topology_hash).__name__}"
        )
    try:
        boost = float(pos_gradient_boost)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{_OP}(): pos_gradient_boost must be a float, got {pos_gradient_boost!r}") from exc
    dev = _checks.check_same_device(_OP, color=color, rast=rast, pos=pos, tri=tri)
    _checks.check_dtype(_OP, torch.float32, color=color, rast=rast, pos=pos)
    _checks.check_dtype(_OP, torch.int32, tri=tri)
    _checks.check_contiguous(_OP, color=color, rast=rast, pos=pos, tri=tri)
    _checks.check_shape(_OP, color.dim() == 4 and min(color.shape) > 0, "color", "[>0, >0, >0, >0]", color)
    _checks.check_shape(
        _OP, rast.dim() == 4 and min(rast.shape) > 0 and rast.shape[3] == 4, "rast", "[>0, >0, >0, 4]", rast
    )
    if color.shape[1:3] != rast.shape[1:3]:
        raise RuntimeError(
            f"{_OP}(): color and rast inputs must have same spatial dimensions "
            f"(color {list(color.shape)}, rast {list(rast.shape)})"
        )
    pos_ok = (pos.dim() == 3 and pos.shape[0] > 0 and pos.shape[1] > 0 and pos.shape[2] == 4) or (
        pos.dim() == 2 and pos.shape[0] > 0 and pos.shape[1] == 4
    )
    _checks.check_shape(_OP, pos_ok, "pos", "[>0, >0, 4] or [>0, 4]", pos)
    _checks.check_tri(_OP, tri)
    if pos.dim() == 3 and not (color.shape[0] == rast.shape[0] == pos.shape[0]):
        raise RuntimeError(
            f"{_OP}(): minibatch size mismatch between inputs color, rast, pos "
            f"(color {color.shape[0]}, rast {rast.shape[0]}, pos {pos.shape[0]})"
        )
    if pos.dim() == 2 and color.shape[0] != rast.shape[0]:
        raise RuntimeError(
            f"{_OP}(): minibatch size mismatch between inputs color, rast "
            f"(color {color.shape[0]}, rast {rast.shape[0]})"
        )
    if topology_hash is None:
        # A per-call topology: the backend may reuse one it keeps for this tri's content (see _backend).
        topology_hash = TopologyHashWrapper(backend_for(tri).antialias_topology_hash(tri, reuse=True), dev,
                                            tri.shape[0])
    elif topology_hash.device != dev:
        raise RuntimeError(
            f"{_OP}(): topology_hash was built for tri on {topology_hash.device} but the inputs are on {dev}; "
            f"build it from the tri tensor passed here"
        )
    if topology_hash.num_triangles != tri.shape[0]:
        raise RuntimeError(
            f"{_OP}(): topology_hash was built for a tri with {topology_hash.num_triangles} triangles but tri has "
            f"{tri.shape[0]}; build it with antialias_construct_topology_hash(tri) for this tri"
        )
    fused = getattr(backend_for(color), "antialias_autograd", None)
    if fused is not None:  # the backend's own autograd node (CUDA: C++, less host time per call)
        return fused(color, rast, pos, tri, topology_hash.impl, boost)
    return _AntialiasFunction.apply(color, rast, pos, tri, topology_hash, boost)
