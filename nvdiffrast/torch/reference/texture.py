"""CPU reference of ``texture`` (spec §3.6, §4.3, §4.4): forward and explicit backward.

Every pixel is a row of a flat batch of P = N*h*w samples. A bilinear lookup is described by four
*taps* per pixel: flat texel indices into the level viewed as ``[texels, C]``, the weights, and the
weights' derivatives with respect to the face/texture coordinates s and t. Forward, texture
gradients and uv gradients are all written with the same taps, so they agree by construction.
The only Python loop runs over mip levels (at most 17), never over pixels.

Cube maps: a tap that leaves its face is mapped to the adjacent face by re-projecting the texel
centre (extended past the edge of the face plane) onto the cube; that picks the neighbour with the
right orientation for every one of the 24 face edges without a hand-written table. A tap that leaves
the face in both directions is the missing cube corner: its weight is split evenly over the other
three taps (its value is their average, so its gradient is split likewise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

# Per face (+X, -X, +Y, -Y, +Z, -Z): major axis k, its sign, the axis and sign read by s, the axis and
# sign read by t, so that s = 1/2 + sign_s * d[axis_s] / (2 m) and t likewise, m = |d[k]| (spec §4.4).
_FACES = torch.tensor(
    [
        [0, 1, 2, -1, 1, -1],
        [0, -1, 2, 1, 1, -1],
        [1, 1, 0, 1, 2, 1],
        [1, -1, 0, 1, 2, -1],
        [2, 1, 0, 1, 1, -1],
        [2, -1, 0, -1, 1, -1],
    ],
    dtype=torch.long,
)

_MIP_MODES = ("linear-mipmap-nearest", "linear-mipmap-linear")


# ------------------------------------------------------------------------------------- cube geometry
def select_face(d: Tensor) -> Tensor:
    """Cube face index per direction ``d [..., 3]`` with the spec's tie rules (X over Y over Z)."""
    a = d.abs()
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    is_z = az > torch.maximum(ax, ay)
    is_y = ~is_z & (ay > ax)
    k = torch.where(is_z, 2, torch.where(is_y, 1, 0))
    major = torch.gather(d, -1, k.unsqueeze(-1)).squeeze(-1)
    return 2 * k + (major < 0).long()


def _face_consts(face: Tensor, dtype: torch.dtype) -> tuple[Tensor, ...]:
    tab = _FACES.to(face.device)[face]
    k, sig, ia, sa, it, ta = tab.unbind(-1)
    return k, sig.to(dtype), ia, sa.to(dtype), it, ta.to(dtype)


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    return torch.gather(x, -1, idx.unsqueeze(-1)).squeeze(-1)


def project(d: Tensor, face: Tensor) -> tuple[Tensor, Tensor]:
    """Unclamped face coordinates (s, t) of directions ``d [P, 3]`` on the given faces (differentiable)."""
    k, sig, ia, sa, it, ta = _face_consts(face, d.dtype)
    m = sig * _gather(d, k)
    s = 0.5 + sa * _gather(d, ia) / (2.0 * m)
    t = 0.5 + ta * _gather(d, it) / (2.0 * m)
    return s, t


def _face_jacobian(d: Tensor, da: Tensor, face: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(ds/dX, ds/dY, dt/dX, dt/dY) from the direction ``d [P,3]`` and its screen derivatives
    ``da [P,6]`` = (dx/dX, dx/dY, dy/dX, dy/dY, dz/dX, dz/dY), through the face projection."""
    k, sig, ia, sa, it, ta = _face_consts(face, d.dtype)
    m = sig * _gather(d, k)
    p = sa * _gather(d, ia)
    q = ta * _gather(d, it)
    dX, dY = da[:, 0::2], da[:, 1::2]
    inv = 1.0 / (2.0 * m)
    inv2 = sig / (2.0 * m * m)
    sX = sa * _gather(dX, ia) * inv - p * _gather(dX, k) * inv2
    sY = sa * _gather(dY, ia) * inv - p * _gather(dY, k) * inv2
    tX = ta * _gather(dX, it) * inv - q * _gather(dX, k) * inv2
    tY = ta * _gather(dY, it) * inv - q * _gather(dY, k) * inv2
    return sX, sY, tX, tY


# ----------------------------------------------------------------------------------- level of detail
def lod_from_jacobian(sX: Tensor, sY: Tensor, tX: Tensor, tY: Tensor, width: int, height: int) -> Tensor:
    """lambda = log2 of the largest singular value of the texel-space footprint Jacobian (spec §4.3)."""
    ax, bx, ay, by = width * sX, height * tX, width * sY, height * tY
    a = ax * ax + bx * bx
    b = ay * ay + by * by
    c = ax * ay + bx * by
    hd = 0.5 * (a - b)
    s2 = 0.5 * (a + b) + torch.sqrt(hd * hd + c * c)
    return 0.5 * torch.log2(s2)


def lod_jacobian_grad(
    sX: Tensor, sY: Tensor, tX: Tensor, tY: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """d lambda / d(sX, sY, tX, tY) in closed form; non-finite terms (no unique major axis, zero
    footprint) become 0, which at an isotropic footprint gives the mean of the one-sided derivatives."""
    ax, bx, ay, by = width * sX, height * tX, width * sY, height * tY
    a = ax * ax + bx * bx
    b = ay * ay + by * by
    c = ax * ay + bx * by
    hd = 0.5 * (a - b)
    root = torch.sqrt(hd * hd + c * c)
    s2 = 0.5 * (a + b) + root
    r = torch.nan_to_num(hd / root, nan=0.0, posinf=0.0, neginf=0.0)
    rc = torch.nan_to_num(c / root, nan=0.0, posinf=0.0, neginf=0.0)
    d_a, d_b, d_c = 0.5 + 0.5 * r, 0.5 - 0.5 * r, rc
    scale = 0.5 / (math.log(2.0) * s2)
    g_ax = scale * (d_a * 2.0 * ax + d_c * ay)
    g_bx = scale * (d_a * 2.0 * bx + d_c * by)
    g_ay = scale * (d_b * 2.0 * ay + d_c * ax)
    g_by = scale * (d_b * 2.0 * by + d_c * bx)

    def fin(x: Tensor) -> Tensor:
        return torch.where(torch.isfinite(x), x, torch.zeros_like(x))

    return fin(width * g_ax), fin(width * g_ay), fin(height * g_bx), fin(height * g_by)


# ------------------------------------------------------------------------------------------- taps
@dataclass
class _Taps:
    idx: Tensor  # [M, 4] flat texel index into the level viewed as [texels, C]
    w: Tensor  # [M, 4] weight
    ws: Tensor  # [M, 4] d weight / d s
    wt: Tensor  # [M, 4] d weight / d t


def _bilinear(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    gx, gy = 1.0 - fx, 1.0 - fy
    w = torch.stack([gx * gy, fx * gy, gx * fy, fx * fy], -1)
    wx = torch.stack([-gy, gy, -fy, fy], -1)
    wy = torch.stack([-gx, -fx, gx, fx], -1)
    j0, i0 = x0.long(), y0.long()
    col = torch.stack([j0, j0 + 1, j0, j0 + 1], -1)
    row = torch.stack([i0, i0, i0 + 1, i0 + 1], -1)
    return col, row, w, wx, wy


def _taps_2d(s: Tensor, t: Tensor, bt: Tensor, width: int, height: int, boundary: str) -> _Taps:
    if boundary == "wrap":
        s = s - torch.floor(s)  # derivative of the fractional part taken as 1
        t = t - torch.floor(t)
    x = s * width - 0.5
    y = t * height - 0.5
    gx = torch.full_like(x, float(width))
    gy = torch.full_like(y, float(height))
    if boundary == "clamp":
        gx = torch.where((x < 0) | (x > width - 1), torch.zeros_like(gx), gx)
        gy = torch.where((y < 0) | (y > height - 1), torch.zeros_like(gy), gy)
        x = x.clamp(0.0, float(width - 1))
        y = y.clamp(0.0, float(height - 1))
    elif boundary == "zero":
        # Far outside every tap is outside; bounding keeps the integer conversion defined.
        x = x.clamp(-2.0, float(width + 1))
        y = y.clamp(-2.0, float(height + 1))
    col, row, w, wx, wy = _bilinear(x, y)
    if boundary == "wrap":
        col, row = torch.remainder(col, width), torch.remainder(row, height)
    elif boundary == "clamp":
        col, row = col.clamp(0, width - 1), row.clamp(0, height - 1)
    else:
        inside = ((col >= 0) & (col < width) & (row >= 0) & (row < height)).to(w.dtype)
        w, wx, wy = w * inside, wx * inside, wy * inside
        col, row = col.clamp(0, width - 1), row.clamp(0, height - 1)
    idx = (bt.unsqueeze(-1) * height + row) * width + col
    return _Taps(idx, w, wx * gx.unsqueeze(-1), wy * gy.unsqueeze(-1))


def _taps_cube(face: Tensor, s: Tensor, t: Tensor, bt: Tensor, size: int) -> _Taps:
    x = s * size - 0.5
    y = t * size - 0.5
    col, row, w, wx, wy = _bilinear(x, y)
    fc = face.unsqueeze(-1).expand_as(col).clone()
    out_c = (col < 0) | (col >= size)
    out_r = (row < 0) | (row >= size)
    corner = out_c & out_r
    edge = out_c ^ out_r
    if bool(edge.any()):
        # Re-project the texel centre, continued past the face edge, onto the cube (float64 so that the
        # floor below is exact for every side up to 65536).
        ef = fc[edge]
        k, sig, ia, sa, it, ta = _face_consts(ef, torch.float64)
        sc = (col[edge].double() + 0.5) / size
        tc = (row[edge].double() + 0.5) / size
        d = torch.zeros(ef.shape[0], 3, dtype=torch.float64, device=face.device)
        d.scatter_(1, k.unsqueeze(1), sig.unsqueeze(1))
        d.scatter_(1, ia.unsqueeze(1), (sa * (2.0 * sc - 1.0)).unsqueeze(1))
        d.scatter_(1, it.unsqueeze(1), (ta * (2.0 * tc - 1.0)).unsqueeze(1))
        nf = select_face(d)
        ns, nt = project(d, nf)
        fc[edge] = nf
        col[edge] = torch.floor(ns * size).long().clamp(0, size - 1)
        row[edge] = torch.floor(nt * size).long().clamp(0, size - 1)
    # The corner tap's value is the mean of the other three: move a third of its weight to each.
    cf = corner.to(w.dtype)
    keep = 1.0 - cf

    def fold(v: Tensor) -> Tensor:
        return (v + (v * cf).sum(-1, keepdim=True) / 3.0) * keep

    w, wx, wy = fold(w), fold(wx), fold(wy)
    col, row = col.clamp(0, size - 1), row.clamp(0, size - 1)
    idx = ((bt.unsqueeze(-1) * 6 + fc) * size + row) * size + col
    return _Taps(idx, w, wx * float(size), wy * float(size))


# ------------------------------------------------------------------------------------- geometry
@dataclass
class _Geom:
    n: int
    h: int
    w: int
    cube: bool
    boundary: str
    s: Tensor  # [P] texture / face coordinates (cube: clamped to [0, 1])
    t: Tensor
    valid: Tensor  # [P] bool
    bt: Tensor  # [P] texture batch index
    face: Optional[Tensor]  # [P] (cube)
    d: Optional[Tensor]  # [P, 3] (cube)


def _geometry(levels: Sequence[Tensor], uv: Tensor, boundary: str) -> _Geom:
    n, h, w = uv.shape[:3]
    p = n * h * w
    cube = boundary == "cube"
    tb = levels[0].shape[0]
    if tb == 1:
        bt = torch.zeros(p, dtype=torch.long, device=uv.device)
    else:
        bt = torch.arange(n, device=uv.device).repeat_interleave(h * w)
    if cube:
        d = uv.reshape(p, 3)
        face = select_face(d)
        s, t = project(d, face)
        valid = torch.isfinite(s) & torch.isfinite(t)
        s = torch.where(valid, s, torch.full_like(s, 0.5)).clamp(0.0, 1.0)
        t = torch.where(valid, t, torch.full_like(t, 0.5)).clamp(0.0, 1.0)
        return _Geom(n, h, w, True, boundary, s, t, valid, bt, face, d)
    st = uv.reshape(p, 2)
    s, t = st[:, 0], st[:, 1]
    valid = torch.isfinite(s) & torch.isfinite(t)
    s = torch.where(valid, s, torch.zeros_like(s))
    t = torch.where(valid, t, torch.zeros_like(t))
    return _Geom(n, h, w, False, boundary, s, t, valid, bt, None, None)


def _level_hw(level: Tensor, cube: bool) -> tuple[int, int]:
    return (level.shape[2], level.shape[3]) if cube else (level.shape[1], level.shape[2])


def _taps(level: Tensor, g: _Geom, sel: Tensor) -> _Taps:
    hh, ww = _level_hw(level, g.cube)
    if g.cube:
        assert g.face is not None
        return _taps_cube(g.face[sel], g.s[sel], g.t[sel], g.bt[sel], ww)
    return _taps_2d(g.s[sel], g.t[sel], g.bt[sel], ww, hh, g.boundary)


def _nearest_index(level: Tensor, g: _Geom) -> tuple[Tensor, Tensor]:
    """Flat texel index and inside-mask for 'nearest' (base level only)."""
    hh, ww = _level_hw(level, g.cube)
    s, t = g.s, g.t
    if g.boundary == "wrap":
        s, t = s - torch.floor(s), t - torch.floor(t)
    x = (s * ww).clamp(-1.0, float(ww))
    y = (t * hh).clamp(-1.0, float(hh))
    col, row = torch.floor(x).long(), torch.floor(y).long()
    ok = g.valid.clone()
    if g.boundary == "zero":
        ok &= (col >= 0) & (col < ww) & (row >= 0) & (row < hh)
    col, row = col.clamp(0, ww - 1), row.clamp(0, hh - 1)
    if g.cube:
        assert g.face is not None
        idx = ((g.bt * 6 + g.face) * hh + row) * ww + col
    else:
        idx = (g.bt * hh + row) * ww + col
    return idx, ok


# ------------------------------------------------------------------------------------ mip level
@dataclass
class _Lod:
    raw: Tensor  # [P] unclamped lambda (after bias)
    lo: Tensor  # [P] long, level floor(lambda)
    hi: Tensor  # [P] long, level min(floor(lambda) + 1, L)
    frac: Tensor  # [P]


def _lod(levels: Sequence[Tensor], g: _Geom, uv_da: Optional[Tensor], bias: Optional[Tensor]) -> _Lod:
    last = len(levels) - 1
    p = g.s.shape[0]
    hh, ww = _level_hw(levels[0], g.cube)
    if uv_da is not None:
        if g.cube:
            assert g.d is not None and g.face is not None
            sX, sY, tX, tY = _face_jacobian(g.d, uv_da.reshape(p, 6), g.face)
        else:
            sX, sY, tX, tY = uv_da.reshape(p, 4).unbind(-1)
        raw = lod_from_jacobian(sX, sY, tX, tY, ww, hh)
    else:
        raw = torch.zeros(p, dtype=g.s.dtype, device=g.s.device)
    if bias is not None:
        raw = raw + bias.reshape(p)
    lam = torch.nan_to_num(raw, nan=0.0, posinf=float(last), neginf=0.0).clamp(0.0, float(last))
    lo = torch.floor(lam)
    frac = lam - lo
    lo_i = lo.long()
    hi_i = (lo_i + 1).clamp(max=last)
    return _Lod(raw, lo_i, hi_i, frac)


def _level_plan(filter_mode: str, levels: Sequence[Tensor], g: _Geom, lod: Optional[_Lod]):
    """Yield (level index, pixel mask, weight on that level, is-lo mask, is-hi mask) per used level."""
    if filter_mode == "linear" or lod is None:
        yield 0, g.valid, torch.ones_like(g.s), g.valid, torch.zeros_like(g.valid)
        return
    for lvl in range(len(levels)):
        is_lo = g.valid & (lod.lo == lvl)
        if filter_mode == "linear-mipmap-nearest":
            is_hi = torch.zeros_like(is_lo)
            weight = is_lo.to(g.s.dtype)
        else:
            is_hi = g.valid & (lod.hi == lvl)
            weight = (1.0 - lod.frac) * is_lo.to(g.s.dtype) + lod.frac * is_hi.to(g.s.dtype)
        sel = is_lo | is_hi
        if bool(sel.any()):
            yield lvl, sel, weight, is_lo, is_hi


# -------------------------------------------------------------------------------- forward/backward
def texture_fwd(
    levels: Sequence[Tensor],
    uv: Tensor,
    uv_da: Optional[Tensor],
    mip_level_bias: Optional[Tensor],
    filter_mode: str,
    boundary_mode: str,
) -> Tensor:
    """Sample ``levels`` at ``uv`` (see ``_backend.Backend.texture_fwd``). Returns [N, h, w, C]."""
    g = _geometry(levels, uv, boundary_mode)
    c = levels[0].shape[-1]
    p = g.s.shape[0]
    out = torch.zeros(p, c, dtype=levels[0].dtype, device=uv.device)
    if filter_mode == "nearest":
        idx, ok = _nearest_index(levels[0], g)
        vals = levels[0].reshape(-1, c)[idx]
        out = torch.where(ok.unsqueeze(-1), vals, out)
        return out.reshape(g.n, g.h, g.w, c)
    lod = _lod(levels, g, uv_da, mip_level_bias) if filter_mode in _MIP_MODES else None
    for lvl, sel, weight, _, _ in _level_plan(filter_mode, levels, g, lod):
        tp = _taps(levels[lvl], g, sel)
        vals = levels[lvl].reshape(-1, c)[tp.idx]  # [M, 4, C]
        sample = (tp.w.unsqueeze(-1) * vals).sum(1)
        out[sel] += weight[sel].unsqueeze(-1) * sample
    return out.reshape(g.n, g.h, g.w, c)


def texture_bwd(
    levels: Sequence[Tensor],
    uv: Tensor,
    uv_da: Optional[Tensor],
    mip_level_bias: Optional[Tensor],
    dy: Tensor,
    filter_mode: str,
    boundary_mode: str,
) -> tuple[list[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Gradients per spec §3.6 table: (per level, uv, uv_da, mip_level_bias)."""
    g = _geometry(levels, uv, boundary_mode)
    c = levels[0].shape[-1]
    p = g.s.shape[0]
    dyf = dy.reshape(p, c).to(levels[0].dtype)
    grads = [torch.zeros_like(lv) for lv in levels]
    if filter_mode == "nearest":
        idx, ok = _nearest_index(levels[0], g)
        grads[0].view(-1, c).index_add_(0, idx[ok], dyf[ok])
        return grads, None, None, None

    mip = filter_mode in _MIP_MODES
    lod = _lod(levels, g, uv_da, mip_level_bias) if mip else None
    gs = torch.zeros_like(g.s)
    gt = torch.zeros_like(g.t)
    smp_lo = torch.zeros(p, c, dtype=dyf.dtype, device=dyf.device)
    smp_hi = torch.zeros_like(smp_lo)
    for lvl, sel, weight, is_lo, is_hi in _level_plan(filter_mode, levels, g, lod):
        tp = _taps(levels[lvl], g, sel)
        flat = levels[lvl].reshape(-1, c)
        vals = flat[tp.idx]  # [M, 4, C]
        dys = dyf[sel]
        wsel = weight[sel]
        contrib = (wsel.unsqueeze(-1) * tp.w).unsqueeze(-1) * dys.unsqueeze(1)  # [M, 4, C]
        grads[lvl].view(-1, c).index_add_(0, tp.idx.reshape(-1), contrib.reshape(-1, c))
        e = (vals * dys.unsqueeze(1)).sum(-1)  # [M, 4]: dy . texel value
        gs[sel] += wsel * (tp.ws * e).sum(-1)
        gt[sel] += wsel * (tp.wt * e).sum(-1)
        if filter_mode == "linear-mipmap-linear":
            sample = (tp.w.unsqueeze(-1) * vals).sum(1)
            smp_lo[is_lo] = sample[is_lo[sel]]
            smp_hi[is_hi] = sample[is_hi[sel]]

    g_uv_da: Optional[Tensor] = None
    g_bias: Optional[Tensor] = None
    g_sX = g_sY = g_tX = g_tY = None
    if filter_mode == "linear-mipmap-linear":
        assert lod is not None
        last = len(levels) - 1
        live = g.valid & (lod.raw > 0) & (lod.raw < last)
        dlam = torch.where(live, (dyf * (smp_hi - smp_lo)).sum(-1), torch.zeros_like(gs))
        if mip_level_bias is not None:
            g_bias = dlam.reshape(mip_level_bias.shape).contiguous()
        if uv_da is not None:
            hh, ww = _level_hw(levels[0], g.cube)
            if g.cube:
                assert g.d is not None and g.face is not None
                jac = _face_jacobian(g.d, uv_da.reshape(p, 6), g.face)
            else:
                jac = tuple(uv_da.reshape(p, 4).unbind(-1))
            dl = lod_jacobian_grad(*jac, ww, hh)
            g_sX, g_sY, g_tX, g_tY = (dlam * x for x in dl)
            if not g.cube:
                g_uv_da = torch.stack([g_sX, g_sY, g_tX, g_tY], -1).reshape(uv_da.shape).contiguous()

    if not g.cube:
        g_uv = torch.stack([gs, gt], -1).reshape(uv.shape).contiguous()
        return grads, g_uv, g_uv_da, g_bias

    # Cube: pull (s, t) and, with uv_da, the face-space Jacobian back to the direction and uv_da.
    assert g.d is not None and g.face is not None
    with torch.enable_grad():
        d = g.d.detach().clone().requires_grad_(True)
        s, t = project(d, g.face)
        outs, gouts, ins = [s, t], [gs, gt], [d]
        da = None
        if g_sX is not None and uv_da is not None:
            da = uv_da.reshape(p, 6).detach().clone().requires_grad_(True)
            outs.extend(_face_jacobian(d, da, g.face))
            gouts.extend([g_sX, g_sY, g_tX, g_tY])
            ins.append(da)
        gouts = [torch.where(g.valid, x, torch.zeros_like(x)) for x in gouts]
        res = torch.autograd.grad(outs, ins, grad_outputs=gouts, allow_unused=True)
    ok = g.valid.unsqueeze(-1)

    def clean(x: Optional[Tensor], like: Tensor) -> Tensor:
        if x is None:
            return torch.zeros_like(like)
        x = torch.where(ok & torch.isfinite(x), x, torch.zeros_like(x))
        return x

    g_uv = clean(res[0], d).reshape(uv.shape).contiguous()
    if da is not None:
        assert uv_da is not None
        g_uv_da = clean(res[1], da).reshape(uv_da.shape).contiguous()
    return grads, g_uv, g_uv_da, g_bias


__all__ = ["texture_fwd", "texture_bwd", "select_face", "project", "lod_from_jacobian", "lod_jacobian_grad"]
