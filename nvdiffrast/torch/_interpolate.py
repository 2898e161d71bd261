"""Public ``interpolate`` (spec §3.5, §4.2)."""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from . import _checks
from ._dispatch import backend_for

_OP = "interpolate"
MAX_DIFF_ATTRS = 32


def _normalize_diff_attrs(diff_attrs: Any, num_attrs: int) -> Optional[list[int]]:
    """None when no derivatives are requested, else channel indices (-1 = out of range → zeros)."""
    if diff_attrs is None:
        return None
    if isinstance(diff_attrs, str):
        if diff_attrs != "all":
            raise ValueError(
                f"{_OP}(): diff_attrs must be None, 'all' or a sequence of attribute indices, got {diff_attrs!r}"
            )
        return list(range(num_attrs))
    try:
        arr = np.asarray(diff_attrs, dtype=np.int32)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{_OP}(): diff_attrs must be None, 'all' or a sequence of integer attribute indices, "
            f"got {diff_attrs!r}"
        ) from exc
    _checks.require(arr.ndim == 1, _OP, f"diff_attrs must be a 1-D sequence of indices, got shape {arr.shape}")
    if arr.size == 0:
        return None
    if arr.size > MAX_DIFF_ATTRS:
        raise RuntimeError(
            f"{_OP}(): too many entries in diff_attrs list ({arr.size} given, at most {MAX_DIFF_ATTRS}); "
            f"use diff_attrs='all' for more"
        )
    out = []
    for i in arr.tolist():
        j = i + num_attrs if i < 0 else i
        out.append(j if 0 <= j < num_attrs else -1)
    return out


def _diff_attrs_truthy(diff_attrs: Any) -> bool:
    if diff_attrs is None:
        return False
    if isinstance(diff_attrs, (np.ndarray, Tensor)):
        return diff_attrs.size > 0 if isinstance(diff_attrs, np.ndarray) else diff_attrs.numel() > 0
    return bool(diff_attrs)


class _InterpolateFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        attr: Tensor,
        rast: Tensor,
        tri: Tensor,
        rast_db: Optional[Tensor],
        diff_idx: Optional[list[int]],
    ) -> tuple[Tensor, Tensor]:
        out, out_da = backend_for(attr).interpolate_fwd(attr, rast, tri, rast_db, diff_idx)
        ctx.save_for_backward(attr, rast, tri, rast_db)
        ctx.diff_idx = diff_idx
        return out, out_da

    @staticmethod
    def backward(ctx: Any, dy: Tensor, dda: Tensor) -> tuple[Optional[Tensor], ...]:  # type: ignore[override]
        attr, rast, tri, rast_db = ctx.saved_tensors
        diff_idx = ctx.diff_idx
        # The CUDA kernels read strided gradients in place (the gradient of out.sum() is an expanded view).
        dense = not attr.is_cuda
        dda_in = (dda.contiguous() if dense else dda) if diff_idx is not None else None
        g_attr, g_rast, g_db = backend_for(attr).interpolate_bwd(
            attr, rast, tri, dy.contiguous() if dense else dy, rast_db, dda_in, diff_idx
        )
        return (
            g_attr if ctx.needs_input_grad[0] else None,
            g_rast if ctx.needs_input_grad[1] else None,
            None,
            g_db if (diff_idx is not None and ctx.needs_input_grad[3]) else None,
            None,
        )


def interpolate(
    attr: Tensor,
    rast: Tensor,
    tri: Tensor,
    rast_db: Optional[Tensor] = None,
    diff_attrs: Union[None, str, Any] = None,
) -> tuple[Tensor, Tensor]:
    """Interpolate per-vertex attributes at every pixel using the rasterizer's barycentrics.

    Args:
        attr: float32 ``[V, A]`` (shared by all images) or ``[N or 1, V, A]`` (per image).
        rast: ``rast`` output of :func:`rasterize`, ``[N, H, W, 4]``.
        tri: int32 ``[T, 3]``; must number triangles as the rasterized ``tri`` did (its vertex indices
            may differ, e.g. a separate index buffer for UVs). Pixels with a triangle id beyond ``T``
            produce zeros.
        rast_db: ``rast_db`` output of :func:`rasterize`; needed when ``diff_attrs`` is given.
        diff_attrs: None, ``'all'``, or a sequence of at most 32 attribute indices (negative ones count
            from the end; out-of-range ones give zero derivatives) whose image-space derivatives to
            return.

    Returns:
        ``(out, out_da)``: ``out`` is ``[N, H, W, A]``; ``out_da`` is ``[N, H, W, 2K]`` with (d/dX, d/dY)
        per selected attribute, or ``[N, H, W, 0]`` when no derivatives were requested.
    """
    _checks.require_tensor(_OP, "attr", attr)
    _checks.require_tensor(_OP, "rast", rast)
    _checks.require_tensor(_OP, "tri", tri)
    want_db = _diff_attrs_truthy(diff_attrs)
    if want_db:
        _checks.require(
            isinstance(rast_db, Tensor), _OP,
            f"rast_db must be a tensor when diff_attrs is given (diff_attrs={diff_attrs!r}, "
            f"rast_db is {type(rast_db).__name__})",
        )
    elif rast_db is not None:
        _checks.require_tensor(_OP, "rast_db", rast_db)
    db_used = rast_db if want_db else None
    _checks.check_same_device(_OP, attr=attr, rast=rast, tri=tri, rast_db=db_used)
    _checks.check_dtype(_OP, torch.float32, attr=attr, rast=rast, rast_db=db_used)
    _checks.check_dtype(_OP, torch.int32, tri=tri)
    _checks.check_contiguous(_OP, attr=attr, rast=rast, tri=tri, rast_db=db_used)
    _checks.check_shape(
        _OP, rast.dim() == 4 and rast.shape[0] > 0 and rast.shape[1] > 0 and rast.shape[2] > 0 and rast.shape[3] == 4,
        "rast", "[>0, >0, >0, 4]", rast,
    )
    _checks.check_tri(_OP, tri)
    attr_ok = (attr.dim() == 2 and min(attr.shape) > 0) or (attr.dim() == 3 and min(attr.shape) > 0)
    _checks.check_shape(_OP, attr_ok, "attr", "[>0, >0, >0] or [>0, >0]", attr)
    if attr.dim() == 3 and attr.shape[0] not in (1, rast.shape[0]):
        raise RuntimeError(
            f"{_OP}(): minibatch size mismatch between inputs rast, attr (rast has {rast.shape[0]} images, "
            f"attr has batch {attr.shape[0]}; expected 1 or {rast.shape[0]})"
        )
    if db_used is not None:
        _checks.check_shape(
            _OP, db_used.dim() == 4 and db_used.shape[0] > 0 and db_used.shape[3] == 4, "rast_db", "[>0, >0, >0, 4]",
            db_used,
        )
        if db_used.shape[:3] != rast.shape[:3]:
            raise RuntimeError(
                f"{_OP}(): spatial size mismatch between inputs rast and rast_db "
                f"(rast {list(rast.shape)}, rast_db {list(db_used.shape)})"
            )
    diff_idx = _normalize_diff_attrs(diff_attrs, attr.shape[-1]) if want_db else None
    return _InterpolateFunction.apply(attr, rast, tri, db_used if diff_idx is not None else None, diff_idx)
