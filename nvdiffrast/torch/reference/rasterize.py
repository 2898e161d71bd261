"""Reference rasterizer (CPU, vectorized PyTorch, float64 internally). Spec §3.3, §3.4, §4.1.

Coverage — homogeneous rasterization instead of polygon clipping. For a pixel sample (X, Y) in NDC
and a triangle with clip-space vertices pᵢ, the edge functions Aₖ(X, Y) = cross(q_j, q_l)
(qᵢ = (xᵢ − X wᵢ, yᵢ − Y wᵢ), (k, j, l) cyclic) are affine in (X, Y), and the unique point of the
triangle's plane on the pixel's ray has barycentrics Aₖ/S (S = ΣAₖ) and w = D/S with the constant
D = ΣAₖwₖ = det[x; y; w]. The pixel therefore sees the part of the triangle with w > 0 iff every
sign(D)·Aₖ ≥ 0 (Olano & Greer). Adding −1 ≤ z/w ≤ 1 for the near/far planes gives exactly the
pixels covered after clipping against the six planes −w ≤ x, y, z ≤ w (the x/y planes are the
viewport itself). No new vertices are created, so clipped shared edges stay watertight.

Fill rule — the edge coefficients (aₖ, bₖ, cₖ) of Aₖ = aₖ + bₖX + cₖY are differences of two
products, so the same edge seen from the neighbouring triangle gives exactly the negated values in
float64 and every sample gets the same, opposite signs from both sides. A sample with
sign(D)·Aₖ = 0 exactly is inside edge k iff the edge's inward normal (sign(D)·(bₖ, cₖ)) points
to larger columns, or is vertical and points to larger rows: the top-left rule in tensor index space
(the triangle to the right of a shared edge, or above a horizontal one in NDC, owns on-edge samples),
as observed for the CUDA rasterizer. No vertex snapping: coverage is decided from float64 clip-space
values, so results near edges may differ from the 1/16-pixel-snapped CUDA rasterizer.

Depth — z/w = (ΣAₖzₖ)/D is affine in (X, Y). The depth test compares z/w rounded to float32 (the
value stored in rast); the smaller wins and on an exact tie the later triangle (larger index in
``tri``) wins. Depth peeling discards fragments whose float32 z/w ≤ the previous layer's stored z/w,
so the previous winner itself is always removed and equal-depth surfaces are never separated.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._ids import decode_triangle_ids, encode_triangle_ids

_PAIR_BUDGET = 1 << 21  # (triangle, pixel) candidate pairs evaluated per vectorized step
_LOW32 = (1 << 32) - 1
_NO_KEY = torch.iinfo(torch.int64).max


def _pixel_centers(H: int, W: int) -> tuple[Tensor, Tensor]:
    X = (2.0 * torch.arange(W, dtype=torch.float64) + 1.0) / W - 1.0
    Y = (2.0 * torch.arange(H, dtype=torch.float64) + 1.0) / H - 1.0
    return X, Y


def _edge_coefficients(p: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """p: [M, 3, 4] float64 → a, b, c [M, 3] (Aₖ = aₖ + bₖX + cₖY) and D [M]."""
    x, y, w = p[..., 0], p[..., 1], p[..., 3]
    j = [1, 2, 0]
    l_ = [2, 0, 1]
    xj, yj, wj = x[:, j], y[:, j], w[:, j]
    xl, yl, wl = x[:, l_], y[:, l_], w[:, l_]
    a = xj * yl - yj * xl
    b = wl * yj - wj * yl
    c = wj * xl - wl * xj
    D = (a * w).sum(dim=1)
    return a, b, c, D


def _float32_order_key(d32: Tensor) -> Tensor:
    """Signed int64 that orders like the float32 values (|d| ≤ 1, -0 normalized beforehand)."""
    bits = d32.contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits >= 0, bits, -(bits & 0x7FFFFFFF))


def _select_triangles(
    v: Tensor, tri: Tensor, ids: Tensor
) -> tuple[Tensor, Tensor]:
    """Keep triangles with valid indices, finite vertices, and not trivially outside the frustum."""
    V = v.shape[0]
    t = tri[ids].to(torch.int64)
    ok = ((t >= 0) & (t < V)).all(dim=1)
    ids, t = ids[ok], t[ok]
    p = v[t]  # [M, 3, 4]
    x, y, z, w = p.unbind(-1)
    ok = torch.isfinite(p).all(dim=2).all(dim=1)
    ok &= ~(w <= 0).all(dim=1)
    for comp in (x, y, z):
        ok &= ~(comp > w).all(dim=1) & ~(comp < -w).all(dim=1)
    return ids[ok], p[ok]


def _bounding_boxes(p: Tensor, H: int, W: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Inclusive pixel bounds (c0, c1, r0, r1); the whole viewport if a vertex has w ≤ 0."""
    x, y, w = p[..., 0], p[..., 1], p[..., 3]
    front = (w > 0).all(dim=1)
    ws = torch.where(w > 0, w, torch.ones_like(w))
    px = (x / ws + 1.0) * (0.5 * W) - 0.5
    py = (y / ws + 1.0) * (0.5 * H) - 0.5
    c0 = torch.floor(px.min(dim=1).values).clamp(0, W - 1)
    c1 = torch.ceil(px.max(dim=1).values).clamp(-1, W - 1)
    r0 = torch.floor(py.min(dim=1).values).clamp(0, H - 1)
    r1 = torch.ceil(py.max(dim=1).values).clamp(-1, H - 1)
    c0 = torch.where(front, c0, torch.zeros_like(c0)).long()
    c1 = torch.where(front, c1, torch.full_like(c1, W - 1)).long()
    r0 = torch.where(front, r0, torch.zeros_like(r0)).long()
    r1 = torch.where(front, r1, torch.full_like(r1, H - 1)).long()
    return c0, c1, r0, r1


def _inside(a: Tensor, b: Tensor, c: Tensor, s: Tensor, X: Tensor, Y: Tensor) -> Tensor:
    """Per pair, all three edges pass (strictly inside, or on the edge with the top-left rule)."""
    sa, sb, sc = a * s, b * s, c * s
    A = sa + sb * X + sc * Y
    tie_ok = (sb > 0) | ((sb == 0) & (sc > 0))
    return ((A > 0) | ((A == 0) & tie_ok)).all(dim=1)


def _raster_image(
    v: Tensor, tri: Tensor, ids: Tensor, H: int, W: int, prev: Optional[Tensor]
) -> tuple[Tensor, Tensor]:
    """One image. v [V, 4] float64; tri [T, 3] int32; ids: candidate triangle indices in ascending order.
    Returns rast [H, W, 4], rast_db [H, W, 4] (float32)."""
    rast = torch.zeros(H * W, 4, dtype=torch.float32)
    db = torch.zeros(H * W, 4, dtype=torch.float32)
    ids, p = _select_triangles(v, tri, ids)
    if ids.numel() == 0:
        return rast.view(H, W, 4), db.view(H, W, 4)
    a, b, c, D = _edge_coefficients(p)
    keep = D != 0  # zero (homogeneous) area: degenerate or seen edge-on
    ids, p, a, b, c, D = ids[keep], p[keep], a[keep], b[keep], c[keep], D[keep]
    if ids.numel() == 0:
        return rast.view(H, W, 4), db.view(H, W, 4)
    z = p[..., 2]
    dz = torch.stack([(a * z).sum(1), (b * z).sum(1), (c * z).sum(1)], dim=1) / D[:, None]
    s = torch.sign(D)[:, None]
    Xs, Ys = _pixel_centers(H, W)
    if prev is not None:
        prev_alive = decode_triangle_ids(prev[..., 3]).reshape(-1) > 0
        prev_z = prev[..., 2].reshape(-1).float()

    c0, c1, r0, r1 = _bounding_boxes(p, H, W)
    bw = (c1 - c0 + 1).clamp(min=0)
    bh = (r1 - r0 + 1).clamp(min=0)
    area = bw * bh
    cum = torch.cumsum(area, 0)
    best = torch.full((H * W,), _NO_KEY, dtype=torch.int64)
    M = ids.numel()
    start = 0
    while start < M:
        base = int(cum[start - 1]) if start > 0 else 0
        end = int(torch.searchsorted(cum, torch.tensor(base + _PAIR_BUDGET), right=True))
        end = min(max(end, start + 1), M)
        sel = torch.arange(start, end)
        cnt = area[sel]
        total = int(cnt.sum())
        start = end
        if total == 0:
            continue
        tl = torch.repeat_interleave(sel, cnt)  # local triangle index per pair
        offs = torch.arange(total) - torch.repeat_interleave(cum[sel] - cnt - base, cnt)
        col = c0[tl] + offs % bw[tl]
        row = r0[tl] + offs // bw[tl]
        X, Y = Xs[col][:, None], Ys[row][:, None]
        cov = _inside(a[tl], b[tl], c[tl], s[tl], X, Y)
        tl, col, row, X, Y = tl[cov], col[cov], row[cov], X[cov], Y[cov]
        d = dz[tl, 0] + dz[tl, 1] * X[:, 0] + dz[tl, 2] * Y[:, 0]
        ok = (d >= -1.0) & (d <= 1.0)
        tl, col, row, d = tl[ok], col[ok], row[ok], d[ok]
        pix = row * W + col
        d32 = d.float() + 0.0
        if prev is not None:
            ok = prev_alive[pix] & (d32 > prev_z[pix])
            tl, pix, d32 = tl[ok], pix[ok], d32[ok]
        key = _float32_order_key(d32) * (1 << 32) + (_LOW32 - tl)
        best.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)

    pix = torch.nonzero(best != _NO_KEY).squeeze(1)
    if pix.numel() == 0:
        return rast.view(H, W, 4), db.view(H, W, 4)
    tl = _LOW32 - (best[pix] & _LOW32)
    X, Y = Xs[pix % W], Ys[pix // W]
    ak, bk, ck = a[tl], b[tl], c[tl]
    A = ak + bk * X[:, None] + ck * Y[:, None]
    S = A.sum(1)
    u, vv = A[:, 0] / S, A[:, 1] / S
    sb, sc = bk.sum(1), ck.sum(1)
    dudx = (bk[:, 0] - u * sb) / S * (2.0 / W)
    dudy = (ck[:, 0] - u * sc) / S * (2.0 / H)
    dvdx = (bk[:, 1] - vv * sb) / S * (2.0 / W)
    dvdy = (ck[:, 1] - vv * sc) / S * (2.0 / H)
    d = (dz[tl, 0] + dz[tl, 1] * X + dz[tl, 2] * Y).clamp(-1.0, 1.0)
    uc, vc = u.clamp(0.0, 1.0), vv.clamp(0.0, 1.0)
    scale = torch.clamp(uc + vc, min=1.0)
    rast[pix, 0] = (uc / scale).float()
    rast[pix, 1] = (vc / scale).float()
    rast[pix, 2] = d.float()
    rast[pix, 3] = encode_triangle_ids(ids[tl] + 1)
    db[pix] = torch.stack([dudx, dudy, dvdx, dvdy], dim=1).float()
    return rast.view(H, W, 4), db.view(H, W, 4)


def _image_triangles(tri_count: int, ranges: Optional[Tensor], n: int) -> Tensor:
    if ranges is None:
        return torch.arange(tri_count)
    first, count = int(ranges[n, 0]), int(ranges[n, 1])
    lo, hi = max(first, 0), min(first + max(count, 0), tri_count)
    return torch.arange(lo, max(hi, lo))


def rasterize_fwd(
    pos: Tensor,
    tri: Tensor,
    resolution: tuple[int, int],
    ranges: Optional[Tensor],
    prev_rast: Optional[Tensor],
) -> tuple[Tensor, Tensor]:
    """Rasterize CPU tensors (contract: ``_backend.Backend.rasterize_fwd``)."""
    H, W = int(resolution[0]), int(resolution[1])
    pos64 = pos.to(torch.float64)
    N = pos.shape[0] if ranges is None else ranges.shape[0]
    rasts, dbs = [], []
    for n in range(N):
        v = pos64[n] if ranges is None else pos64
        prev = None if prev_rast is None else prev_rast[n]
        r, d = _raster_image(v, tri, _image_triangles(tri.shape[0], ranges, n), H, W, prev)
        rasts.append(r)
        dbs.append(d)
    return torch.stack(rasts).contiguous(), torch.stack(dbs).contiguous()


def rasterize_bwd(pos: Tensor, tri: Tensor, rast: Tensor, dy: Tensor, ddb: Optional[Tensor]) -> Tensor:
    """Gradient w.r.t. pos (contract: ``_backend.Backend.rasterize_bwd``; spec §4.1).

    Differentiates u = A₀/Ŝ, v = A₁/Ŝ (Ŝ = S + 1e-6·sign(S), unclamped) and, when ``ddb`` is given,
    the four rast_db channels, w.r.t. x, y, w of the pixel's triangle; z gets no gradient.
    """
    N, H, W, _ = rast.shape
    V = pos.shape[-2]
    T = tri.shape[0]
    ids = decode_triangle_ids(rast[..., 3]).reshape(-1)
    live = (ids > 0) & (ids <= T)
    g = dy[..., :2].reshape(-1, 2).to(torch.float64)
    nonzero = (g != 0).any(dim=1)
    gdb = None
    if ddb is not None:
        gdb = ddb.reshape(-1, 4).to(torch.float64)
        nonzero |= (gdb != 0).any(dim=1)
    pix = torch.nonzero(live & nonzero).squeeze(1)
    grad = torch.zeros(pos.shape, dtype=torch.float64)
    if pix.numel() == 0:
        return grad.float()
    t = tri[ids[pix] - 1].to(torch.int64)  # [P, 3]
    ok = ((t >= 0) & (t < V)).all(dim=1)
    pix, t = pix[ok], t[ok]
    n = pix // (H * W)
    rem = pix % (H * W)
    Xs, Ys = _pixel_centers(H, W)
    X, Y = Xs[rem % W][:, None], Ys[rem // W][:, None]
    flat = t + (n[:, None] * V if pos.dim() == 3 else 0)
    leaf = pos.to(torch.float64).reshape(-1, 4).detach().requires_grad_(True)
    with torch.enable_grad():
        p = leaf[flat]  # [P, 3, 4]
        x, y, w = p[..., 0], p[..., 1], p[..., 3]
        qx, qy = x - X * w, y - Y * w
        j, l_ = [1, 2, 0], [2, 0, 1]
        A = qx[:, j] * qy[:, l_] - qy[:, j] * qx[:, l_]
        S = A.sum(1)
        S = S + 1e-6 * torch.sign(S).detach()
        u, v = A[:, 0] / S, A[:, 1] / S
        loss = (g[pix, 0] * u + g[pix, 1] * v).sum()
        if gdb is not None:
            b = w[:, l_] * y[:, j] - w[:, j] * y[:, l_]
            c = w[:, j] * x[:, l_] - w[:, l_] * x[:, j]
            sb, sc = b.sum(1), c.sum(1)
            chans = [
                (b[:, 0] - u * sb) / S * (2.0 / W),
                (c[:, 0] - u * sc) / S * (2.0 / H),
                (b[:, 1] - v * sb) / S * (2.0 / W),
                (c[:, 1] - v * sc) / S * (2.0 / H),
            ]
            loss = loss + (gdb[pix] * torch.stack(chans, dim=1)).sum()
        (gp,) = torch.autograd.grad(loss, leaf)
    gp = torch.nan_to_num(gp, nan=0.0, posinf=0.0, neginf=0.0)
    gp[:, 2] = 0.0
    return gp.reshape(pos.shape).float().contiguous()
