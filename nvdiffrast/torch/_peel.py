"""``DepthPeeler`` (spec §3.4): successive depth layers of the same geometry."""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

from . import _checks
from ._rasterize import check_context_type, check_rasterize_args, rasterize_impl

_OP = "DepthPeeler"


class DepthPeeler:
    """Context manager that rasterizes the same geometry layer by layer, front to back.

    The arguments are those of :func:`rasterize`. Inside ``with DepthPeeler(...) as peeler:``, each
    call of :meth:`rasterize_next_layer` returns ``(rast, rast_db)`` of the next layer: the first call
    is an ordinary rasterization; each later call keeps, per pixel, only fragments strictly farther
    than the previous layer's (pixels empty in the previous layer stay empty). While the peeler is
    active, ``rasterize()`` on the same context raises. A peeler cannot be re-entered after exit.
    """

    def __init__(
        self,
        glctx: Any,
        pos: Tensor,
        tri: Tensor,
        resolution: Any,
        ranges: Optional[Tensor] = None,
        grad_db: bool = True,
    ) -> None:
        check_context_type(_OP, glctx)
        _checks.require_bool(_OP, "grad_db", grad_db)
        _checks.require_tensor(_OP, "pos", pos)
        _checks.require_tensor(_OP, "tri", tri)
        if ranges is not None:
            _checks.require_tensor(_OP, "ranges", ranges)
        self.raster_ctx: Optional[Any] = glctx
        self.pos: Optional[Tensor] = pos
        self.tri: Optional[Tensor] = tri
        self.resolution: Any = resolution
        self.ranges: Optional[Tensor] = ranges
        self.grad_db: bool = grad_db
        self.prev_rast: Optional[Tensor] = None
        self._terminated = False

    def __enter__(self) -> DepthPeeler:
        if self._terminated or self.raster_ctx is None:
            raise RuntimeError("Cannot re-enter a terminated depth peeling operation")
        if self.raster_ctx.active_depth_peeler is not None:
            raise RuntimeError("Cannot have multiple depth peelers active simultaneously in a rasterization context")
        self.raster_ctx.active_depth_peeler = self
        self.prev_rast = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.raster_ctx is not None and self.raster_ctx.active_depth_peeler is self:
            self.raster_ctx.active_depth_peeler = None
        self.raster_ctx = None
        self.pos = self.tri = self.ranges = self.prev_rast = None
        self._terminated = True

    def rasterize_next_layer(self) -> tuple[Tensor, Tensor]:
        """Rasterize the next depth layer; returns ``(rast, rast_db)`` exactly like :func:`rasterize`."""
        _checks.require(
            self.raster_ctx is not None and self.raster_ctx.active_depth_peeler is self,
            "rasterize_next_layer",
            "the DepthPeeler is not active; call rasterize_next_layer() inside its 'with' block",
        )
        glctx = self.raster_ctx
        res = check_rasterize_args(glctx, self.pos, self.tri, self.resolution, self.ranges, self.grad_db, _OP)
        rast, rast_db = rasterize_impl(glctx, self.pos, self.tri, res, self.ranges, self.grad_db, self.prev_rast)
        self.prev_rast = rast.detach()
        return rast, rast_db
