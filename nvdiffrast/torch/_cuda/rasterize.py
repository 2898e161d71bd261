"""CUDA backend adapters for rasterization (contract: ``nvdiffrast.torch._backend``).

The forward pass is deterministic. The backward pass scatters into ``pos`` with float atomics,
except when ``torch.are_deterministic_algorithms_enabled()``: then the kernel writes per-pixel
contributions and a deterministic indexed accumulation sums them.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ... import _loader


def _ops():  # noqa: ANN202 - torch.ops namespace object
    _loader.load_cuda()
    return torch.ops.nvdiffrast


_fwd_op: Optional[Callable[..., tuple[Tensor, Tensor]]] = None


def _fwd() -> Callable[..., tuple[Tensor, Tensor]]:
    """The forward op's overload, looked up once: this path is latency bound for small jobs."""
    global _fwd_op
    if _fwd_op is None:
        _fwd_op = _ops().rasterize_fwd.default
    return _fwd_op


def rasterize_fwd(
    pos: Tensor,
    tri: Tensor,
    resolution: tuple[int, int],
    ranges: Optional[Tensor],
    prev_rast: Optional[Tensor],
) -> tuple[Tensor, Tensor]:
    """Rasterize ``tri`` with clip-space ``pos`` into (rast, rast_db), each [N, H, W, 4].

    ``ranges`` (CPU int32 [N, 2]) selects range mode when ``pos`` is 2-D; ``prev_rast`` is the
    previous depth-peeling layer (fragments at or in front of its depth are discarded).
    """
    height, width = int(resolution[0]), int(resolution[1])
    if height <= 0 or width <= 0:
        raise RuntimeError(f"rasterize_fwd(): resolution must be [>0, >0], got [{height}, {width}]")
    rast, rast_db = _fwd()(pos, tri, height, width, ranges if pos.dim() == 2 else None, prev_rast)
    return rast, rast_db


def rasterize_bwd(pos: Tensor, tri: Tensor, rast: Tensor, dy: Tensor, ddb: Optional[Tensor]) -> Tensor:
    """Gradient w.r.t. ``pos`` (z component 0) from dL/drast and, if given, dL/drast_db."""
    ops = _ops()
    dy = dy.contiguous()
    ddb = ddb.contiguous() if ddb is not None else None
    if not torch.are_deterministic_algorithms_enabled():
        return ops.rasterize_bwd(pos, tri, rast, dy, ddb)
    vals, rows = ops.rasterize_bwd_contrib(pos, tri, rast, dy, ddb)
    rows = rows.reshape(-1)
    vals = vals.reshape(-1, 3)
    keep = rows >= 0
    acc = torch.zeros(pos.numel() // 4, 3, dtype=pos.dtype, device=pos.device)
    # index_add_ on CUDA is one of torch's ops with a deterministic implementation under this mode.
    acc.index_add_(0, rows[keep], vals[keep])
    grad = torch.zeros_like(pos)
    flat = grad.view(-1, 4)
    flat[:, 0:2] = acc[:, 0:2]
    flat[:, 3] = acc[:, 2]
    return grad
