"""GPU tests of the CUDA backend's interpolate, texture and antialias ops.

Each op is checked against an independent float64 PyTorch oracle written here from the spec (§4.2–§4.5),
gradients against autograd of that oracle or against finite differences of the CUDA forward, the
deterministic mode for bitwise repeatability, and bad data (out-of-range ids and indices, NaN/Inf) for
clean results. When the CPU reference backend is importable, results are also compared with it.
Run on a GPU machine: ``python -m pytest tests/gpu/test_ops_cuda.py -q``.
"""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.gpu


from gpu_env import cuda_skip_reason  # noqa: E402 - tests/gpu is on sys.path (pytest rootdir insertion)

_REASON = cuda_skip_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from nvdiffrast.torch._cuda import antialias as cu_aa  # noqa: E402
from nvdiffrast.torch._cuda import interpolate as cu_ip  # noqa: E402
from nvdiffrast.torch._cuda import texture as cu_tex  # noqa: E402

DEV = torch.device("cuda")


def _reference():
    try:
        from nvdiffrast.torch import reference

        return reference
    except Exception:  # noqa: BLE001 - the reference backend is written in parallel; compare only if present
        return None


@pytest.fixture(autouse=True)
def _nondeterministic_default():
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    yield
    torch.use_deterministic_algorithms(prev)


# ------------------------------------------------------------------------------------------- helpers


def encode_ids(k: torch.Tensor) -> torch.Tensor:
    """Encode 1-based triangle ids as rast[..., 3] does (spec §2.7); 0 stays 0."""
    k = k.to(torch.int64)
    small = k.to(torch.float32)
    big = (k + 0x4A800000).to(torch.int32).view(torch.float32)
    return torch.where(k <= 2**24, small, big)


def decode_ids(v: torch.Tensor) -> torch.Tensor:
    """0-based triangle index or -1."""
    v = v.to(torch.float32)
    bits = v.view(torch.int32).to(torch.int64)
    small = torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0).clamp(-1, 2**24).to(torch.int64)
    ids = torch.where(v <= 16777216.0, small, bits - 0x4A800000)
    ids = torch.where(torch.isfinite(v) & (v >= 1.0), ids, torch.zeros_like(ids))
    return ids - 1


def random_rast(n, h, w, t_count, block=(3, 5), gen=None, empty_frac=0.2):
    """A rast-like tensor with piecewise-constant triangle ids (like a real rasterization)."""
    g = gen or torch.Generator().manual_seed(0)
    by, bx = block
    hb, wb = (h + by - 1) // by, (w + bx - 1) // bx
    ids = torch.randint(1, t_count + 1, (n, hb, wb), generator=g)
    ids = ids.repeat_interleave(by, 1).repeat_interleave(bx, 2)[:, :h, :w]
    ids[torch.rand(n, h, w, generator=g) < empty_frac] = 0
    u = torch.rand(n, h, w, generator=g)
    v = torch.rand(n, h, w, generator=g) * (1 - u)
    z = torch.rand(n, h, w, generator=g) * 2 - 1
    rast = torch.stack([u, v, z, encode_ids(ids)], -1)
    rast[ids == 0] = 0.0
    db = torch.randn(n, h, w, 4, generator=g)
    db[ids == 0] = 0.0
    return rast, db


# --------------------------------------------------------------------------------------- interpolate


def interp_oracle(attr, rast, tri, rast_db, diff_idx):
    n, h, w, _ = rast.shape
    t_count = tri.shape[0]
    v_count = attr.shape[-2]
    ids = decode_ids(rast[..., 3].detach())
    valid = (ids >= 0) & (ids < t_count)
    vi = tri.long()[ids.clamp(0, t_count - 1)]
    valid &= ((vi >= 0) & (vi < v_count)).all(-1)
    vi = vi.clamp(0, v_count - 1)
    if attr.dim() == 2:
        a = attr[vi]
    else:
        ab = attr.expand(n, -1, -1)
        a = ab[torch.arange(n)[:, None, None, None], vi]
    u, v = rast[..., 0:1], rast[..., 1:2]
    m = valid[..., None].to(attr.dtype)
    out = (u * a[..., 0, :] + v * a[..., 1, :] + (1 - u - v) * a[..., 2, :]) * m
    das = []
    for k in diff_idx or []:
        if k < 0:
            das.append(torch.zeros(n, h, w, 2, dtype=attr.dtype))
            continue
        d0 = a[..., 0, k] - a[..., 2, k]
        d1 = a[..., 1, k] - a[..., 2, k]
        dx = d0 * rast_db[..., 0] + d1 * rast_db[..., 2]
        dy = d0 * rast_db[..., 1] + d1 * rast_db[..., 3]
        das.append(torch.stack([dx, dy], -1))
    out_da = torch.cat(das, -1) * m if das else torch.zeros(n, h, w, 0, dtype=attr.dtype)
    return out, out_da


def _interp_case(attr_shape, diff_idx, n=2, h=24, w=40, t_count=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    v_count = attr_shape[-2]
    tri = torch.randint(0, v_count, (t_count, 3), generator=g, dtype=torch.int32)
    tri[3] = torch.tensor([0, v_count + 5, 1])  # out-of-range vertex → zeros
    tri[4] = torch.tensor([-1, 0, 1])
    rast, db = random_rast(n, h, w, t_count + 3, gen=g)  # ids up to T+3 → beyond T → zeros
    attr = torch.randn(*attr_shape, generator=g)
    return attr, rast, tri, db


@pytest.mark.parametrize("attr_batch", [None, 1, 2])
@pytest.mark.parametrize("diff_idx", [None, [0, 1, 2, 3, 4, 5, 6, 7], [2, -1, 0, 2], [1]])
def test_interpolate_matches_oracle(attr_batch, diff_idx):
    a_count = 8 if diff_idx != [1] else 5
    shape = (40, a_count) if attr_batch is None else (attr_batch, 40, a_count)
    attr, rast, tri, db = _interp_case(shape, diff_idx)
    db_in = db.to(DEV) if diff_idx else None
    out, out_da = cu_ip.interpolate_fwd(attr.to(DEV), rast.to(DEV), tri.to(DEV), db_in, diff_idx)
    a64, r64, d64 = attr.double().requires_grad_(), rast.double().requires_grad_(), db.double().requires_grad_()
    ro, rda = interp_oracle(a64, r64, tri, d64, diff_idx)
    torch.testing.assert_close(out.cpu().double(), ro.detach(), atol=1e-5, rtol=1e-5)
    assert out_da.shape == rda.shape
    torch.testing.assert_close(out_da.cpu().double(), rda.detach(), atol=1e-5, rtol=1e-5)
    # Backward against autograd of the oracle.
    g = torch.Generator().manual_seed(5)
    dy = torch.randn(out.shape, generator=g)
    dda = torch.randn(out_da.shape, generator=g)
    ga, gr, gdb = cu_ip.interpolate_bwd(attr.to(DEV), rast.to(DEV), tri.to(DEV), dy.to(DEV), db_in,
                                        dda.to(DEV) if diff_idx else None, diff_idx)
    loss = (ro * dy.double()).sum() + (rda * dda.double()).sum()
    loss.backward()
    torch.testing.assert_close(ga.cpu().double(), a64.grad, atol=2e-4, rtol=1e-4)
    ref_gr = r64.grad.clone()
    ref_gr[..., 2:] = 0
    torch.testing.assert_close(gr.cpu().double(), ref_gr, atol=2e-4, rtol=1e-4)
    if diff_idx:
        torch.testing.assert_close(gdb.cpu().double(), d64.grad, atol=2e-4, rtol=1e-4)
    else:
        assert gdb is None


def test_interpolate_large_ids_and_garbage():
    """Ids above 2^24 decode through the bit pattern; NaN / negative / Inf ids are empty pixels."""
    t_count = 2**24 + 10
    tri = torch.zeros(t_count, 3, dtype=torch.int32, device=DEV)
    tri[2**24 + 3] = torch.tensor([0, 1, 2], dtype=torch.int32)
    attr = torch.tensor([[1.0], [2.0], [4.0]], device=DEV)
    vals = encode_ids(torch.tensor([2**24 + 4]))  # triangle index 2^24 + 3
    rast = torch.zeros(1, 1, 5, 4)
    rast[0, 0, :, 0] = 0.25
    rast[0, 0, :, 1] = 0.5
    rast[0, 0, 0, 3] = vals[0]
    rast[0, 0, 1, 3] = float("nan")
    rast[0, 0, 2, 3] = -3.0
    rast[0, 0, 3, 3] = float("inf")
    rast[0, 0, 4, 3] = encode_ids(torch.tensor([t_count + 7]))[0]
    out, _ = cu_ip.interpolate_fwd(attr, rast.to(DEV), tri, None, None)
    torch.cuda.synchronize()
    assert out[0, 0, 0, 0].item() == pytest.approx(0.25 * 1 + 0.5 * 2 + 0.25 * 4)
    assert torch.all(out[0, 0, 1:] == 0)


@pytest.mark.parametrize("op", ["interpolate", "texture", "antialias"])
def test_deterministic_backward_is_bitwise_repeatable(op):
    runs = []
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(3):
            runs.append([t.clone() for t in _run_bwd(op)])
    finally:
        torch.use_deterministic_algorithms(False)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
    fast = _run_bwd(op)
    for a, b in zip(runs[0], fast):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def _run_bwd(op):
    g = torch.Generator().manual_seed(11)
    if op == "interpolate":
        attr, rast, tri, db = _interp_case((3, 300, 8), list(range(8)), n=3, h=64, w=96, t_count=50)
        dy = torch.randn(3, 64, 96, 8, generator=g)
        dda = torch.randn(3, 64, 96, 16, generator=g)
        ga, gr, gdb = cu_ip.interpolate_bwd(attr.to(DEV), rast.to(DEV), tri.to(DEV), dy.to(DEV), db.to(DEV),
                                            dda.to(DEV), list(range(8)))
        return [ga, gr, gdb]
    if op == "texture":
        tex = torch.rand(1, 32, 32, 3, generator=g, device="cpu").to(DEV)
        levels = build_mips(tex)
        uv = (torch.rand(2, 48, 48, 2, generator=g) * 3 - 1).to(DEV)
        uv_da = (torch.randn(2, 48, 48, 4, generator=g) * 0.05).to(DEV)
        dy = torch.randn(2, 48, 48, 3, generator=g).to(DEV)
        gl, guv, gda, _ = cu_tex.texture_bwd(levels, uv, uv_da, None, dy, "linear-mipmap-linear", "wrap")
        return [*gl, guv, gda]
    pos, tri, color, rast = aa_scene()
    dy = torch.randn(color.shape, generator=g).to(DEV)
    topo = cu_aa.antialias_topology_hash(tri)
    gc, gp = cu_aa.antialias_bwd(color, rast, pos, tri, dy, None, topo, 1.0)
    return [gc, gp]


def test_interpolate_reference_backend_agrees():
    ref = _reference()
    if ref is None or not hasattr(ref, "interpolate_fwd"):
        pytest.skip("CPU reference backend not importable in this checkout")
    attr, rast, tri, db = _interp_case((2, 40, 6), [0, 3])
    out, out_da = cu_ip.interpolate_fwd(attr.to(DEV), rast.to(DEV), tri.to(DEV), db.to(DEV), [0, 3])
    r_out, r_da = ref.interpolate_fwd(attr, rast, tri, db, [0, 3])
    torch.testing.assert_close(out.cpu(), r_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_da.cpu(), r_da, atol=1e-5, rtol=1e-5)
    g = torch.Generator().manual_seed(8)
    dy = torch.randn(out.shape, generator=g)
    dda = torch.randn(out_da.shape, generator=g)
    cg = cu_ip.interpolate_bwd(attr.to(DEV), rast.to(DEV), tri.to(DEV), dy.to(DEV), db.to(DEV), dda.to(DEV), [0, 3])
    rg = ref.interpolate_bwd(attr, rast, tri, dy, db, dda, [0, 3])
    for a, r in zip(cg, rg):
        torch.testing.assert_close(a.cpu(), r, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------- texture


def build_mips(tex, cube=False, max_levels=16):
    """Box-filter pyramid (spec §3.6) of a [B,H,W,C] texture or [B,6,S,S,C] cube."""
    levels = [tex]
    cur = tex
    while len(levels) < max_levels:
        hh, ww = (cur.shape[2], cur.shape[3]) if cube else (cur.shape[1], cur.shape[2])
        if hh == 1 and ww == 1:
            break
        x = cur.reshape(-1, hh, ww, cur.shape[-1]).permute(0, 3, 1, 2)
        kh, kw = (2 if hh > 1 else 1), (2 if ww > 1 else 1)
        x = torch.nn.functional.avg_pool2d(x, (kh, kw))
        x = x.permute(0, 2, 3, 1)
        cur = x.reshape(*cur.shape[: (2 if cube else 1)], x.shape[1], x.shape[2], cur.shape[-1]).contiguous()
        levels.append(cur)
    return levels


def _bilinear_oracle(tex, s, t, boundary, bidx):
    """tex [B,H,W,C] float64; s,t [P]; bidx [P]. Returns [P, C]."""
    _, hh, ww, _ = tex.shape
    x = s * ww - 0.5
    y = t * hh - 0.5
    if boundary == "clamp":
        x = x.clamp(0, ww - 1)
        y = y.clamp(0, hh - 1)
    x0 = torch.floor(x).detach()
    y0 = torch.floor(y).detach()
    fx, fy = x - x0, y - y0
    out = 0
    for di, dj, wgt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        i = (y0 + di).long()
        j = (x0 + dj).long()
        if boundary == "wrap":
            i, j = i % hh, j % ww
            ok = torch.ones_like(i, dtype=torch.bool)
        elif boundary == "clamp":
            i, j = i.clamp(0, hh - 1), j.clamp(0, ww - 1)
            ok = torch.ones_like(i, dtype=torch.bool)
        else:
            ok = (i >= 0) & (i < hh) & (j >= 0) & (j < ww)
            i, j = i.clamp(0, hh - 1), j.clamp(0, ww - 1)
        out = out + wgt[:, None] * tex[bidx, i, j] * ok[:, None]
    return out


def texture_oracle(levels, uv, uv_da, bias, filter_mode, boundary):
    n, h, w, _ = uv.shape
    p = n * h * w
    bidx = torch.arange(n).repeat_interleave(h * w) if levels[0].shape[0] > 1 else torch.zeros(p, dtype=torch.long)
    s, t = uv[..., 0].reshape(-1), uv[..., 1].reshape(-1)
    if boundary == "wrap":
        s = s - torch.floor(s).detach()
        t = t - torch.floor(t).detach()
    tex = levels[0]
    if filter_mode == "nearest":
        hh, ww = tex.shape[1:3]
        xs, ys = s * ww, t * hh
        j = torch.floor(xs.clamp(0, ww - 1)).long()
        i = torch.floor(ys.clamp(0, hh - 1)).long()
        out = tex[bidx, i, j]
        if boundary == "zero":
            out = out * ((xs >= 0) & (xs < ww) & (ys >= 0) & (ys < hh))[:, None]
        return out.reshape(n, h, w, -1)
    if filter_mode == "linear":
        return _bilinear_oracle(tex, s, t, boundary, bidx).reshape(n, h, w, -1)
    hh, ww = tex.shape[1:3]
    lam = torch.zeros(p, dtype=uv.dtype)
    if uv_da is not None:
        d = uv_da.reshape(-1, 4)
        a11, a12, a21, a22 = ww * d[:, 0], ww * d[:, 1], hh * d[:, 2], hh * d[:, 3]
        aa = a11 * a11 + a21 * a21
        bb = a12 * a12 + a22 * a22
        cc = a11 * a12 + a21 * a22
        sig2 = 0.5 * (aa + bb) + torch.sqrt((0.5 * (aa - bb)) ** 2 + cc * cc)
        lam = 0.5 * torch.log2(sig2)
    if bias is not None:
        lam = lam + bias.reshape(-1)
    lmax = len(levels) - 1
    lam = lam.clamp(0, lmax)
    l0 = torch.floor(lam).detach().long()
    samples = [_bilinear_oracle(lv, s, t, boundary, bidx) for lv in levels]
    stack = torch.stack(samples, 0)  # [L, P, C]
    ar = torch.arange(p)
    v0 = stack[l0, ar]
    if filter_mode == "linear-mipmap-nearest":
        return v0.reshape(n, h, w, -1)
    f = lam - l0
    v1 = stack[(l0 + 1).clamp(max=lmax), ar]
    return ((1 - f)[:, None] * v0 + f[:, None] * v1).reshape(n, h, w, -1)


@pytest.mark.parametrize("boundary", ["wrap", "clamp", "zero"])
@pytest.mark.parametrize("filter_mode", ["nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear"])
@pytest.mark.parametrize("tex_batch", [1, 2])
def test_texture_2d_matches_oracle(boundary, filter_mode, tex_batch):
    g = torch.Generator().manual_seed(3)
    tex = torch.rand(tex_batch, 16, 8, 3, generator=g)
    levels = build_mips(tex)
    uv = torch.rand(2, 12, 10, 2, generator=g) * 2.4 - 0.7
    uv_da = torch.randn(2, 12, 10, 4, generator=g) * 0.08
    bias = torch.randn(2, 12, 10, generator=g) * 0.5
    mip = filter_mode.startswith("linear-mipmap")
    da_in, bias_in = (uv_da, bias) if mip else (None, None)
    out = cu_tex.texture_fwd([lv.to(DEV) for lv in levels], uv.to(DEV), da_in.to(DEV) if mip else None,
                             bias_in.to(DEV) if mip else None, filter_mode, boundary)
    lv64 = [lv.double().requires_grad_() for lv in levels]
    uv64 = uv.double().requires_grad_()
    da64 = uv_da.double().requires_grad_()
    b64 = bias.double().requires_grad_()
    ref = texture_oracle(lv64, uv64, da64 if mip else None, b64 if mip else None, filter_mode, boundary)
    torch.testing.assert_close(out.cpu().double(), ref.detach(), atol=2e-5, rtol=1e-4)
    dy = torch.randn(out.shape, generator=g)
    gl, guv, gda, gb = cu_tex.texture_bwd([lv.to(DEV) for lv in levels], uv.to(DEV), da_in.to(DEV) if mip else None,
                                          bias_in.to(DEV) if mip else None, dy.to(DEV), filter_mode, boundary)
    (ref * dy.double()).sum().backward()
    for a, b in zip(gl, lv64):
        torch.testing.assert_close(a.cpu().double(), b.grad if b.grad is not None else torch.zeros_like(b),
                                   atol=1e-4, rtol=1e-4)
    if filter_mode == "nearest":
        assert guv is None
    else:
        torch.testing.assert_close(guv.cpu().double(), uv64.grad, atol=2e-3, rtol=1e-3)
    if filter_mode == "linear-mipmap-linear":
        torch.testing.assert_close(gda.cpu().double(), da64.grad, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(gb.cpu().double(), b64.grad, atol=1e-3, rtol=1e-3)
    else:
        assert gda is None and gb is None


@pytest.mark.parametrize("filter_mode", ["nearest", "linear", "linear-mipmap-linear"])
def test_texture_gradient_with_many_pixels_per_texel(filter_mode):
    """Strong magnification: long runs of neighbouring pixels share texels (the case the backward's
    warp-level merging of equal texels handles); texel gradients must equal the oracle's and the
    deterministic path's."""
    g = torch.Generator().manual_seed(13)
    tex = torch.rand(2, 4, 8, 3, generator=g)
    levels = build_mips(tex)
    ys, xs = torch.meshgrid(torch.linspace(-0.3, 1.3, 40), torch.linspace(-0.2, 1.2, 96), indexing="ij")
    uv = torch.stack([xs, ys], -1)[None].repeat(2, 1, 1, 1).contiguous()
    uv_da = torch.full((2, 40, 96, 4), 0.0)
    uv_da[..., 0] = 0.3
    uv_da[..., 3] = 0.25
    mip = filter_mode == "linear-mipmap-linear"
    lv = levels if mip else [tex]
    dy = torch.randn(2, 40, 96, 3, generator=g)
    args = ([x.to(DEV) for x in lv], uv.to(DEV), uv_da.to(DEV) if mip else None, None, dy.to(DEV), filter_mode, "wrap")
    fast = cu_tex.texture_bwd(*args)
    torch.use_deterministic_algorithms(True)
    try:
        det = cu_tex.texture_bwd(*args)
    finally:
        torch.use_deterministic_algorithms(False)
    lv64 = [x.double().requires_grad_() for x in lv]
    ref = texture_oracle(lv64, uv.double(), uv_da.double() if mip else None, None, filter_mode, "wrap")
    (ref * dy.double()).sum().backward()
    for a, b, r in zip(fast[0], det[0], lv64):
        torch.testing.assert_close(a.cpu().double(), r.grad, atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_texture_spec_examples():
    tex = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4, 1).to(DEV)

    def one(uv, f, b):
        return cu_tex.texture_fwd([tex], torch.tensor(uv, dtype=torch.float32, device=DEV).reshape(1, 1, 1, 2), None,
                                  None, f, b).item()

    assert one([0.5, 0.5], "nearest", "wrap") == 10
    assert one([1.0, 1.0], "nearest", "wrap") == 0
    assert one([1.125, 0.875], "nearest", "clamp") == 15
    assert one([1.0, 1.0], "linear", "wrap") == pytest.approx(7.5)
    assert one([1.0, 1.0], "linear", "zero") == pytest.approx(3.75)


def test_texture_bad_uv_and_broadcast_levels():
    tex = torch.rand(1, 8, 8, 4, device=DEV)
    levels = build_mips(tex)
    uv = torch.tensor([[float("nan"), 0.5], [float("inf"), 0.1], [1e30, -1e30], [0.3, 0.3]], device=DEV)
    uv = uv.reshape(1, 2, 2, 2)
    uv_da = torch.tensor([[float("nan")] * 4, [1e30] * 4, [0.0] * 4, [0.1] * 4], device=DEV).reshape(1, 2, 2, 4)
    for b in ("wrap", "clamp", "zero"):
        for f in ("nearest", "linear", "linear-mipmap-linear"):
            out = cu_tex.texture_fwd(levels, uv, uv_da, None, f, b)
            gl, guv, gda, _ = cu_tex.texture_bwd(levels, uv, uv_da, None, torch.ones_like(out), f, b)
            torch.cuda.synchronize()
            assert torch.all(out[0, 0, 0] == 0) and torch.all(out[0, 0, 1] == 0)
            assert torch.isfinite(out).all()
            for gg in gl:
                assert torch.isfinite(gg).all()
            if guv is not None:
                assert torch.isfinite(guv).all()


@pytest.mark.parametrize("shape,cube", [((2, 16, 4, 3), False), ((1, 32, 32, 1), False), ((2, 6, 8, 8, 5), True)])
def test_mip_build_and_adjoint_match_torch(shape, cube):
    """The CUDA pyramid ops agree with the generic PyTorch ones of ``_mip``."""
    from nvdiffrast.torch import _mip

    g = torch.Generator().manual_seed(21)
    tex = torch.randn(*shape, generator=g).to(DEV)
    hh, ww = (shape[2], shape[3]) if cube else (shape[1], shape[2])
    sizes = _mip.mip_level_sizes(ww, hh)
    want = _mip.build_mip_levels(tex, sizes)
    got = cu_tex.mip_build(tex, len(sizes), cube)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    grads = [torch.randn(x.shape, generator=g).to(DEV) for x in [tex, *want]]
    want_g = _mip.mip_adjoint(grads, tex.shape)
    torch.testing.assert_close(cu_tex.mip_adjoint(grads, cube), want_g, atol=1e-5, rtol=1e-5)


# Cube maps --------------------------------------------------------------------------------------------

_N = [(0, 1.0), (0, -1.0), (1, 1.0), (1, -1.0), (2, 1.0), (2, -1.0)]
_U = [(2, -1.0), (2, 1.0), (0, 1.0), (0, 1.0), (0, 1.0), (0, -1.0)]
_V = [(1, -1.0), (1, -1.0), (2, 1.0), (2, -1.0), (1, -1.0), (1, -1.0)]


def cube_texel_dirs(s_count):
    """Unit directions of the texel centres of a cube map, [6, S, S, 3] (spec §4.4 table)."""
    c = (torch.arange(s_count, dtype=torch.float64) + 0.5) / s_count * 2 - 1
    tc, sc = torch.meshgrid(c, c, indexing="ij")
    out = []
    for f in range(6):
        d = torch.zeros(s_count, s_count, 3, dtype=torch.float64)
        d[..., _N[f][0]] = _N[f][1]
        d[..., _U[f][0]] += _U[f][1] * sc
        d[..., _V[f][0]] += _V[f][1] * tc
        out.append(d / d.norm(dim=-1, keepdim=True))
    return torch.stack(out)


def test_cube_face_selection_probes():
    """Spec §4.4 probes on 4×4 faces with texel value = 100·face + 4·row + col."""
    f = torch.arange(6).reshape(6, 1, 1)
    i = torch.arange(4).reshape(1, 4, 1)
    j = torch.arange(4).reshape(1, 1, 4)
    tex = (100 * f + 4 * i + j).float().reshape(1, 6, 4, 4, 1).to(DEV)
    probes = [((1, 0.5, 0), 0, 1, None), ((1, 0, 0.5), 0, None, 1), ((0, 1, 0.5), 2, 3, None),
              ((0, -1, 0.5), 3, 1, None), ((0.5, 0, -1), 5, None, 1), ((1, 1, 0), 0, None, None),
              ((1, 1, 1), 0, None, None)]
    uv = torch.tensor([p[0] for p in probes], dtype=torch.float32, device=DEV).reshape(1, 1, -1, 3)
    out = cu_tex.texture_fwd([tex], uv, None, None, "nearest", "cube").reshape(-1).cpu()
    for k, (_, face, row, col) in enumerate(probes):
        v = int(out[k].item())
        assert v // 100 == face
        if row is not None:
            assert (v % 100) // 4 == row
        if col is not None:
            assert v % 4 == col


@pytest.mark.parametrize("s_count", [1, 2, 16])
def test_cube_seamless_smooth_function(s_count):
    """A cube map sampled from a smooth function of direction reproduces it everywhere, also across
    edges and corners (a wrong neighbour orientation would give O(1) errors there)."""
    cvec = torch.tensor([0.3, -0.8, 0.5], dtype=torch.float64)
    dirs = cube_texel_dirs(s_count)
    tex = (dirs @ cvec)[..., None].float().reshape(1, 6, s_count, s_count, 1).to(DEV)
    g = torch.Generator().manual_seed(1)
    d = torch.randn(1, 64, 64, 3, generator=g, dtype=torch.float64)
    # Half of the samples close to an edge or a corner.
    snap = torch.rand(1, 64, 64, generator=g) < 0.5
    a = d.abs()
    mx = a.max(-1, keepdim=True).values
    d2 = torch.where(a > 0.9 * mx, torch.sign(d) * mx, d)
    d = torch.where(snap[..., None], d2, d)
    out = cu_tex.texture_fwd([tex], d.float().to(DEV), None, None, "linear", "cube").cpu().double()[..., 0]
    want = (d / d.norm(dim=-1, keepdim=True)) @ cvec
    tol = {1: 0.9, 2: 0.5, 16: 0.08}[s_count]
    assert (out - want).abs().max().item() < tol
    if s_count == 16:
        # Continuity across an edge: tiny steps over the +X/+Z edge.
        ts = torch.linspace(-0.05, 0.05, 101, dtype=torch.float64)
        path = torch.stack([torch.ones_like(ts), 0.3 * torch.ones_like(ts), 1 + ts], -1).reshape(1, 1, -1, 3)
        vals = cu_tex.texture_fwd([tex], path.float().to(DEV), None, None, "linear", "cube").cpu().double().reshape(-1)
        assert (vals[1:] - vals[:-1]).abs().max().item() < 0.01


def _dir_fd_check(fn_loss, inputs, grads, eps, rtol):
    """Directional finite difference of a scalar loss vs Σ grad·δ for random δ on all inputs at once."""
    g = torch.Generator().manual_seed(7)
    deltas = [torch.randn(x.shape, generator=g).to(x.device) for x in inputs]
    plus = [x + eps * d for x, d in zip(inputs, deltas)]
    minus = [x - eps * d for x, d in zip(inputs, deltas)]
    fd = (fn_loss(*plus) - fn_loss(*minus)) / (2 * eps)
    an = sum((gr.double() * d.double()).sum().item() for gr, d in zip(grads, deltas))
    assert fd == pytest.approx(an, rel=rtol, abs=1e-3 * max(1.0, abs(an)))


@pytest.mark.parametrize("filter_mode", ["linear", "linear-mipmap-linear"])
def test_cube_gradients_finite_difference(filter_mode):
    g = torch.Generator().manual_seed(2)
    s_count = 16
    dirs = cube_texel_dirs(s_count)
    tex = (torch.sin(3 * dirs[..., :1]) + dirs[..., 1:2] ** 2).float().reshape(1, 6, s_count, s_count, 1)
    tex = torch.cat([tex, 1 - tex], -1).to(DEV)
    levels = build_mips(tex, cube=True) if filter_mode != "linear" else [tex]
    uv = torch.randn(2, 32, 32, 3, generator=g).to(DEV)
    uv_da = (torch.randn(2, 32, 32, 6, generator=g) * 0.3).to(DEV)  # mostly between mip levels, not clamped
    bias = (torch.randn(2, 32, 32, generator=g) * 0.3).to(DEV)
    mip = filter_mode != "linear"
    wgt = torch.randn(2, 32, 32, 2, generator=g).to(DEV)

    def loss(u, d, b):
        out = cu_tex.texture_fwd(levels, u, d if mip else None, b if mip else None, filter_mode, "cube")
        return (out * wgt).double().sum().item()

    gl, guv, gda, gb = cu_tex.texture_bwd(levels, uv, uv_da if mip else None, bias if mip else None, wgt, filter_mode,
                                          "cube")
    if not mip:
        _dir_fd_check(lambda u: loss(u, uv_da, bias), [uv], [guv], 1e-3, 0.03)
    # With mipmapping the output has kinks at integer levels and jumps where the face (and so the
    # footprint Jacobian) changes, which float32 finite differences cannot resolve; the uv, uv_da and
    # bias gradients of the mip modes are compared with the reference backend instead
    # (test_texture_reference_backend_agrees), whose float64 evaluation matches per-pixel FD to 1e-9.
    # Texel gradients: the output is linear in the texels, so the adjoint identity holds exactly.
    dl = [torch.randn(lv.shape, generator=g).to(DEV) for lv in levels]
    lin = (cu_tex.texture_fwd([a + b for a, b in zip(levels, dl)], uv, uv_da if mip else None, bias if mip else None,
                              filter_mode, "cube") - cu_tex.texture_fwd(levels, uv, uv_da if mip else None,
                                                                        bias if mip else None, filter_mode, "cube"))
    lhs = (lin.double() * wgt.double()).sum().item()
    rhs = sum((a.double() * b.double()).sum().item() for a, b in zip(gl, dl))
    assert lhs == pytest.approx(rhs, rel=1e-3, abs=1e-2)


def test_cube_invalid_direction_gives_zero():
    tex = torch.rand(1, 6, 4, 4, 2, device=DEV)
    # The zero vector and NaN have no face coordinates; (inf, 1, 0) projects to the +X face centre
    # (1/inf = 0 is finite), as in the reference backend.
    uv = torch.tensor([[0.0, 0.0, 0.0], [float("nan"), 1.0, 0.0], [float("inf"), 1.0, 0.0], [1.0, 0.2, 0.1]],
                      device=DEV).reshape(1, 1, 4, 3)
    out = cu_tex.texture_fwd([tex], uv, None, None, "linear", "cube")
    _, guv, _, _ = cu_tex.texture_bwd([tex], uv, None, None, torch.ones_like(out), "linear", "cube")
    torch.cuda.synchronize()
    assert torch.all(out[0, 0, :2] == 0)
    assert torch.all(guv[0, 0, :2] == 0)
    assert torch.isfinite(out).all() and torch.isfinite(guv).all()
    assert torch.all(out[0, 0, 3] != 0)


_MODES = [(f, b) for f in ("nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear")
          for b in ("wrap", "clamp", "zero", "cube")]


@pytest.mark.parametrize("filter_mode,boundary", _MODES)
def test_texture_reference_backend_agrees(filter_mode, boundary):
    """Forward and every gradient against the CPU reference backend (same inputs, backend level)."""
    ref = _reference()
    if ref is None or not hasattr(ref, "texture_bwd"):
        pytest.skip("CPU reference backend not importable in this checkout")
    g = torch.Generator().manual_seed(50)
    cube = boundary == "cube"
    if cube:
        tex = torch.randn(1, 6, 16, 16, 3, generator=g)
        uv = torch.randn(2, 16, 16, 3, generator=g)
        uv[0, :4] = torch.sign(uv[0, :4]) * (1 + 1e-3 * torch.randn(4, 16, 3, generator=g))  # near corners
        uv_da = torch.randn(2, 16, 16, 6, generator=g) * 0.1
    else:
        tex = torch.randn(2, 16, 32, 3, generator=g)
        uv = torch.rand(2, 16, 16, 2, generator=g) * 4 - 1.5
        uv_da = torch.randn(2, 16, 16, 4, generator=g) * 0.1
    bias = torch.rand(2, 16, 16, generator=g) * 4 - 1
    mip = filter_mode.startswith("linear-mipmap")
    levels = build_mips(tex, cube=cube) if mip else [tex]
    da, b = (uv_da, bias) if mip else (None, None)

    def dev(x):
        return None if x is None else x.to(DEV)

    out = cu_tex.texture_fwd([dev(x) for x in levels], dev(uv), dev(da), dev(b), filter_mode, boundary).cpu()
    rout = ref.texture_fwd(levels, uv, da, b, filter_mode, boundary)
    discontinuous = filter_mode in ("nearest", "linear-mipmap-nearest")
    bad = ((out - rout).abs().amax(-1) > 1e-4).float().mean().item()
    assert bad <= (0.01 if discontinuous else 0.0)
    dy = torch.randn(out.shape, generator=g)
    cg = cu_tex.texture_bwd([dev(x) for x in levels], dev(uv), dev(da), dev(b), dev(dy), filter_mode, boundary)
    rg = ref.texture_bwd(levels, uv, da, b, dy, filter_mode, boundary)
    pairs = list(zip(cg[0], rg[0])) + list(zip(cg[1:], rg[1:]))
    for a, r in pairs:
        assert (a is None) == (r is None)
        if a is None:
            continue
        a = a.cpu()
        scale = float(r.abs().max()) + 1e-6
        frac = float(((a - r).abs() > 1e-3 * scale).float().mean())
        assert frac <= (0.02 if discontinuous else 0.0)


# ------------------------------------------------------------------------------------------ antialias


def raster_oracle(pos, tri, h, w):
    """Tiny float64 rasterizer for test scenes (no clipping; all w > 0): closest z/w wins."""
    n = pos.shape[0]
    rast = torch.zeros(n, h, w, 4, dtype=torch.float64)
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w * 2 - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    for b in range(n):
        best = torch.full((h, w), float("inf"), dtype=torch.float64)
        for t in range(tri.shape[0]):
            p = pos[b, tri[t].long()].double()
            q = [(p[i, 0] - xx * p[i, 3], p[i, 1] - yy * p[i, 3]) for i in range(3)]

            def cr(a, c):
                return a[0] * c[1] - a[1] * c[0]

            a0, a1, a2 = cr(q[1], q[2]), cr(q[2], q[0]), cr(q[0], q[1])
            ssum = a0 + a1 + a2
            inside = ((a0 >= 0) & (a1 >= 0) & (a2 >= 0)) | ((a0 <= 0) & (a1 <= 0) & (a2 <= 0))
            inside &= ssum.abs() > 1e-12
            z = (a0 * p[0, 2] + a1 * p[1, 2] + a2 * p[2, 2]) / (a0 * p[0, 3] + a1 * p[1, 3] + a2 * p[2, 3])
            take = inside & (z < best)
            best = torch.where(take, z, best)
            rast[b, ..., 0] = torch.where(take, a0 / ssum, rast[b, ..., 0])
            rast[b, ..., 1] = torch.where(take, a1 / ssum, rast[b, ..., 1])
            rast[b, ..., 2] = torch.where(take, z, rast[b, ..., 2])
            rast[b, ..., 3] = torch.where(take, torch.full_like(z, t + 1.0), rast[b, ..., 3])
    return rast.float()


def aa_scene(n=2, h=24, w=32, seed=0):
    """A shared-edge quad in the back and a separate triangle in front (silhouettes of both kinds)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([[-0.7, -0.6, 0.5, 1.0], [0.6, -0.7, 0.5, 1.0], [0.7, 0.65, 0.5, 1.0], [-0.65, 0.7, 0.5, 1.0],
                         [-0.3, -0.9, 0.0, 1.0], [0.9, 0.1, 0.0, 1.0], [-0.1, 0.8, 0.0, 1.0]], dtype=torch.float64)
    pos = base[None].repeat(n, 1, 1)
    pos[..., :2] += torch.randn(n, 7, 2, generator=g, dtype=torch.float64) * 0.05
    pos[..., 3] = 1.0 + torch.rand(n, 7, generator=g, dtype=torch.float64) * 0.3
    pos[..., :2] *= pos[..., 3:4]
    tri = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6]], dtype=torch.int32)
    rast = raster_oracle(pos, tri, h, w)
    color = torch.rand(n, h, w, 3, generator=g)
    return pos.float().to(DEV), tri.to(DEV), color.to(DEV), rast.to(DEV)


def aa_oracle(color, rast, pos, tri):
    """Direct loop implementation of spec §4.5 (forward only), float64."""
    n, h, w, _ = color.shape
    out = color.double().clone()
    pos = pos.double()
    tri_l = tri.long().tolist()
    edges = {}
    for t, (a, b, c) in enumerate(tri_l):
        for x, y, o in ((a, b, c), (b, c, a), (c, a, b)):
            edges.setdefault((min(x, y), max(x, y)), []).append((t, o))
    ids = decode_ids(rast[..., 3]).tolist()
    zz = rast[..., 2].double()
    for b in range(n):
        px = pos[b, :, 0] / pos[b, :, 3] * w / 2 + w / 2
        py = pos[b, :, 1] / pos[b, :, 3] * h / 2 + h / 2
        proj = torch.stack([px, py], -1)
        for y in range(h):
            for x in range(w):
                for vertical in (False, True):
                    x1, y1 = (x, y + 1) if vertical else (x + 1, y)
                    if x1 >= w or y1 >= h:
                        continue
                    t0, t1 = ids[b][y][x], ids[b][y1][x1]
                    if t0 == t1:
                        continue
                    if t0 >= 0 and t1 >= 0:
                        owner = 0 if zz[b, y, x] < zz[b, y1, x1] else 1
                    else:
                        owner = 0 if t0 >= 0 else 1
                    t = t0 if owner == 0 else t1
                    vi = tri_l[t]
                    ox, oy = (x + 0.5, y + 0.5) if owner == 0 else (x1 + 0.5, y1 + 0.5)
                    sgn = 1.0 if owner == 0 else -1.0
                    pa = [(sgn * ((proj[v, 1] - oy) if vertical else (proj[v, 0] - ox)),
                           (proj[v, 0] - ox) if vertical else (proj[v, 1] - oy)) for v in vi]
                    best, bd = None, None
                    for e in range(3):
                        i, j = e, (e + 1) % 3
                        if (pa[i][1] < 0) == (pa[j][1] < 0):
                            continue
                        d = pa[i][0] + (pa[j][0] - pa[i][0]) * pa[i][1] / (pa[i][1] - pa[j][1])
                        if best is None or d > bd:
                            best, bd = e, float(d)
                    if best is None:
                        continue
                    i, j, k = best, (best + 1) % 3, (best + 2) % 3
                    if abs(pa[j][1] - pa[i][1]) < abs(pa[j][0] - pa[i][0]):
                        continue
                    if not (-1 / 16 <= bd <= 1 + 1 / 16):
                        continue
                    va, vb, vk = vi[i], vi[j], vi[k]
                    ex, ey = proj[vb] - proj[va]

                    def side(v, va=va, ex=ex, ey=ey, proj=proj):
                        dv = proj[v] - proj[va]
                        return float(ex * dv[1] - ey * dv[0])

                    nbrs = [o for (tt, o) in edges[(min(va, vb), max(va, vb))] if tt != t][:1]
                    sk = side(vk)
                    sil = not nbrs or any(side(o) * sk > 0 for o in nbrs)
                    if not sil:
                        continue
                    alpha = 0.5 - min(max(bd, 0.0), 1.0)
                    if owner == 1:
                        alpha = -alpha
                    ty, tx = (y, x) if alpha > 0 else (y1, x1)
                    out[b, ty, tx] += alpha * (color[b, y1, x1].double() - color[b, y, x].double())
    return out


def test_antialias_matches_oracle_and_adjoint():
    pos, tri, color, rast = aa_scene()
    topo = cu_aa.antialias_topology_hash(tri)
    out, work = cu_aa.antialias_fwd(color, rast, pos, tri, topo)
    ref = aa_oracle(color.cpu(), rast.cpu(), pos.cpu(), tri.cpu())
    torch.testing.assert_close(out.cpu().double(), ref, atol=1e-4, rtol=1e-4)
    assert (out != color).any(), "the scene must exercise some silhouette pixels"
    # The output is linear in color: the color gradient is its exact adjoint.
    g = torch.Generator().manual_seed(9)
    dy = torch.randn(color.shape, generator=g).to(DEV)
    dc = torch.randn(color.shape, generator=g).to(DEV)
    gc, gp = cu_aa.antialias_bwd(color, rast, pos, tri, dy, work, topo, 1.0)
    # Without the saved work the items are evaluated again: same result.
    gc_re, gp_re = cu_aa.antialias_bwd(color, rast, pos, tri, dy, None, topo, 1.0)
    torch.testing.assert_close(gc_re, gc, atol=0, rtol=0)
    torch.testing.assert_close(gp_re, gp, atol=1e-6, rtol=1e-5)
    out2, _ = cu_aa.antialias_fwd(color + dc, rast, pos, tri, topo)
    lhs = ((out2 - out).double() * dy.double()).sum().item()
    rhs = (gc.double() * dc.double()).sum().item()
    assert lhs == pytest.approx(rhs, rel=1e-4, abs=1e-3)
    assert torch.all(gp[..., 2] == 0)
    # Total colour gradient is conserved.
    assert gc.double().sum().item() == pytest.approx(dy.double().sum().item(), rel=1e-4, abs=1e-3)
    # pos_gradient_boost scales the position gradient only.
    gc3, gp3 = cu_aa.antialias_bwd(color, rast, pos, tri, dy, work, topo, 3.0)
    torch.testing.assert_close(gc3, gc)
    torch.testing.assert_close(gp3, 3 * gp, rtol=1e-5, atol=1e-6)


def test_antialias_pos_gradient_finite_difference():
    pos, tri, color, rast = aa_scene(n=1, h=48, w=64, seed=3)
    topo = cu_aa.antialias_topology_hash(tri)
    g = torch.Generator().manual_seed(10)
    wgt = torch.randn(color.shape, generator=g).to(DEV)

    def loss(p):
        return (cu_aa.antialias_fwd(color, rast, p, tri, topo)[0].double() * wgt.double()).sum().item()

    _, gp = cu_aa.antialias_bwd(color, rast, pos, tri, wgt, None, topo, 1.0)
    assert gp.abs().sum() > 0
    mask = torch.zeros_like(pos)
    mask[..., [0, 1, 3]] = 1  # z gets no gradient
    g2 = torch.Generator().manual_seed(12)
    delta = torch.randn(pos.shape, generator=g2).to(DEV) * mask
    eps = 1e-4
    fd = (loss(pos + eps * delta) - loss(pos - eps * delta)) / (2 * eps)
    an = (gp.double() * delta.double()).sum().item()
    assert fd == pytest.approx(an, rel=0.05, abs=1e-3)


def test_antialias_range_mode_and_bad_indices():
    pos, tri, color, rast = aa_scene(n=1)
    bad_tri = torch.cat([tri, torch.tensor([[0, 99, 1], [-5, 1, 2], [3, 3, 3]], dtype=torch.int32, device=DEV)])
    rast_bad = rast.clone()
    rast_bad[0, :3, :3, 3] = 4.0  # triangle with an out-of-range vertex
    rast_bad[0, 3:5, :3, 3] = 77.0  # beyond T
    rast_bad[0, 5:7, :3, 3] = float("nan")
    topo = cu_aa.antialias_topology_hash(bad_tri)
    out, _ = cu_aa.antialias_fwd(color, rast_bad, pos[0], bad_tri, topo)  # range-mode pos [V, 4]
    gc, gp = cu_aa.antialias_bwd(color, rast_bad, pos[0], bad_tri, torch.ones_like(color), None, topo, 1.0)
    torch.cuda.synchronize()
    assert torch.isfinite(out).all() and torch.isfinite(gc).all() and torch.isfinite(gp).all()
    assert gp.shape == pos[0].shape
    # NaN positions never crash.
    pnan = pos.clone()
    pnan[0, 1] = float("nan")
    out, _ = cu_aa.antialias_fwd(color, rast, pnan, tri, cu_aa.antialias_topology_hash(tri))
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()


def test_antialias_reference_backend_agrees():
    ref = _reference()
    if ref is None or not hasattr(ref, "antialias_fwd"):
        pytest.skip("CPU reference backend not importable in this checkout")
    pos, tri, color, rast = aa_scene()
    topo = cu_aa.antialias_topology_hash(tri)
    out, _ = cu_aa.antialias_fwd(color, rast, pos, tri, topo)
    r_topo = ref.antialias_topology_hash(tri.cpu())
    r_out, r_work = ref.antialias_fwd(color.cpu(), rast.cpu(), pos.cpu(), tri.cpu(), r_topo)
    torch.testing.assert_close(out.cpu(), r_out, atol=1e-4, rtol=1e-4)
    dy = torch.randn(color.shape, generator=torch.Generator().manual_seed(4))
    gc, gp = cu_aa.antialias_bwd(color, rast, pos, tri, dy.to(DEV), None, topo, 2.0)
    rgc, rgp = ref.antialias_bwd(color.cpu(), rast.cpu(), pos.cpu(), tri.cpu(), dy, r_work, r_topo, 2.0)
    torch.testing.assert_close(gc.cpu(), rgc, atol=1e-4, rtol=1e-4)
    scale = float(rgp.abs().max()) + 1e-6
    torch.testing.assert_close(gp.cpu(), rgp, atol=1e-3 * scale, rtol=1e-3)


# ---------------------------------------------------------------------------------------- robustness


def test_interpolate_big_batch_and_tiny_images():
    attr = torch.randn(5, 3, device=DEV)
    tri = torch.tensor([[0, 1, 2], [2, 3, 4]], dtype=torch.int32, device=DEV)
    for n, h, w in ((1, 1, 1), (1024, 1, 3), (3, 1, 1)):
        rast, db = random_rast(n, h, w, 3)
        out, da = cu_ip.interpolate_fwd(attr, rast.to(DEV), tri, db.to(DEV), [0, 2])
        ga, gr, gdb = cu_ip.interpolate_bwd(attr, rast.to(DEV), tri, torch.ones_like(out), db.to(DEV),
                                            torch.ones_like(da), [0, 2])
        torch.cuda.synchronize()
        assert torch.isfinite(ga).all() and out.shape == (n, h, w, 3)


def test_ops_on_second_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    dev = torch.device("cuda:1")
    attr, rast, tri, db = _interp_case((40, 4), [0])
    out, _ = cu_ip.interpolate_fwd(attr.to(dev), rast.to(dev), tri.to(dev), db.to(dev), [0])
    assert out.device == dev
    ref, _ = cu_ip.interpolate_fwd(attr.to(DEV), rast.to(DEV), tri.to(DEV), db.to(DEV), [0])
    torch.testing.assert_close(out.cpu(), ref.cpu())
    with pytest.raises(RuntimeError):
        cu_ip.interpolate_fwd(attr.to(DEV), rast.to(dev), tri.to(dev), None, None)


def test_texture_large_uv_batch_and_1x1_texture():
    tex = torch.rand(1, 1, 1, 2, device=DEV)
    uv = torch.rand(4, 3, 3, 2, device=DEV) * 10 - 5
    for b in ("wrap", "clamp", "zero"):
        out = cu_tex.texture_fwd([tex], uv, None, None, "linear", b)
        torch.cuda.synchronize()
        assert torch.isfinite(out).all()
    out = cu_tex.texture_fwd([tex], uv, None, None, "linear", "clamp")
    torch.testing.assert_close(out, tex.expand(4, 3, 3, 2))


def test_math_constants():
    # Sanity of the helpers used above.
    assert decode_ids(encode_ids(torch.tensor([0, 1, 2**24, 2**24 + 1, 2**24 + 12345]))).tolist() == [
        -1, 0, 2**24 - 1, 2**24, 2**24 + 12344]
    assert math.isclose(encode_ids(torch.tensor([2**24 + 1]))[0].item(), 16777218.0)


# ------------------------------------------------------------------------ strided gradients, fused mips


def _expanded_and_strided(x):
    """An expanded (all-zero-stride) and a transposed (non-contiguous) view with the values of ``x``."""
    one = torch.randn((), device=x.device)
    expanded = one.expand(x.shape)
    strided = x.transpose(1, 2).contiguous().transpose(1, 2)
    assert not strided.is_contiguous()
    return expanded, strided


def test_strided_dy_is_read_in_place():
    """Every backward reads expanded and transposed incoming gradients as their dense copies."""
    attr, rast, tri, db = _interp_case((12, 8), [0, 1, 2, 3, 4, 5, 6, 7])
    attr, rast, tri, db = attr.to(DEV), rast.to(DEV), tri.to(DEV), db.to(DEV)
    idx = list(range(8))
    out, da = cu_ip.interpolate_fwd(attr, rast, tri, db, idx)
    dy = torch.randn_like(out)
    dda = torch.randn_like(da)
    for a, b in zip(_expanded_and_strided(dy), _expanded_and_strided(dda)):
        got = cu_ip.interpolate_bwd(attr, rast, tri, a, db, b, idx)
        want = cu_ip.interpolate_bwd(attr, rast, tri, a.contiguous(), db, b.contiguous(), idx)
        for x, y in zip(got, want):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)

    g = torch.Generator().manual_seed(31)
    tex = torch.rand(2, 16, 16, 3, generator=g).to(DEV)
    levels = [tex, *cu_tex.mip_build(tex, 4, False)]
    uv = torch.rand(2, 5, 7, 2, generator=g).to(DEV) * 3 - 1
    uv_da = (torch.randn(2, 5, 7, 4, generator=g) * 0.1).to(DEV)
    dy = torch.randn(2, 5, 7, 3, generator=g).to(DEV)
    for a in _expanded_and_strided(dy):
        got = cu_tex.texture_bwd(levels, uv, uv_da, None, a, "linear-mipmap-linear", "wrap")
        want = cu_tex.texture_bwd(levels, uv, uv_da, None, a.contiguous(), "linear-mipmap-linear", "wrap")
        for x, y in zip(got[0], want[0]):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[2], want[2], atol=1e-5, rtol=1e-5)

    pos, tri, color, rast = aa_scene()
    topo = cu_aa.antialias_topology_hash(tri)
    _, work = cu_aa.antialias_fwd(color, rast, pos, tri, topo)
    for a in _expanded_and_strided(torch.randn_like(color)):
        got = cu_aa.antialias_bwd(color, rast, pos, tri, a, work, topo, 1.0)
        want = cu_aa.antialias_bwd(color, rast, pos, tri, a.contiguous(), None, topo, 1.0)
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("cube", [False, True])
@pytest.mark.parametrize("det", [False, True])
def test_fused_mip_backward_matches_levels_then_adjoint(channels, cube, det):
    """texture_bwd_mip (padded level gradients, folded on the GPU) equals texture_bwd + the adjoint."""
    torch.use_deterministic_algorithms(det)
    g = torch.Generator().manual_seed(32 + channels)
    shape = (2, 6, 16, 16, channels) if cube else (2, 16, 32, channels)
    tex = torch.rand(*shape, generator=g).to(DEV)
    levels = [tex, *cu_tex.mip_build(tex, 4, cube)]
    nuv, nda = (3, 6) if cube else (2, 4)
    uv = (torch.rand(2, 9, 11, nuv, generator=g) * 2 - 1).to(DEV)
    uv_da = (torch.randn(2, 9, 11, nda, generator=g) * 0.2).to(DEV)
    bias = torch.randn(2, 9, 11, generator=g).to(DEV)
    dy = torch.randn(2, 9, 11, channels, generator=g).to(DEV)
    b = "cube" if cube else "wrap"
    for f in ("linear", "linear-mipmap-nearest", "linear-mipmap-linear"):
        lv = levels if f != "linear" else levels[:1]
        gl, guv, gda, gb = cu_tex.texture_bwd(lv, uv, uv_da, bias, dy, f, b)
        want = cu_tex.mip_adjoint(gl, cube)
        g_tex, guv2, gda2, gb2 = cu_tex.texture_bwd_mip(lv, uv, uv_da, bias, dy, f, b, True)
        torch.testing.assert_close(g_tex, want, atol=1e-5, rtol=1e-5)
        for x, y in ((guv, guv2), (gda, gda2), (gb, gb2)):
            assert (x is None) == (y is None)
            if x is not None:
                torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
        none_tex, guv3, _, _ = cu_tex.texture_bwd_mip(lv, uv, uv_da, bias, dy, f, b, False)
        assert none_tex is None
        torch.testing.assert_close(guv3, guv2, atol=1e-5, rtol=1e-5)


def test_antialias_compacted_items_match_full_pass():
    """The compacted forward (pairs with different ids only) equals the per-pixel evaluation, and the
    backward from its item list equals the backward over the saved flags and the one that evaluates
    every pixel again."""
    pos, tri, color, rast = aa_scene(n=3, h=40, w=56, seed=5)
    topo = cu_aa.antialias_topology_hash(tri)
    out, (alpha, flags, items) = cu_aa.antialias_fwd(color, rast, pos, tri, topo)
    total = color.shape[0] * 40 * 56
    assert items.dtype == torch.int32 and items.numel() == 1 + 2 * total
    assert flags.dtype == torch.uint8 and flags.shape == color.shape[:3]
    accepted = int(((flags & 1) != 0).sum() + ((flags & 2) != 0).sum())
    with_grad = int(((flags & 4) != 0).sum() + ((flags & 8) != 0).sum())
    assert 0 < with_grad == int(items[0]) <= accepted
    ref = aa_oracle(color.cpu(), rast.cpu(), pos.cpu(), tri.cpu())
    torch.testing.assert_close(out.cpu().double(), ref, atol=1e-4, rtol=1e-4)
    dy = torch.randn_like(color)
    no_list = torch.empty(0, dtype=torch.int32, device=DEV)
    a = cu_aa.antialias_bwd(color, rast, pos, tri, dy, (alpha, flags, items), topo, 1.0)
    b = cu_aa.antialias_bwd(color, rast, pos, tri, dy, (alpha, flags, no_list), topo, 1.0)
    c = cu_aa.antialias_bwd(color, rast, pos, tri, dy, None, topo, 1.0)
    torch.testing.assert_close(a[0], c[0], atol=0, rtol=0)
    torch.testing.assert_close(b[0], c[0], atol=0, rtol=0)
    # Position gradients are float atomics summed in another order: equal up to rounding.
    scale = float(c[1].abs().max()) + 1e-6
    torch.testing.assert_close(a[1], c[1], atol=1e-5 * scale, rtol=1e-4)
    torch.testing.assert_close(b[1], c[1], atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("w,misalign", [(56, False), (57, False), (56, True)])
def test_antialias_row_layouts_match_oracle(w, misalign):
    """Rows of a multiple of 4 pixels take the four-pixels-per-thread kernels, other widths and a colour
    tensor that is not 16-byte aligned the per-pixel ones: all agree with the oracle and with the backward
    that evaluates the items again."""
    pos, tri, color, rast = aa_scene(n=2, h=30, w=w, seed=9)
    if misalign:
        buf = torch.zeros(color.numel() + 1, device=DEV)
        buf[1:] = color.reshape(-1)
        color = buf[1:].view(color.shape)
        assert color.data_ptr() % 16 != 0 and color.is_contiguous()
    topo = cu_aa.antialias_topology_hash(tri)
    out, work = cu_aa.antialias_fwd(color, rast, pos, tri, topo)
    ref = aa_oracle(color.cpu(), rast.cpu(), pos.cpu(), tri.cpu())
    torch.testing.assert_close(out.cpu().double(), ref, atol=1e-4, rtol=1e-4)
    dy = torch.randn(color.shape, generator=torch.Generator().manual_seed(2)).to(DEV)
    for g in (dy, dy[:1, :1, :1, :].expand(color.shape)):
        a = cu_aa.antialias_bwd(color, rast, pos, tri, g, work, topo, 1.0)
        b = cu_aa.antialias_bwd(color, rast, pos, tri, g.contiguous(), None, topo, 1.0)
        torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)


def _two_topologies():
    """One scene, two meshes with the same triangle count: the quad's diagonal shared (no silhouette) or
    split onto duplicated vertices (a silhouette), so the antialiased images differ along the diagonal."""
    pos, tri, color, rast = aa_scene(n=2, h=40, w=56, seed=3)
    pos = torch.cat([pos, pos[:, [0, 2]]], dim=1).contiguous()  # vertices 7, 8 copy 0, 2
    tri_split = tri.clone()
    tri_split[1, 0], tri_split[1, 1] = 7, 8
    return pos, tri, tri_split, color, rast


def test_antialias_topology_reuse_follows_tri_content():
    """Without a topology_hash the topology is kept between calls, but any change of tri's content (in place
    or another tensor with the same triangle count) is seen: results equal those of a fresh topology."""
    import nvdiffrast.torch as dr

    pos, tri, tri_split, color, rast = _two_topologies()
    want = {}
    for name, t in (("shared", tri), ("split", tri_split)):
        want[name] = dr.antialias(color, rast, pos, t, topology_hash=dr.antialias_construct_topology_hash(t))
    assert not torch.equal(want["shared"], want["split"])  # the topology matters in this scene
    cu_aa.clear_topology_cache()
    t = tri.clone()
    assert torch.equal(dr.antialias(color, rast, pos, t), want["shared"])
    assert len(cu_aa._cache) == 1
    assert torch.equal(dr.antialias(color, rast, pos, t), want["shared"])  # reused as is
    t.copy_(tri_split)  # in place
    assert torch.equal(dr.antialias(color, rast, pos, t), want["split"])
    assert torch.equal(dr.antialias(color, rast, pos, tri.clone()), want["shared"])  # another tensor
    t.view(-1)[3:6] = tri.view(-1)[3:6]  # through a view
    assert torch.equal(dr.antialias(color, rast, pos, t), want["shared"])
    assert len(cu_aa._cache) == 1


def test_antialias_backward_independent_of_reused_topology():
    """Two forwards on meshes with the same triangle count share the kept topology (the second rebuilds
    it); each backward still gives the gradients of its own mesh."""
    import nvdiffrast.torch as dr

    pos, tri, tri_split, color, rast = _two_topologies()
    g = torch.Generator().manual_seed(11)
    wgt = torch.randn(color.shape, generator=g).to(DEV)

    def grads(t, topo):
        c = color.clone().requires_grad_(True)
        p = pos.clone().requires_grad_(True)
        out = dr.antialias(c, rast, p, t, topology_hash=topo)
        return out, c, p

    want = []
    for t in (tri, tri_split):
        out, c, p = grads(t, dr.antialias_construct_topology_hash(t))
        (out * wgt).sum().backward()
        want.append((c.grad, p.grad))
    cu_aa.clear_topology_cache()
    runs = [grads(t, None) for t in (tri, tri_split)]  # both forwards first, then both backwards
    for out, _, _ in runs:
        (out * wgt).sum().backward()
    for (_, c, p), (gc, gp) in zip(runs, want):
        torch.testing.assert_close(c.grad, gc, atol=0, rtol=0)
        scale = float(gp.abs().max()) + 1e-6
        torch.testing.assert_close(p.grad, gp, atol=1e-5 * scale, rtol=1e-4)
    assert not torch.allclose(want[0][1], want[1][1])  # the two meshes' position gradients differ


def _neighbour_table(topo: torch.Tensor, T: int) -> torch.Tensor:
    """The deterministic part of a topology tensor: the int32 neighbour table after the hash slots."""
    cap = 64
    while cap < 6 * T:
        cap *= 2
    return topo[2 * cap: 2 * cap + (3 * T + 1) // 2].view(torch.int32)[: 3 * T]


def test_antialias_topology_refresh_rebuilds_large_mesh():
    """The reused topology of a mesh larger than one wave of the GPU (the refresh runs grid-stride loops,
    cooperatively where supported) equals a fresh build after every change, and is left alone otherwise."""
    g = torch.Generator().manual_seed(4)
    side = 400
    idx = torch.arange(side * side, dtype=torch.int32).view(side, side)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    tri = torch.stack([torch.stack([a, b, c], -1), torch.stack([b, d, c], -1)], 2).reshape(-1, 3).contiguous()
    T = tri.shape[0]
    cu_aa.clear_topology_cache()
    t = tri.to(DEV)
    first = _neighbour_table(cu_aa.antialias_topology_hash(t, reuse=True), T).clone()
    fresh = _neighbour_table(cu_aa.antialias_topology_hash(t), T)
    assert torch.equal(first, fresh)
    for _ in range(2):
        perm = torch.randperm(side * side, generator=g).to(torch.int32)
        t.copy_(perm[tri.long()].to(DEV))  # same T, new vertex numbering
        got = _neighbour_table(cu_aa.antialias_topology_hash(t, reuse=True), T).clone()
        assert torch.equal(got, _neighbour_table(cu_aa.antialias_topology_hash(t), T))
    again = _neighbour_table(cu_aa.antialias_topology_hash(t, reuse=True), T)  # unchanged: same table
    assert torch.equal(again, got)
    assert int((got >= 0).sum()) > 0 and int((got < 0).sum()) == 4 * (side - 1)  # boundary edges only


@pytest.mark.parametrize("det", [False, True])
def test_antialias_cpp_node_matches_python_function(det):
    """On CUDA, antialias() runs as one op with its autograd node in C++; it gives the results of the
    Python autograd.Function over antialias_fwd/antialias_bwd (bitwise for the image and the colour
    gradient, and for the position gradient in deterministic mode), also under no_grad / inference_mode."""
    import nvdiffrast.torch as dr
    from nvdiffrast.torch import _antialias

    torch.use_deterministic_algorithms(det)
    pos, tri, color, rast = aa_scene(n=2, h=40, w=56, seed=21)
    topo = dr.antialias_construct_topology_hash(tri)
    wgt = torch.randn(color.shape, generator=torch.Generator().manual_seed(3)).to(DEV)
    res = []
    for fused in (True, False):
        c = color.clone().requires_grad_(True)
        p = pos.clone().requires_grad_(True)
        if fused:
            out = dr.antialias(c, rast, p, tri, topology_hash=topo, pos_gradient_boost=2.0)
            assert out.requires_grad and out.grad_fn is not None
        else:
            out = _antialias._AntialiasFunction.apply(c, rast, p, tri, topo, 2.0)
        (out * wgt).sum().backward()
        res.append((out.detach(), c.grad, p.grad))
    (o1, gc1, gp1), (o2, gc2, gp2) = res
    assert torch.equal(o1, o2) and torch.equal(gc1, gc2)
    if det:
        assert torch.equal(gp1, gp2)
    else:
        scale = float(gp2.abs().max()) + 1e-6
        torch.testing.assert_close(gp1, gp2, atol=1e-5 * scale, rtol=1e-4)
    assert float(gp1.abs().sum()) > 0
    with torch.no_grad():
        assert torch.equal(dr.antialias(color, rast, pos, tri, topology_hash=topo), o1)
    with torch.inference_mode():
        assert torch.equal(dr.antialias(color, rast, pos, tri, topology_hash=topo), o1)
    # Only pos tracked: the colour gradient is not needed, the position gradient is the same.
    p = pos.clone().requires_grad_(True)
    (dr.antialias(color, rast, p, tri, topology_hash=topo, pos_gradient_boost=2.0) * wgt).sum().backward()
    torch.testing.assert_close(p.grad, gp1, atol=1e-5 * (float(gp1.abs().max()) + 1e-6), rtol=1e-4)


def test_antialias_topology_reuse_can_be_turned_off(monkeypatch):
    import nvdiffrast.torch as dr

    pos, tri, _, color, rast = _two_topologies()
    cu_aa.clear_topology_cache()
    monkeypatch.setenv("NVDIFFRAST_TOPOLOGY_CACHE", "0")
    dr.antialias(color, rast, pos, tri)
    assert len(cu_aa._cache) == 0


# ------------------------------------------------------------------------------ fused mip build


@pytest.mark.parametrize("shape,cube,levels", [
    ((2, 1024, 1024, 3), False, None),   # two-level launches, then the tail
    ((1, 256, 64, 3), False, None),      # non-square: the short side reaches 1 in the tail
    ((1, 4096, 2, 2), False, None),      # a side of 1 inside the two-level launches
    ((3, 128, 128, 5), False, 1),        # one level only (single-level launch)
    ((2, 256, 256, 4), False, 3),        # odd number of large levels
    ((1, 6, 128, 128, 4), True, None),   # cube faces
])
def test_mip_build_fused_launches_match_torch(shape, cube, levels):
    """The fused pyramid launches (two levels per launch, one launch for the small tail) give the
    per-level box means of ``_mip`` for every level."""
    from nvdiffrast.torch import _mip

    g = torch.Generator().manual_seed(7)
    tex = torch.randn(*shape, generator=g).to(DEV)
    hh, ww = (shape[2], shape[3]) if cube else (shape[1], shape[2])
    sizes = _mip.mip_level_sizes(ww, hh, levels)
    want = _mip.build_mip_levels(tex, sizes)
    got = cu_tex.mip_build(tex, len(sizes), cube)
    assert len(got) == len(want) == len(sizes)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------- profiling


def _profile() -> None:  # pragma: no cover - a manual tool: python tests/gpu/test_ops_cuda.py --profile
    """Per-op kernel timings of this backend on the benchmark scenes (median ms, CUDA events)."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
    import bench_api

    import nvdiffrast.torch as dr
    from nvdiffrast.torch import _mip

    def timeit(fn, iters=10):
        return bench_api.timeit(fn, iters, warmup=2)  # median of CUDA-event timings

    print(f"# gpu={torch.cuda.get_device_name()}")
    ctx = dr.RasterizeCudaContext()
    for name, sd, batch, res in bench_api.WORKLOADS:
        _profile_workload(dr, _mip, bench_api, ctx, timeit, name, sd, batch, res)


def _profile_workload(dr, _mip, bench_api, ctx, timeit, name, sd, batch, res) -> None:  # pragma: no cover
    pos, tri, uv, attr = bench_api.make_scene(sd, batch)
    rast, db = dr.rasterize(ctx, pos, tri, resolution=[res, res])
    idx = list(range(attr.shape[1]))
    out, da = cu_ip.interpolate_fwd(attr, rast, tri, db, idx)
    dy, dda = torch.ones_like(out), torch.ones_like(da)
    rows = {
        "interp_fwd": lambda: cu_ip.interpolate_fwd(attr, rast, tri, db, idx),
        "interp_bwd": lambda: cu_ip.interpolate_bwd(attr, rast, tri, dy, db, dda, idx),
    }
    texc, uvda = cu_ip.interpolate_fwd(uv, rast, tri, db, [0, 1])
    tex = torch.rand(1, 1024, 1024, 3, device=DEV).expand(batch, -1, -1, -1).contiguous()
    sizes = _mip.mip_level_sizes(1024, 1024)
    levels = [tex, *_mip.build_mip_levels(tex, sizes)]
    tdy = torch.ones(batch, res, res, 3, device=DEV)
    rows["mip_build(torch)"] = lambda: _mip.build_mip_levels(tex, sizes)
    rows["tex_fwd"] = lambda: cu_tex.texture_fwd(levels, texc, uvda, None, "linear-mipmap-linear", "wrap")
    rows["tex_bwd"] = lambda: cu_tex.texture_bwd(levels, texc, uvda, None, tdy, "linear-mipmap-linear", "wrap")
    gl = cu_tex.texture_bwd(levels, texc, uvda, None, tdy, "linear-mipmap-linear", "wrap")[0]
    rows["mip_adjoint(torch)"] = lambda: _mip.mip_adjoint(gl, tex.shape)
    rows["mip_build(cuda)"] = lambda: cu_tex.mip_build(tex, len(sizes), False)
    rows["mip_adjoint(cuda)"] = lambda: cu_tex.mip_adjoint(gl, False)
    col = out[..., :3].contiguous()
    topo = cu_aa.antialias_topology_hash(tri)
    ones = torch.ones_like(col)
    rows["aa_hash"] = lambda: cu_aa.antialias_topology_hash(tri)
    rows["aa_hash(reuse)"] = lambda: cu_aa.antialias_topology_hash(tri, reuse=True)
    rows["aa_fwd"] = lambda: cu_aa.antialias_fwd(col, rast, pos, tri, topo)
    work = cu_aa.antialias_fwd(col, rast, pos, tri, topo)[1]
    rows["aa_bwd"] = lambda: cu_aa.antialias_bwd(col, rast, pos, tri, ones, work, topo, 1.0)
    for k, fn in rows.items():
        print(f"{name:20s} {k:20s} {timeit(fn):8.3f} ms", flush=True)
    torch.use_deterministic_algorithms(True)
    for k in ("interp_bwd", "tex_bwd", "aa_bwd"):
        print(f"{name:20s} {k + '[det]':20s} {timeit(rows[k], 3):8.3f} ms", flush=True)
    torch.use_deterministic_algorithms(False)


if __name__ == "__main__":  # pragma: no cover
    _profile()
