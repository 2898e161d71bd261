"""Reference antialias and topology hash (CPU, vectorized PyTorch). Spec §3.8, §3.9, §4.5.

Topology: for every triangle edge k = (tri[t, k], tri[t, (k+1) % 3]) the opposite vertex of a
neighbouring triangle sharing the unordered vertex pair, or -1 (a boundary edge). When more than two
triangles share an edge, the neighbour is the one listed first in ``tri`` among the others.
Triangles with a negative or repeated vertex index are left out, as upstream does.

Work items and blending follow §4.5. Choices where the spec leaves room: the owning triangle must
have all three w > 0 (a triangle crossing the camera plane has no meaningful projected edges, so it
contributes no item); an edge straddles the axis when its endpoints' "across" coordinates lie on
different sides of 0 with 0 counted as positive; the "same side" fold test uses the sign of the
homogeneous determinant, so a neighbour vertex behind the camera is classified consistently.
Backward: the gradient of α through the perspective division is taken by autograd on the same
expression, with the slope denominator kept at least 1e-3 pixel in magnitude.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._ids import decode_triangle_ids


class ReferenceTopology:
    """Opaque topology of ``tri`` for the reference antialias: ``opp[t, k]`` as described above."""

    def __init__(self, opp: Tensor, num_triangles: int) -> None:
        self.opp = opp
        self.num_triangles = num_triangles


def antialias_topology_hash(tri: Tensor, reuse: bool = False) -> ReferenceTopology:
    """Build the edge → opposite-vertex table (contract: ``_backend.Backend.antialias_topology_hash``;
    always a fresh build: ``reuse`` is accepted and ignored)."""
    t = tri.to(torch.int64)
    T = t.shape[0]
    usable = (t >= 0).all(1) & (t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 2] != t[:, 0])
    ea = t
    eb = t[:, [1, 2, 0]]
    opposite = t[:, [2, 0, 1]]
    lo, hi = torch.minimum(ea, eb).reshape(-1), torch.maximum(ea, eb).reshape(-1)
    entry_ok = usable[:, None].expand(T, 3).reshape(-1)
    span = int(hi.max()) + 1 if hi.numel() else 1
    key = lo * span + hi
    key = torch.where(entry_ok, key, torch.full_like(key, -1))
    order = torch.argsort(key, stable=True)
    ks = key[order]
    n = ks.numel()
    pos_ = torch.arange(n)
    new_group = torch.ones(n, dtype=torch.bool)
    new_group[1:] = ks[1:] != ks[:-1]
    group_start = torch.cummax(torch.where(new_group, pos_, torch.zeros_like(pos_)), 0).values
    nxt = (pos_ + 1).clamp(max=n - 1)
    has_second = (nxt != pos_) & (ks[nxt] == ks)
    partner = torch.where(pos_ == group_start, torch.where(has_second, nxt, pos_), group_start)
    opp_sorted = opposite.reshape(-1)[order[partner]]
    opp_sorted = torch.where((partner != pos_) & (ks >= 0), opp_sorted, torch.full_like(opp_sorted, -1))
    opp = torch.full((n,), -1, dtype=torch.int64)
    opp[order] = opp_sorted
    return ReferenceTopology(opp.view(T, 3), T)


def _items(rast: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """All neighbouring pixel pairs (flat indices p0, p1) and a 'vertical pair' flag."""
    N, H, W, _ = rast.shape
    idx = torch.arange(N * H * W).view(N, H, W)
    h0, h1 = idx[:, :, :-1].reshape(-1), idx[:, :, 1:].reshape(-1)
    v0, v1 = idx[:, :-1, :].reshape(-1), idx[:, 1:, :].reshape(-1)
    vert = torch.cat([torch.zeros_like(h0, dtype=torch.bool), torch.ones_like(v0, dtype=torch.bool)])
    return torch.cat([h0, v0]), torch.cat([h1, v1]), vert


def _frame(px: Tensor, py: Tensor, ox: Tensor, oy: Tensor, sgn: Tensor, vert: Tensor) -> tuple[Tensor, Tensor]:
    """Coordinates (along the axis toward the other pixel, across it) relative to the owner's center."""
    dx, dy = px - ox, py - oy
    along = torch.where(vert, dy, dx) * sgn
    across = torch.where(vert, dx, dy)
    return along, across


def _project(p: Tensor, H: int, W: int) -> tuple[Tensor, Tensor]:
    return p[..., 0] / p[..., 3] * (0.5 * W) + 0.5 * W, p[..., 1] / p[..., 3] * (0.5 * H) + 0.5 * H


def antialias_fwd(color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, topology: Any) -> tuple[Tensor, Any]:
    """Antialias CPU tensors (contract: ``_backend.Backend.antialias_fwd``)."""
    N, H, W, C = color.shape
    V = pos.shape[-2]
    T = tri.shape[0]
    ids = decode_triangle_ids(rast[..., 3]).reshape(-1)
    zval = rast[..., 2].reshape(-1)
    p0, p1, vert = _items(rast)
    differ = ids[p0] != ids[p1]
    p0, p1, vert = p0[differ], p1[differ], vert[differ]
    i0, i1 = ids[p0], ids[p1]
    has0, has1 = (i0 > 0) & (i0 <= T), (i1 > 0) & (i1 <= T)
    own1 = (~has0 & has1) | (has0 & has1 & ~(zval[p0] < zval[p1]))
    keep = has0 | has1
    p0, p1, vert, own1 = p0[keep], p1[keep], vert[keep], own1[keep]
    owner = torch.where(own1, p1, p0)
    t = ids[owner] - 1
    tv = tri[t].to(torch.int64)  # [I, 3]
    n_img = owner // (H * W)
    rows = tv + (n_img[:, None] * V if pos.dim() == 3 else 0)
    ok = ((tv >= 0) & (tv < V)).all(1)
    pflat = pos.reshape(-1, 4).to(torch.float64)
    pv = pflat[rows.clamp(0, pflat.shape[0] - 1)]  # [I, 3, 4]
    ok &= (pv[..., 3] > 0).all(1) & torch.isfinite(pv).all(2).all(1)
    sel = torch.nonzero(ok).squeeze(1)
    p0, p1, vert, own1, owner, t, tv, rows, pv = (
        p0[sel], p1[sel], vert[sel], own1[sel], owner[sel], t[sel], tv[sel], rows[sel], pv[sel]
    )
    sgn = torch.where(own1, -1.0, 1.0).to(torch.float64)
    rem = owner % (H * W)
    ox = (rem % W).to(torch.float64)[:, None] + 0.5
    oy = (rem // W).to(torch.float64)[:, None] + 0.5
    px, py = _project(pv, H, W)
    along, across = _frame(px, py, ox, oy, sgn[:, None], vert[:, None])
    nk = [1, 2, 0]
    a0, a1, c0, c1 = along, along[:, nk], across, across[:, nk]
    straddle = (c0 >= 0) != (c1 >= 0)
    den = torch.where(straddle, c0 - c1, torch.ones_like(c0))
    cross_at = torch.where(straddle, a0 + (a1 - a0) * c0 / den, torch.full_like(c0, -float("inf")))
    delta, k = cross_at.max(dim=1)
    found = torch.isfinite(delta)
    ar = torch.arange(k.numel())
    ka, kb, kc = k, (k + 1) % 3, (k + 2) % 3
    steep = (c1[ar, k] - c0[ar, k]).abs() >= (a1[ar, k] - a0[ar, k]).abs()
    in_range = (delta >= -1.0 / 16) & (delta <= 1.0 + 1.0 / 16)
    # Silhouette: no neighbour across the edge, or the neighbour folds onto the same side.
    opp = topology.opp[t, ka]
    va, vb, vc = pv[ar, ka], pv[ar, kb], pv[ar, kc]
    n_rows = opp + (n_img[sel] * V if pos.dim() == 3 else 0)
    opp_ok = (opp >= 0) & (opp < V)
    vn = pflat[torch.where(opp_ok, n_rows, torch.zeros_like(n_rows))]

    def side(q: Tensor) -> Tensor:
        m = torch.stack([va[:, [0, 1, 3]], vb[:, [0, 1, 3]], q[:, [0, 1, 3]]], dim=1)
        return torch.sign(torch.linalg.det(m)) * torch.sign(q[:, 3])

    silhouette = ~opp_ok | (side(vc) * side(vn) > 0)
    accept = found & steep & in_range & silhouette
    delta = delta.clamp(0.0, 1.0)
    alpha = sgn * (0.5 - delta)
    acc = torch.nonzero(accept & (alpha != 0)).squeeze(1)
    target = torch.where(alpha > 0, p0, p1)[acc]
    cflat = color.reshape(-1, C)
    out = cflat.clone()
    a32 = alpha[acc].to(torch.float32)
    out.index_add_(0, target, a32[:, None] * (cflat[p1[acc]] - cflat[p0[acc]]))
    work = {
        "p0": p0[acc], "p1": p1[acc], "target": target, "alpha": a32, "vert": vert[acc], "sgn": sgn[acc],
        "ox": ox[acc, 0], "oy": oy[acc, 0], "rows_a": rows[acc, ka[acc]], "rows_b": rows[acc, kb[acc]],
    }
    return out.view(N, H, W, C), work


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
    """Gradients (contract: ``_backend.Backend.antialias_bwd``)."""
    N, H, W, C = color.shape
    dyf = dy.reshape(-1, C)
    cflat = color.reshape(-1, C)
    p0, p1, target, alpha = work["p0"], work["p1"], work["target"], work["alpha"]
    g_color = dyf.clone()
    moved = alpha[:, None] * dyf[target]
    g_color.index_add_(0, p0, -moved)
    g_color.index_add_(0, p1, moved)

    dL_dalpha = (dyf[target] * (cflat[p1] - cflat[p0])).sum(1).to(torch.float64)
    live = torch.nonzero((alpha.abs() < 0.5) & (dL_dalpha != 0)).squeeze(1)
    leaf = pos.reshape(-1, 4).to(torch.float64).detach().requires_grad_(True)
    if live.numel() == 0:
        return g_color.view_as(color).contiguous(), torch.zeros_like(pos)
    with torch.enable_grad():
        va, vb = leaf[work["rows_a"][live]], leaf[work["rows_b"][live]]
        pv = torch.stack([va, vb], dim=1)
        px, py = _project(pv, H, W)
        sgn, vert = work["sgn"][live][:, None], work["vert"][live][:, None]
        along, across = _frame(px, py, work["ox"][live][:, None], work["oy"][live][:, None], sgn, vert)
        den = across[:, 0] - across[:, 1]
        den_sign = torch.where(den.detach() >= 0, 1.0, -1.0).to(den.dtype)
        den = torch.where(den.detach().abs() < 1e-3, den_sign * 1e-3, den)
        delta = along[:, 0] + (along[:, 1] - along[:, 0]) * across[:, 0] / den
        a = sgn[:, 0] * (0.5 - delta)
        loss = (a * dL_dalpha[live]).sum() * float(pos_gradient_boost)
        (gp,) = torch.autograd.grad(loss, leaf)
    gp = torch.nan_to_num(gp, nan=0.0, posinf=0.0, neginf=0.0)
    gp[:, 2] = 0.0
    return g_color.view_as(color).contiguous(), gp.view(pos.shape).float().contiguous()
