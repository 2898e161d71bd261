"""Finite-difference gradient checks for texture() (spec §3.6 table, §4.3, §4.4).

Every differentiable input (tex, uv, uv_da, mip_level_bias, custom mip levels; 2-D and cube) is
checked by directional derivatives: autograd's gradient dotted with random directions against
central differences of a random linear functional of the output. Sample points are placed where the
function is smooth: texture coordinates a quarter texel from every texel centre and edge of every
mip level, and mip levels (lambda) strictly between integers and inside (0, L). The tolerance is
relative (2 %) plus a float32 noise floor estimated from the size of the functional.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nvdiffrast.torch as dr

RTOL = 2e-2


@pytest.fixture
def dev(backend):
    if backend.name == "gl":
        pytest.skip("texture takes no rasterizer context: the gl case equals the reference/cuda case of its device")
    return backend.device


def _t(x, dev):
    return torch.as_tensor(np.asarray(x), dtype=torch.float32).to(dev).contiguous()


def fd_check(fn, x: torch.Tensor, *, eps: float, n_dirs: int = 3, seed: int = 0, dir_scale=None) -> None:
    """Directional-derivative check of ``fn`` (tensor -> tensor) at ``x``."""
    x0 = x.detach().clone()
    xg = x0.clone().requires_grad_(True)
    out = fn(xg)
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out.shape, generator=gen).to(out.device)
    (g,) = torch.autograd.grad((out * w).sum(), xg)
    assert torch.isfinite(g).all()
    with torch.no_grad():
        noise = 1e-6 * float((out.abs() * w.abs()).sum()) / eps
    for _ in range(n_dirs):
        v = torch.randn(x0.shape, generator=gen).to(x0.device)
        if dir_scale is not None:
            v = v * dir_scale
        with torch.no_grad():
            lp = (fn(x0 + eps * v).double() * w.double()).sum()
            lm = (fn(x0 - eps * v).double() * w.double()).sum()
        num = float((lp - lm) / (2 * eps))
        ana = float((g.double() * v.double()).sum())
        assert abs(num - ana) <= noise + RTOL * max(abs(num), abs(ana)), (num, ana, noise)


def safe_coords(rng, shape, size, lo=-0.6, hi=1.6):
    """Texture coordinates whose texel position (any mip level of a power-of-two side) is a quarter
    texel away from every kink of the bilinear lookup, wrap point and clamp border."""
    k = np.floor(rng.uniform(lo, hi, size=shape) * size)
    frac = rng.choice([0.25, 0.75], size=shape) + rng.uniform(-0.08, 0.08, size=shape)
    return (k + frac) / size


def safe_levels(rng, shape, last):
    """lambda values with fractional part in [0.3, 0.7] inside (0, last)."""
    return rng.integers(0, last, size=shape) + rng.uniform(0.3, 0.7, size=shape)


def footprints(rng, lam, width, height):
    """uv_da (ds/dX, ds/dY, dt/dX, dt/dY) of rotated anisotropic footprints with major axis 2**lam texels."""
    out = np.zeros(lam.shape + (4,))
    it = np.nditer(lam, flags=["multi_index"])
    for v in it:
        a, b = rng.uniform(0, 2 * math.pi, size=2)
        ra = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        rb = np.array([[math.cos(b), -math.sin(b)], [math.sin(b), math.cos(b)]])
        jac = ra @ np.diag([2.0 ** float(v), rng.uniform(0.2, 0.7) * 2.0 ** float(v)]) @ rb
        out[it.multi_index] = [jac[0, 0] / width, jac[0, 1] / width, jac[1, 0] / height, jac[1, 1] / height]
    return out


# --------------------------------------------------------------------------------------- 2-D
@pytest.mark.parametrize("boundary", ["wrap", "clamp", "zero"])
@pytest.mark.parametrize("filter_mode", ["linear", "linear-mipmap-nearest", "linear-mipmap-linear"])
def test_grad_2d(dev, filter_mode, boundary):
    rng = np.random.default_rng(30)
    W, H, n, h, w = 16, 8, 2, 3, 4  # levels 16x8 ... 1x1: L = 4
    tex = _t(rng.standard_normal((1, H, W, 3)), dev)
    uv = np.stack([safe_coords(rng, (n, h, w), W), safe_coords(rng, (n, h, w), H)], -1)
    uv = _t(uv, dev)
    bias = _t(rng.uniform(-0.15, 0.15, size=(n, h, w)), dev)
    lam_uv = safe_levels(rng, (n, h, w), 3) - bias.cpu().numpy()
    uv_da = _t(footprints(rng, lam_uv, W, H), dev)
    mip = "mipmap" in filter_mode

    def run(tex=tex, uv=uv, uv_da=uv_da, bias=bias):
        kw = {"uv_da": uv_da, "mip_level_bias": bias} if mip else {}
        return dr.texture(tex, uv, filter_mode=filter_mode, boundary_mode=boundary, **kw)

    fd_check(lambda x: run(tex=x), tex, eps=1e-2)
    fd_check(lambda x: run(uv=x), uv, eps=1e-3)
    if filter_mode == "linear-mipmap-linear":
        fd_check(lambda x: run(uv_da=x), uv_da, eps=1e-3, dir_scale=uv_da.abs() + 1e-3)
        fd_check(lambda x: run(bias=x), bias, eps=1e-3)
        # The level gradient is not trivially zero here.
        b = bias.clone().requires_grad_(True)
        run(bias=b).sum().backward()
        assert b.grad.abs().max() > 1e-3
    if filter_mode == "linear-mipmap-nearest":
        a, b = uv_da.clone().requires_grad_(True), bias.clone().requires_grad_(True)
        u = uv.clone().requires_grad_(True)
        run(uv=u, uv_da=a, bias=b).sum().backward()
        assert a.grad is None and b.grad is None  # no gradient to uv_da / bias (spec §3.6 table)
        assert u.grad is not None and u.grad.abs().max() > 0


def test_grad_nearest(dev):
    rng = np.random.default_rng(31)
    tex = _t(rng.standard_normal((1, 4, 4, 2)), dev).requires_grad_(True)
    uv = _t([[[[0.1, 0.1], [0.15, 0.2], [0.9, 0.6]]]], dev).requires_grad_(True)
    out = dr.texture(tex, uv, filter_mode="nearest")
    out.sum().backward()
    assert uv.grad is None  # nearest: no uv gradient
    g = tex.grad[0, ..., 0].cpu().numpy()
    want = np.zeros((4, 4))
    want[0, 0] = 2.0  # two samples in texel [0, 0]
    want[2, 3] = 1.0
    assert np.array_equal(g, want)


def test_wrap_derivative_of_fraction_is_one(dev):
    rng = np.random.default_rng(32)
    tex = _t(rng.standard_normal((1, 8, 8, 1)), dev)
    base = np.array([0.33, 0.61])
    grads = []
    for shift in (0.0, 1.0, -2.0):
        uv = _t((base + shift).reshape(1, 1, 1, 2), dev).requires_grad_(True)
        dr.texture(tex, uv).sum().backward()
        grads.append(uv.grad.reshape(-1).cpu().numpy())
    assert np.allclose(grads[0], grads[1], atol=1e-4) and np.allclose(grads[0], grads[2], atol=1e-4)
    assert np.abs(grads[0]).max() > 1e-2


def test_clamp_and_zero_borders_have_no_uv_gradient(dev):
    rng = np.random.default_rng(33)
    tex = _t(rng.uniform(1, 2, size=(1, 8, 8, 1)), dev)
    uv = _t([[[[1.3, 0.4], [0.4, -0.2], [-0.5, 1.5]]]], dev).requires_grad_(True)
    dr.texture(tex, uv, boundary_mode="clamp").sum().backward()
    g = uv.grad[0, 0].cpu().numpy()
    assert g[0, 0] == 0 and g[1, 1] == 0 and (g[2] == 0).all()  # clamped axes
    assert g[0, 1] != 0 and g[1, 0] != 0  # the other axes still move
    uv.grad = None
    dr.texture(tex, uv, boundary_mode="zero").sum().backward()
    assert torch.equal(uv.grad, torch.zeros_like(uv.grad))  # every footprint is entirely outside


def test_level_gradients_vanish_when_level_is_clamped(dev):
    rng = np.random.default_rng(34)
    tex = _t(rng.standard_normal((1, 8, 8, 2)), dev)  # L = 3
    uv = _t(rng.uniform(0, 1, size=(1, 1, 4, 2)), dev)
    bias = _t([[[-0.5, 2.5, 7.0, 1.5]]], dev).requires_grad_(True)
    uv_da = _t(np.zeros((1, 1, 4, 4)), dev).requires_grad_(True)  # zero footprint: lambda = -inf
    out = dr.texture(tex, uv, uv_da=uv_da, mip_level_bias=bias)
    (out * torch.randn_like(out)).sum().backward()
    g = bias.grad.reshape(-1).cpu().numpy()
    assert g[0] == 0 and g[1] == 0 and g[2] == 0 and g[3] == 0  # lambda = -inf + bias is -inf: clamped
    assert torch.isfinite(uv_da.grad).all()
    uv_da2 = _t(np.full((1, 1, 4, 4), 0.05), dev).requires_grad_(True)
    bias.grad = None
    out = dr.texture(tex, uv, uv_da=uv_da2, mip_level_bias=bias)
    (out * torch.randn_like(out)).sum().backward()
    g = bias.grad.reshape(-1).cpu().numpy()
    # J = 8 * 0.05 * ones(2, 2): sigma_max = 0.8, lambda_uv = -0.32 -> -0.82 (clamped), 2.18, 6.68 (clamped), 1.18.
    assert g[0] == 0 and g[2] == 0 and g[1] != 0 and g[3] != 0
    assert torch.isfinite(uv_da2.grad).all()


def test_grad_custom_mip_levels(dev):
    rng = np.random.default_rng(35)
    W = H = 8
    tex = _t(rng.standard_normal((1, H, W, 2)), dev)
    levels = [_t(rng.standard_normal((1, H >> k, W >> k, 2)), dev) for k in (1, 2, 3)]
    uv = _t(np.stack([safe_coords(rng, (1, 3, 3), W), safe_coords(rng, (1, 3, 3), H)], -1), dev)
    bias = _t(safe_levels(rng, (1, 3, 3), 3), dev)
    for k in range(3):
        def run(x, k=k):
            lv = list(levels)
            lv[k] = x
            return dr.texture(tex, uv, mip_level_bias=bias, mip=lv)
        fd_check(run, levels[k], eps=1e-2, seed=k)
    # tex gets only the gradient of the base level; the list tensors get theirs.
    t = tex.clone().requires_grad_(True)
    lv = [x.clone().requires_grad_(True) for x in levels]
    out = dr.texture(t, uv, mip_level_bias=bias, mip=lv)
    out.sum().backward()
    fd_check(lambda x: dr.texture(x, uv, mip_level_bias=bias, mip=levels), tex, eps=1e-2)
    total = t.grad.sum() + sum(x.grad.sum() for x in lv)
    assert float(total) == pytest.approx(2 * 9, abs=1e-4)  # weights sum to 1 per sample and channel
    assert all(x.grad.abs().sum() > 0 for x in lv[:2])


# -------------------------------------------------------------------------------------- cube
def _np_face(d):
    x, y, z = d
    ax, ay, az = abs(x), abs(y), abs(z)
    if az > max(ax, ay):
        return (4 if z > 0 else 5), az
    if ay > ax:
        return (2 if y > 0 else 3), ay
    return (0 if x > 0 else 1), ax


_INV = {0: lambda u, v: (1, -v, -u), 1: lambda u, v: (-1, -v, u), 2: lambda u, v: (u, 1, v),
        3: lambda u, v: (u, -1, -v), 4: lambda u, v: (u, -v, 1), 5: lambda u, v: (-u, -v, -1)}


def _np_st(d):
    face, m = _np_face(d)
    x, y, z = d
    return {0: (0.5 - z / (2 * m), 0.5 - y / (2 * m)), 1: (0.5 + z / (2 * m), 0.5 - y / (2 * m)),
            2: (0.5 + x / (2 * m), 0.5 + z / (2 * m)), 3: (0.5 + x / (2 * m), 0.5 - z / (2 * m)),
            4: (0.5 + x / (2 * m), 0.5 - y / (2 * m)), 5: (0.5 - x / (2 * m), 0.5 - y / (2 * m))}[face]


def _np_cube_lambda(d, da, size):
    jac = np.zeros((2, 3))
    for a in range(3):
        e = np.zeros(3)
        e[a] = 1e-6
        s1, t1 = _np_st(d + e)
        s0, t0 = _np_st(d - e)
        jac[:, a] = [(s1 - s0) / 2e-6, (t1 - t0) / 2e-6]
    return math.log2(np.linalg.svd(jac @ da.reshape(3, 2) * size, compute_uv=False)[0])


@pytest.mark.parametrize("filter_mode", ["linear", "linear-mipmap-nearest", "linear-mipmap-linear"])
def test_grad_cube(dev, filter_mode):
    rng = np.random.default_rng(36)
    size, n = 8, 10  # levels 8, 4, 2, 1: L = 3
    tex = _t(rng.standard_normal((1, 6, size, size, 2)), dev)
    dirs, das, biases = [], [], []
    while len(dirs) < n:
        face = int(rng.integers(0, 6))
        s, t = safe_coords(rng, (2,), size, 0.3, 0.7)
        r = rng.uniform(0.8, 1.5)
        d = r * np.array(_INV[face](2 * s - 1, 2 * t - 1), dtype=np.float64)
        da = rng.standard_normal(6) * 10 ** rng.uniform(-1.3, -0.7)
        lam = _np_cube_lambda(d, da, size)
        target = safe_levels(rng, (), 2) + 0.0
        bias = target - lam
        if abs(bias) > 1.5:
            continue
        dirs.append(d)
        das.append(da)
        biases.append(bias)
    uv = _t(np.array(dirs).reshape(1, 2, 5, 3), dev)
    uv_da = _t(np.array(das).reshape(1, 2, 5, 6), dev)
    bias = _t(np.array(biases).reshape(1, 2, 5), dev)
    mip = "mipmap" in filter_mode

    def run(tex=tex, uv=uv, uv_da=uv_da, bias=bias):
        kw = {"uv_da": uv_da, "mip_level_bias": bias} if mip else {}
        return dr.texture(tex, uv, filter_mode=filter_mode, boundary_mode="cube", **kw)

    fd_check(lambda x: run(tex=x), tex, eps=1e-2)
    fd_check(lambda x: run(uv=x), uv, eps=1e-3)  # includes the level's dependence on direction
    if filter_mode == "linear-mipmap-linear":
        fd_check(lambda x: run(uv_da=x), uv_da, eps=1e-3, dir_scale=uv_da.abs() + 1e-3)
        fd_check(lambda x: run(bias=x), bias, eps=1e-3)


def test_grad_cube_across_edges_and_corners(dev):
    """Footprints that straddle a face edge (one coordinate near 1) or a corner (both near 0 or 1)."""
    rng = np.random.default_rng(37)
    size = 8
    tex = _t(rng.standard_normal((1, 6, size, size, 2)), dev)
    dirs = []
    for k in range(24):
        face = k % 6
        near = rng.uniform(0.94, 0.97, size=2)  # texel position 7.02 .. 7.26: past the last centre
        s, t = (near[0], rng.uniform(0.3, 0.7)) if k < 12 else (near[0], near[1])
        if rng.random() < 0.5:
            s = 1 - s
        if k >= 12 and rng.random() < 0.5:
            t = 1 - t
        dirs.append(np.array(_INV[face](2 * s - 1, 2 * t - 1), dtype=np.float64) * rng.uniform(0.8, 1.3))
    uv = _t(np.array(dirs).reshape(1, 4, 6, 3), dev)
    fd_check(lambda x: dr.texture(tex, x, boundary_mode="cube"), uv, eps=1e-3)
    fd_check(lambda x: dr.texture(x, uv, boundary_mode="cube"), tex, eps=1e-2)


def test_grad_cube_custom_levels(dev):
    rng = np.random.default_rng(38)
    tex = _t(rng.standard_normal((1, 6, 4, 4, 2)), dev)
    levels = [_t(rng.standard_normal((1, 6, 2, 2, 2)), dev), _t(rng.standard_normal((1, 6, 1, 1, 2)), dev)]
    uv = _t(rng.standard_normal((1, 3, 3, 3)), dev)
    bias = _t(safe_levels(rng, (1, 3, 3), 2), dev)
    for k in range(2):
        def run(x, k=k):
            lv = list(levels)
            lv[k] = x
            return dr.texture(tex, uv, mip_level_bias=bias, mip=lv, boundary_mode="cube")
        fd_check(run, levels[k], eps=1e-2, seed=k)
