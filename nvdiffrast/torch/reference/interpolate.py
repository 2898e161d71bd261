"""Reference interpolate (CPU, vectorized PyTorch). Spec §3.5, §4.2.

The forward is written once as a differentiable expression of (attr, u, v, rast_db); the backward
re-evaluates it with autograd, which yields exactly the adjoint formulas of §4.2 (scatter-add into
the attribute rows, gradients only to rast channels 0–1 and to rast_db). Pixels whose triangle id is
0 or beyond ``tri``, or whose triangle has a vertex index outside ``attr``, produce zeros.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .._ids import decode_triangle_ids


def _pixel_vertices(attr: Tensor, rast: Tensor, tri: Tensor) -> tuple[Tensor, Tensor]:
    """Covered pixels (flat index into N*H*W) and, per pixel, the 3 flat rows of attr [P, 3]."""
    N, H, W, _ = rast.shape
    V = attr.shape[-2]
    T = tri.shape[0]
    ids = decode_triangle_ids(rast[..., 3]).reshape(-1)
    pix = torch.nonzero((ids > 0) & (ids <= T)).squeeze(1)
    t = tri[ids[pix] - 1].to(torch.int64)
    ok = ((t >= 0) & (t < V)).all(dim=1)
    pix, t = pix[ok], t[ok]
    if attr.dim() == 3 and attr.shape[0] > 1:
        t = t + (pix // (H * W))[:, None] * V
    return pix, t


def _evaluate(
    attr: Tensor,
    rast: Tensor,
    rast_db: Optional[Tensor],
    pix: Tensor,
    rows: Tensor,
    diff_idx: Optional[Sequence[int]],
) -> tuple[Tensor, Optional[Tensor]]:
    """Values at covered pixels: out [P, A] and derivatives [P, 2K] (or None)."""
    A = attr.shape[-1]
    a = attr.reshape(-1, A)[rows]  # [P, 3, A]
    r = rast.reshape(-1, 4)[pix]
    u, v = r[:, 0:1], r[:, 1:2]
    d0, d1 = a[:, 0] - a[:, 2], a[:, 1] - a[:, 2]
    out = a[:, 2] + u * d0 + v * d1
    if diff_idx is None:
        return out, None
    db = rast_db.reshape(-1, 4)[pix]
    idx = torch.tensor(list(diff_idx), dtype=torch.int64)
    valid = (idx >= 0).to(attr.dtype)
    sel = idx.clamp(min=0)
    e0, e1 = d0[:, sel] * valid, d1[:, sel] * valid  # [P, K]
    dx = e0 * db[:, 0:1] + e1 * db[:, 2:3]
    dy = e0 * db[:, 1:2] + e1 * db[:, 3:4]
    return out, torch.stack([dx, dy], dim=2).reshape(len(pix), 2 * len(idx))


def interpolate_fwd(
    attr: Tensor,
    rast: Tensor,
    tri: Tensor,
    rast_db: Optional[Tensor],
    diff_idx: Optional[Sequence[int]],
) -> tuple[Tensor, Tensor]:
    """Interpolate CPU tensors (contract: ``_backend.Backend.interpolate_fwd``)."""
    N, H, W, _ = rast.shape
    A = attr.shape[-1]
    K = 0 if diff_idx is None else len(diff_idx)
    out = torch.zeros(N * H * W, A, dtype=torch.float32)
    out_da = torch.zeros(N * H * W, 2 * K, dtype=torch.float32)
    pix, rows = _pixel_vertices(attr, rast, tri)
    vals, ders = _evaluate(attr, rast, rast_db, pix, rows, diff_idx)
    out[pix] = vals
    if ders is not None and K > 0:
        out_da[pix] = ders
    return out.view(N, H, W, A), out_da.view(N, H, W, 2 * K)


def interpolate_bwd(
    attr: Tensor,
    rast: Tensor,
    tri: Tensor,
    dy: Tensor,
    rast_db: Optional[Tensor],
    dda: Optional[Tensor],
    diff_idx: Optional[Sequence[int]],
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Gradients (contract: ``_backend.Backend.interpolate_bwd``)."""
    N, H, W, _ = rast.shape
    A = attr.shape[-1]
    pix, rows = _pixel_vertices(attr, rast, tri)
    with_db = diff_idx is not None and rast_db is not None
    attr_l = attr.detach().requires_grad_(True)
    rast_l = rast.detach().requires_grad_(True)
    db_l = rast_db.detach().requires_grad_(True) if with_db else None
    with torch.enable_grad():
        vals, ders = _evaluate(attr_l, rast_l, db_l, pix, rows, diff_idx if with_db else None)
        loss = (vals * dy.reshape(-1, A)[pix]).sum()
        if ders is not None and dda is not None and ders.shape[1] > 0:
            loss = loss + (ders * dda.reshape(-1, dda.shape[-1])[pix]).sum()
        leaves = [attr_l, rast_l] + ([db_l] if with_db else [])
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    g_attr = grads[0] if grads[0] is not None else torch.zeros_like(attr)
    g_rast = grads[1] if grads[1] is not None else torch.zeros_like(rast)
    g_db = None
    if with_db:
        g_db = grads[2] if grads[2] is not None else torch.zeros_like(rast_db)
    return g_attr.contiguous(), g_rast.contiguous(), None if g_db is None else g_db.contiguous()
