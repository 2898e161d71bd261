"""Public ``rasterize`` (spec §3.3) and the autograd node shared with ``DepthPeeler``."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from . import _checks
from ._context import RasterizeCudaContext, check_context_device
from ._dispatch import backend_for

_OP = "rasterize"


def _gl_context_class() -> Optional[type]:
    """``RasterizeGLContext`` if its module is importable (it is imported lazily: it loads GL bits)."""
    try:
        from ._gl_context import RasterizeGLContext
    except ImportError:
        return None
    return RasterizeGLContext


def is_gl_context(glctx: Any) -> bool:
    if isinstance(glctx, RasterizeCudaContext):  # the common case needs no lookup of the GL class
        return False
    cls = _gl_context_class()
    return cls is not None and isinstance(glctx, cls)


def check_context_type(op: str, glctx: Any) -> None:
    if isinstance(glctx, RasterizeCudaContext):
        return
    gl = _gl_context_class()
    _checks.require(
        gl is not None and isinstance(glctx, gl), op,
        f"glctx must be a RasterizeCudaContext or RasterizeGLContext, got {type(glctx).__name__}",
    )


def _passes_checks_fast(glctx: Any, pos: Any, tri: Any, ranges: Any, grad_db: Any) -> bool:
    """True only for arguments that certainly pass every check of ``check_rasterize_args`` except
    the resolution: the usual instanced-mode call on the context's CUDA device. It costs a fraction
    of the full checks, which still run (and word the errors) whenever this says False."""
    if not (
        ranges is None and type(grad_db) is bool and type(pos) is Tensor and type(tri) is Tensor
        and type(glctx) is RasterizeCudaContext
    ):
        return False
    dev = pos.device
    return (
        dev.type == "cuda" and tri.device == dev and glctx.device == dev
        and pos.dtype == torch.float32 and tri.dtype == torch.int32
        and pos.dim() == 3 and tri.dim() == 2
        and pos.shape[0] > 0 and pos.shape[1] > 0 and pos.shape[2] == 4 and tri.shape[0] > 0 and tri.shape[1] == 3
        and pos.is_contiguous() and tri.is_contiguous()
    )


def check_rasterize_args(
    glctx: Any, pos: Any, tri: Any, resolution: Any, ranges: Any, grad_db: Any, op: str = _OP
) -> tuple[int, int]:
    """Python-level asserts followed by the native-style checks; returns (height, width)."""
    if _passes_checks_fast(glctx, pos, tri, ranges, grad_db):
        return _checks.normalize_resolution(op, resolution)
    check_context_type(op, glctx)
    _checks.require_bool(op, "grad_db", grad_db)
    _checks.require_tensor(op, "pos", pos)
    _checks.require_tensor(op, "tri", tri)
    if ranges is not None:
        _checks.require_tensor(op, "ranges", ranges)
    dev = _checks.check_same_device(op, pos=pos, tri=tri)
    check_context_device(op, glctx, dev)
    if ranges is not None and ranges.device.type != "cpu":
        raise RuntimeError(f"{op}(): Inputs ranges must reside on CPU (got ranges on {ranges.device})")
    _checks.check_dtype(op, torch.float32, pos=pos)
    _checks.check_dtype(op, torch.int32, tri=tri, ranges=ranges)
    _checks.check_contiguous(op, pos=pos, tri=tri, ranges=ranges)
    if pos.dim() > 2:
        _checks.check_shape(
            op, pos.dim() == 3 and pos.shape[0] > 0 and pos.shape[1] > 0 and pos.shape[2] == 4,
            "pos", "[>0, >0, 4] in instanced mode", pos,
        )
    else:
        _checks.check_shape(
            op, pos.dim() == 2 and pos.shape[0] > 0 and pos.shape[1] == 4, "pos", "[>0, 4] in range mode", pos
        )
        if ranges is None:
            raise RuntimeError(
                f"{op}(): range mode - ranges must have shape [>0, 2]: pos is 2-D {list(pos.shape)} "
                f"(range mode) but ranges was not given"
            )
        _checks.check_shape(
            op, ranges.dim() == 2 and ranges.shape[0] > 0 and ranges.shape[1] == 2,
            "ranges", "[>0, 2] in range mode", ranges,
        )
    _checks.check_tri(op, tri)
    return _checks.normalize_resolution(op, resolution)


def _forward(
    pos: Tensor,
    tri: Tensor,
    resolution: tuple[int, int],
    ranges: Optional[Tensor],
    grad_db: bool,
    prev_rast: Optional[Tensor],
    glctx: Any,
) -> tuple[Tensor, Tensor, bool]:
    """(rast, rast_db, whether gradients at rast_db are used) from the context's rasterizer."""
    if is_gl_context(glctx):
        rast, rast_db = glctx._rasterize_fwd(pos, tri, resolution, ranges, prev_rast)
        grad_db = grad_db and bool(getattr(glctx, "output_db", True)) and rast_db.shape[-1] == 4
    else:
        rast, rast_db = backend_for(pos).rasterize_fwd(pos, tri, resolution, ranges, prev_rast)
    return rast, rast_db, grad_db


class _RasterizeFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        pos: Tensor,
        tri: Tensor,
        resolution: tuple[int, int],
        ranges: Optional[Tensor],
        grad_db: bool,
        prev_rast: Optional[Tensor],
        glctx: Any,
    ) -> tuple[Tensor, Tensor]:
        rast, rast_db, grad_db = _forward(pos, tri, resolution, ranges, grad_db, prev_rast, glctx)
        ctx.save_for_backward(pos, tri, rast)
        ctx.grad_db = grad_db
        return rast, rast_db

    @staticmethod
    def backward(ctx: Any, dy: Tensor, ddb: Tensor) -> tuple[Optional[Tensor], ...]:  # type: ignore[override]
        pos, tri, rast = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        ddb_in = ddb.contiguous() if (ctx.grad_db and ddb is not None and ddb.shape[-1] == 4) else None
        grad_pos = backend_for(pos).rasterize_bwd(pos, tri, rast, dy.contiguous(), ddb_in)
        return grad_pos, None, None, None, None, None, None


def rasterize_impl(
    glctx: Any,
    pos: Tensor,
    tri: Tensor,
    resolution: tuple[int, int],
    ranges: Optional[Tensor],
    grad_db: bool,
    prev_rast: Optional[Tensor],
) -> tuple[Tensor, Tensor]:
    """Rasterize already-validated arguments (``ranges`` None in instanced mode)."""
    if pos.dim() == 3:
        ranges = None
    if not (pos.requires_grad and torch.is_grad_enabled()):
        # Nothing to differentiate: skip the autograd node (same outputs, less per-call overhead).
        rast, rast_db, _ = _forward(pos, tri, resolution, ranges, grad_db, prev_rast, glctx)
        return rast, rast_db
    return _RasterizeFunction.apply(pos, tri, resolution, ranges, grad_db, prev_rast, glctx)


def rasterize(
    glctx: Any,
    pos: Tensor,
    tri: Tensor,
    resolution: Any,
    ranges: Optional[Tensor] = None,
    grad_db: bool = True,
) -> tuple[Tensor, Tensor]:
    """Rasterize triangles into per-pixel barycentrics, depth and triangle ids.

    Args:
        glctx: a ``RasterizeCudaContext`` or ``RasterizeGLContext`` on the inputs' device.
        pos: clip-space vertex positions, float32: ``[N, V, 4]`` (instanced mode) or ``[V, 4]``
            (range mode).
        tri: int32 ``[T, 3]`` vertex indices; triangles with out-of-range indices are skipped.
        resolution: ``(height, width)`` of the output images.
        ranges: range mode only: int32 CPU ``[N, 2]`` of (first triangle, triangle count) per image.
        grad_db: if False, gradients arriving at ``rast_db`` are ignored.

    Returns:
        ``(rast, rast_db)``, both ``[N, H, W, 4]`` float32 (row 0 is the bottom row). ``rast`` holds
        (u, v, z/w, triangle id + 1), ``rast_db`` holds (du/dX, du/dY, dv/dX, dv/dY) per pixel. For a
        ``RasterizeGLContext`` with ``output_db=False``, ``rast_db`` is ``[N, H, W, 0]``.
        Only ``pos`` receives gradients (x, y, w; never z).
    """
    check_context_type(_OP, glctx)
    if glctx.active_depth_peeler is not None:
        raise RuntimeError(
            "rasterize(): Cannot call rasterize() during depth peeling operation, use rasterize_next_layer() "
            "instead (this context has an active DepthPeeler)"
        )
    res = check_rasterize_args(glctx, pos, tri, resolution, ranges, grad_db)
    return rasterize_impl(glctx, pos, tri, res, ranges, grad_db, None)
