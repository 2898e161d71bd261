"""texture() in 2-D: every filter mode x boundary mode against direct formulas (spec §4.3), mode
resolution, broadcasting, and the error catalogue of spec §6.

The oracle here is an independent per-point float64 NumPy transcription of the spec's formulas
(texel sampling, box pyramid, lambda = log2 of the largest singular value via an SVD).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nvdiffrast.torch as dr

# Forward values: float32 kernels vs a float64 oracle on O(1) data.
ATOL = 2e-5


@pytest.fixture
def dev(backend):
    if backend.name == "gl":
        pytest.skip("texture takes no rasterizer context: the gl case equals the reference/cuda case of its device")
    return backend.device


def _t(x, dev, dtype=torch.float32):
    return torch.as_tensor(np.asarray(x), dtype=dtype).to(dev).contiguous()


# ------------------------------------------------------------------------------------ oracle
def np_pyramid(tex: np.ndarray, max_levels: int | None = None) -> list[np.ndarray]:
    """tex [H, W, C] -> [level0, level1, ...] by 2x2 box averages (2-sample when one side is 1)."""
    levels = [tex.astype(np.float64)]
    while (levels[-1].shape[0] > 1 or levels[-1].shape[1] > 1) and (max_levels is None or len(levels) <= max_levels):
        t = levels[-1]
        h, w, c = t.shape
        fh, fw = (2 if h > 1 else 1), (2 if w > 1 else 1)
        levels.append(t.reshape(h // fh, fh, w // fw, fw, c).mean(axis=(1, 3)))
    return levels


def np_texel(tex, i, j, boundary):
    h, w = tex.shape[:2]
    if boundary == "wrap":
        i, j = i % h, j % w
    elif boundary == "clamp":
        i, j = min(max(i, 0), h - 1), min(max(j, 0), w - 1)
    elif not (0 <= i < h and 0 <= j < w):
        return np.zeros(tex.shape[2])
    return tex[i, j]


def np_nearest(tex, s, t, boundary):
    h, w = tex.shape[:2]
    if boundary == "wrap":
        s, t = s - math.floor(s), t - math.floor(t)
    j, i = math.floor(s * w), math.floor(t * h)
    if boundary == "zero" and not (0 <= i < h and 0 <= j < w):
        return np.zeros(tex.shape[2])
    return tex[min(max(i, 0), h - 1), min(max(j, 0), w - 1)]


def np_bilinear(tex, s, t, boundary):
    h, w = tex.shape[:2]
    if boundary == "wrap":
        s, t = s - math.floor(s), t - math.floor(t)
    x, y = s * w - 0.5, t * h - 0.5
    if boundary == "clamp":
        x, y = min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
    j0, i0 = math.floor(x), math.floor(y)
    fx, fy = x - j0, y - i0
    return ((1 - fx) * (1 - fy) * np_texel(tex, i0, j0, boundary) + fx * (1 - fy) * np_texel(tex, i0, j0 + 1, boundary)
            + (1 - fx) * fy * np_texel(tex, i0 + 1, j0, boundary) + fx * fy * np_texel(tex, i0 + 1, j0 + 1, boundary))


def np_lambda(da, w, h):
    jac = np.array([[w * da[0], w * da[1]], [h * da[2], h * da[3]]], dtype=np.float64)
    sig = np.linalg.svd(jac, compute_uv=False)[0]
    return math.log2(sig) if sig > 0 else -math.inf


def np_texture(levels, s, t, da, bias, filter_mode, boundary):
    if filter_mode == "nearest":
        return np_nearest(levels[0], s, t, boundary)
    if filter_mode == "linear":
        return np_bilinear(levels[0], s, t, boundary)
    h, w = levels[0].shape[:2]
    lam = (np_lambda(da, w, h) if da is not None else 0.0) + (bias if bias is not None else 0.0)
    last = len(levels) - 1
    lam = min(max(lam, 0.0), float(last))
    l0 = math.floor(lam)
    f = lam - l0
    if filter_mode == "linear-mipmap-nearest":
        return np_bilinear(levels[l0], s, t, boundary)
    l1 = min(l0 + 1, last)
    return (1 - f) * np_bilinear(levels[l0], s, t, boundary) + f * np_bilinear(levels[l1], s, t, boundary)


def oracle(tex, uv, uv_da, bias, filter_mode, boundary, max_levels=None):
    """tex [B, H, W, C], uv [N, h, w, 2] (NumPy) -> [N, h, w, C]."""
    n, hh, ww = uv.shape[:3]
    out = np.zeros((n, hh, ww, tex.shape[-1]))
    mipmapped = "mipmap" in filter_mode
    pyr = [np_pyramid(tex[b], max_levels) if mipmapped else [tex[b].astype(np.float64)] for b in range(tex.shape[0])]
    for b in range(n):
        levels = pyr[b if tex.shape[0] > 1 else 0]
        for i in range(hh):
            for j in range(ww):
                da = None if uv_da is None else uv_da[b, i, j]
                bs = None if bias is None else float(bias[b, i, j])
                out[b, i, j] = np_texture(levels, float(uv[b, i, j, 0]), float(uv[b, i, j, 1]), da, bs,
                                          filter_mode, boundary)
    return out


def away_from_integers(v: np.ndarray, margin: float = 2e-3) -> np.ndarray:
    """Nudge values so that none is within `margin` of an integer (keeps floor() stable in float32)."""
    f = v - np.floor(v)
    v = np.where(f < margin, v + 2 * margin, v)
    return np.where(f > 1 - margin, v - 2 * margin, v)


# ----------------------------------------------------------------------------- observed values
def test_observed_values_4x4(dev):
    tex = _t(np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1), dev)

    def q(s, t, **kw):
        return dr.texture(tex, _t([[[[s, t]]]], dev), **kw).item()

    assert q(0.5, 0.5, filter_mode="nearest") == 10.0
    assert q(1.0, 1.0, filter_mode="nearest") == 0.0  # wrap: (1, 1) -> texel [0, 0]
    assert q(1.125, 0.875, filter_mode="nearest", boundary_mode="clamp") == 15.0
    assert q(1.0, 1.0) == pytest.approx(7.5)  # bilinear wrap: mean of the four corner texels
    assert q(1.0, 1.0, boundary_mode="zero") == pytest.approx(3.75)  # 15 / 4
    # t indexes rows, s columns: (s, t) = (0.125, 0.375) is the centre of row 1, column 0.
    assert q(0.125, 0.375) == pytest.approx(4.0)
    assert q(0.375, 0.125) == pytest.approx(1.0)


def test_bias_1_6_selects_level_1(dev):
    tex_np = np.random.default_rng(1).standard_normal((1, 8, 8, 2)).astype(np.float32)
    tex = _t(tex_np, dev)
    uv_np = np.array([[[[0.3, 0.7], [0.81, 0.22]]]], dtype=np.float32)
    bias = torch.full((1, 1, 2), 1.6, device=dev)
    got = dr.texture(tex, _t(uv_np, dev), mip_level_bias=bias, filter_mode="linear-mipmap-nearest").cpu().numpy()
    lv = np_pyramid(tex_np[0])
    for k in range(2):
        s, t = uv_np[0, 0, k]
        want = np_bilinear(lv[1], float(s), float(t), "wrap")
        assert np.allclose(got[0, 0, k], want, atol=ATOL)
        assert not np.allclose(want, np_bilinear(lv[2], float(s), float(t), "wrap"), atol=1e-3)


# ----------------------------------------------------------------------------- mode x boundary
@pytest.mark.parametrize("boundary", ["wrap", "clamp", "zero"])
@pytest.mark.parametrize("filter_mode", ["nearest", "linear"])
def test_base_filters_match_formula(dev, filter_mode, boundary):
    rng = np.random.default_rng(2)
    tex_np = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)  # odd, non-square sides are fine here
    uv_np = rng.uniform(-0.7, 1.7, size=(2, 4, 5, 2)).astype(np.float32)
    if filter_mode == "nearest":
        uv_np[..., 0] = away_from_integers(uv_np[..., 0] * 6) / 6
        uv_np[..., 1] = away_from_integers(uv_np[..., 1] * 5) / 5
    uv_np[0, 0, 0] = [1.0, 1.0]
    uv_np[0, 0, 1] = [0.0, 0.0]
    got = dr.texture(_t(tex_np, dev), _t(uv_np, dev), filter_mode=filter_mode, boundary_mode=boundary)
    want = oracle(tex_np, uv_np, None, None, filter_mode, boundary)
    assert got.shape == (2, 4, 5, 3) and got.dtype == torch.float32 and got.device.type == dev.type
    assert np.allclose(got.cpu().numpy(), want, atol=ATOL)


@pytest.mark.parametrize("boundary", ["wrap", "clamp", "zero"])
@pytest.mark.parametrize("filter_mode", ["linear-mipmap-nearest", "linear-mipmap-linear"])
@pytest.mark.parametrize("inputs", ["uv_da", "bias", "both"])
def test_mipmap_filters_match_formula(dev, filter_mode, boundary, inputs):
    rng = np.random.default_rng(3)
    tex_np = rng.standard_normal((1, 8, 16, 2)).astype(np.float32)  # 16x8 -> 8x4, 4x2, 2x1, 1x1
    n, h, w = 2, 4, 6
    uv_np = rng.uniform(-0.5, 1.5, size=(n, h, w, 2)).astype(np.float32)
    uv_da_np = bias_np = None
    if inputs in ("uv_da", "both"):
        # Random anisotropic footprints of 0.3 .. 12 texels.
        uv_da_np = (rng.uniform(-1, 1, size=(n, h, w, 4)) * np.exp(rng.uniform(-1.2, 2.5, size=(n, h, w, 1))))
        uv_da_np = (uv_da_np / np.array([16, 16, 8, 8])).astype(np.float32)
    if inputs in ("bias", "both"):
        bias_np = rng.uniform(-1.0, 5.0, size=(n, h, w)).astype(np.float32)
    got = dr.texture(_t(tex_np, dev), _t(uv_np, dev),
                     uv_da=None if uv_da_np is None else _t(uv_da_np, dev),
                     mip_level_bias=None if bias_np is None else _t(bias_np, dev),
                     filter_mode=filter_mode, boundary_mode=boundary)
    want = oracle(tex_np, uv_np, uv_da_np, bias_np, filter_mode, boundary)
    assert np.allclose(got.cpu().numpy(), want, atol=1e-4)


def test_lambda_is_log2_of_largest_singular_value(dev):
    """Rotated anisotropic footprints of known size pick the level that a bias of that size picks."""
    rng = np.random.default_rng(4)
    tex_np = rng.standard_normal((1, 32, 64, 1)).astype(np.float32)
    lam = np.array([0.5, 1.25, 2.75, 4.4])
    ang = np.array([0.0, 0.7, 2.1, -1.0])
    minor = np.array([0.3, 1.0, 0.1, 0.6])
    da = []
    for lv, a, m in zip(lam, ang, minor):
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        jac = rot @ np.diag([2.0 ** lv, m * 2.0 ** lv])  # texels per pixel
        da.append([jac[0, 0] / 64, jac[0, 1] / 64, jac[1, 0] / 32, jac[1, 1] / 32])
    uv = _t(rng.uniform(0, 1, size=(1, 1, 4, 2)), dev)
    tex = _t(tex_np, dev)
    a = dr.texture(tex, uv, uv_da=_t(np.array(da).reshape(1, 1, 4, 4), dev))
    b = dr.texture(tex, uv, mip_level_bias=_t(lam.reshape(1, 1, 4), dev))
    assert torch.allclose(a, b, atol=1e-4)


def test_level_clamped_to_available_levels(dev):
    tex_np = np.random.default_rng(5).standard_normal((1, 4, 4, 1)).astype(np.float32)  # levels 0..2
    tex = _t(tex_np, dev)
    uv = _t([[[[0.3, 0.6]]]], dev)
    top = dr.texture(tex, uv, mip_level_bias=_t([[[9.0]]], dev))
    assert top.item() == pytest.approx(float(tex_np.mean()), abs=ATOL)  # the 1x1 level
    low = dr.texture(tex, uv, mip_level_bias=_t([[[-3.0]]], dev))
    assert low.item() == pytest.approx(dr.texture(tex, uv).item(), abs=ATOL)


# ------------------------------------------------------------------------ modes and options
def test_auto_mode_resolution(dev):
    rng = np.random.default_rng(6)
    tex = _t(rng.standard_normal((1, 8, 8, 2)), dev)
    uv = _t(rng.uniform(0, 1, size=(1, 3, 3, 2)), dev)
    bias = _t(rng.uniform(0.2, 2.8, size=(1, 3, 3)), dev)
    lin = dr.texture(tex, uv, filter_mode="linear")
    assert torch.equal(dr.texture(tex, uv), lin)
    assert torch.equal(dr.texture(tex, uv, mip_level_bias=bias),
                       dr.texture(tex, uv, mip_level_bias=bias, filter_mode="linear-mipmap-linear"))
    assert not torch.allclose(dr.texture(tex, uv, mip_level_bias=bias), lin, atol=1e-3)
    # 'auto' with only a mip stack resolves to 'linear' and ignores the stack (any object).
    assert torch.equal(dr.texture(tex, uv, mip=dr.texture_construct_mip(tex)), lin)
    assert torch.equal(dr.texture(tex, uv, mip=("not", "a", "stack")), lin)
    # Non-mipmap modes ignore uv_da / mip_level_bias, even of a wrong shape.
    assert torch.equal(dr.texture(tex, uv, uv_da=torch.zeros(7, device=dev), filter_mode="linear"), lin)
    assert torch.equal(dr.texture(tex, uv, uv_da="ignored", mip_level_bias=3, filter_mode="nearest"),
                       dr.texture(tex, uv, filter_mode="nearest"))


def test_max_mip_level_zero_degrades_to_linear(dev):
    rng = np.random.default_rng(7)
    tex = _t(rng.standard_normal((1, 8, 8, 3)), dev).requires_grad_(True)
    uv = _t(rng.uniform(0, 1, size=(1, 2, 3, 2)), dev)
    uv_da = _t(rng.uniform(0.1, 0.5, size=(1, 2, 3, 4)), dev).requires_grad_(True)
    bias = _t(rng.uniform(1, 2, size=(1, 2, 3)), dev).requires_grad_(True)
    out = dr.texture(tex, uv, uv_da=uv_da, mip_level_bias=bias, filter_mode="linear-mipmap-linear", max_mip_level=0)
    assert torch.equal(out, dr.texture(tex, uv, filter_mode="linear"))
    out.sum().backward()
    assert uv_da.grad is None and bias.grad is None
    assert tex.grad.sum().item() == pytest.approx(6 * 3)  # base level only, all weight there


def test_max_mip_level_limits_internal_stack(dev):
    rng = np.random.default_rng(8)
    tex_np = rng.standard_normal((1, 16, 16, 1)).astype(np.float32)
    uv_np = rng.uniform(0, 1, size=(1, 2, 2, 2)).astype(np.float32)
    out = dr.texture(_t(tex_np, dev), _t(uv_np, dev), mip_level_bias=torch.full((1, 2, 2), 3.5, device=dev),
                     max_mip_level=2)
    want = oracle(tex_np, uv_np, None, np.full((1, 2, 2), 3.5), "linear-mipmap-linear", "wrap", max_levels=2)
    assert np.allclose(out.cpu().numpy(), want, atol=ATOL)  # lambda clamps to level 2


def test_batch1_texture_broadcasts_over_uv(dev):
    rng = np.random.default_rng(9)
    tex1 = _t(rng.standard_normal((1, 8, 8, 2)), dev)
    texn = tex1.expand(3, -1, -1, -1).contiguous()
    uv = _t(rng.uniform(0, 1, size=(3, 2, 2, 2)), dev)
    bias = _t(rng.uniform(0, 2.5, size=(3, 2, 2)), dev)
    for mode in ("nearest", "linear", "linear-mipmap-linear"):
        kw = {"mip_level_bias": bias} if "mipmap" in mode else {}
        a = tex1.clone().requires_grad_(True)
        b = texn.clone().requires_grad_(True)
        oa = dr.texture(a, uv, filter_mode=mode, **kw)
        ob = dr.texture(b, uv, filter_mode=mode, **kw)
        assert torch.allclose(oa, ob, atol=1e-6)
        g = torch.randn_like(oa)
        (oa * g).sum().backward()
        (ob * g).sum().backward()
        assert torch.allclose(a.grad, b.grad.sum(0, keepdim=True), atol=1e-5)


def test_per_image_texture_batch(dev):
    rng = np.random.default_rng(10)
    tex_np = rng.standard_normal((2, 4, 4, 1)).astype(np.float32)
    uv_np = rng.uniform(0, 1, size=(2, 3, 3, 2)).astype(np.float32)
    out = dr.texture(_t(tex_np, dev), _t(uv_np, dev))
    assert np.allclose(out.cpu().numpy(), oracle(tex_np, uv_np, None, None, "linear", "wrap"), atol=ATOL)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 8])
def test_any_channel_count(dev, channels):
    rng = np.random.default_rng(11)
    tex_np = rng.standard_normal((1, 4, 8, channels)).astype(np.float32)
    uv_np = rng.uniform(-1, 2, size=(1, 2, 3, 2)).astype(np.float32)
    out = dr.texture(_t(tex_np, dev), _t(uv_np, dev), boundary_mode="clamp")
    assert np.allclose(out.cpu().numpy(), oracle(tex_np, uv_np, None, None, "linear", "clamp"), atol=ATOL)


def test_nonfinite_uv_gives_zero_and_finite_gradients(dev):
    tex = _t(np.ones((1, 4, 4, 2)), dev).requires_grad_(True)
    uv = _t([[[[float("nan"), 0.5], [0.5, float("inf")], [0.3, 0.3]]]], dev).requires_grad_(True)
    for mode in ("nearest", "linear"):
        out = dr.texture(tex, uv, filter_mode=mode)
        assert torch.equal(out[0, 0, :2], torch.zeros(2, 2, device=dev))
        assert out[0, 0, 2].tolist() == pytest.approx([1.0, 1.0])
        out.sum().backward()
        assert torch.isfinite(tex.grad).all() and tex.grad.sum().item() == pytest.approx(2.0)
        if uv.grad is not None:
            assert torch.isfinite(uv.grad).all()
        tex.grad = None


# ----------------------------------------------------------------------------------- errors
def _ok_args(dev):
    return _t(np.zeros((1, 4, 4, 3)), dev), _t(np.zeros((1, 2, 2, 2)), dev)


def test_python_level_assertions(dev):
    tex, uv = _ok_args(dev)
    with pytest.raises(AssertionError, match="tex"):
        dr.texture(tex.cpu().numpy(), uv)
    with pytest.raises(AssertionError, match="uv"):
        dr.texture(tex, [[0.5, 0.5]])
    with pytest.raises(AssertionError, match="max_mip_level"):
        dr.texture(tex, uv, max_mip_level=-1)
    with pytest.raises(AssertionError, match="max_mip_level"):
        dr.texture_construct_mip(tex, max_mip_level=-2)
    with pytest.raises(AssertionError, match="max_mip_level"):
        dr.texture(tex, uv, max_mip_level=2.0)
    bias0 = torch.zeros(1, 2, 2, device=dev)
    assert dr.texture(tex, uv, mip_level_bias=bias0, max_mip_level=np.int64(1)).shape == (1, 2, 2, 3)
    with pytest.raises(AssertionError, match="uv_da and/or mip_level_bias"):
        dr.texture(tex, uv, filter_mode="linear-mipmap-linear")
    with pytest.raises(AssertionError, match="uv_da and/or mip_level_bias"):
        dr.texture(tex, uv, filter_mode="linear-mipmap-nearest")
    with pytest.raises(AssertionError, match="uv_da and/or mip_level_bias"):
        dr.texture(tex, uv, uv_da=[[0.1, 0, 0, 0.1]])  # 'auto' picks mipmapping; a list is not a tensor
    with pytest.raises(AssertionError, match="mip_level_bias must be"):
        dr.texture(tex, uv, uv_da=torch.zeros(1, 2, 2, 4, device=dev), mip_level_bias=0.5)
    bias = torch.zeros(1, 2, 2, device=dev)
    with pytest.raises(AssertionError, match="mip"):
        dr.texture(tex, uv, mip_level_bias=bias, mip=(torch.zeros(1, 2, 2, 3),))  # a tuple is not a list
    with pytest.raises(AssertionError, match="mip"):
        dr.texture(tex, uv, mip_level_bias=bias, mip=torch.zeros(1, 2, 2, 3, device=dev))
    with pytest.raises(AssertionError, match="cube_mode"):
        dr.texture_construct_mip(tex, cube_mode=1)
    with pytest.raises(AssertionError, match="tex"):
        dr.texture_construct_mip(None)


def test_unknown_mode_strings_raise_keyerror(dev):
    tex, uv = _ok_args(dev)
    with pytest.raises(KeyError, match="filter_mode"):
        dr.texture(tex, uv, filter_mode="bilinear")
    with pytest.raises(KeyError, match="boundary_mode"):
        dr.texture(tex, uv, boundary_mode="mirror")
    # Assertions come first in the spec's validation order.
    with pytest.raises(AssertionError):
        dr.texture(tex, uv, filter_mode="bilinear", max_mip_level=-1)


def test_mipmap_check_precedes_max_mip_level_zero_downgrade(dev):
    tex, uv = _ok_args(dev)
    with pytest.raises(AssertionError, match="uv_da and/or mip_level_bias"):
        dr.texture(tex, uv, filter_mode="linear-mipmap-linear", max_mip_level=0)


def test_dtype_contiguity_device_errors(dev):
    tex, uv = _ok_args(dev)
    with pytest.raises(RuntimeError, match="float32"):
        dr.texture(tex.double(), uv)
    with pytest.raises(RuntimeError, match="float32"):
        dr.texture(tex, uv.half())
    with pytest.raises(RuntimeError, match="contiguous"):
        dr.texture(tex.transpose(1, 2), uv)
    with pytest.raises(RuntimeError, match="contiguous"):
        dr.texture(tex, uv.transpose(1, 2))
    with pytest.raises(RuntimeError, match="float32"):
        dr.texture(tex, uv, mip_level_bias=torch.zeros(1, 2, 2, dtype=torch.float64, device=dev))
    with pytest.raises(RuntimeError, match="same device"):
        dr.texture(tex, uv.to("meta"))
    with pytest.raises(RuntimeError, match="float32"):
        dr.texture_construct_mip(tex.double())


def test_shape_errors(dev):
    tex, uv = _ok_args(dev)
    z = lambda *s: torch.zeros(*s, device=dev)  # noqa: E731
    with pytest.raises(RuntimeError, match="tex must have shape"):
        dr.texture(z(4, 4, 3), uv)
    with pytest.raises(RuntimeError, match="tex must have shape"):
        dr.texture(z(1, 0, 4, 3), uv)
    with pytest.raises(RuntimeError, match="tex must have shape.*cube"):
        dr.texture(z(1, 6, 4, 4, 3), uv)  # a cube map needs boundary_mode='cube'
    with pytest.raises(RuntimeError, match="uv must have shape"):
        dr.texture(tex, z(1, 2, 2, 3))
    with pytest.raises(RuntimeError, match="uv must have shape"):
        dr.texture(tex, z(2, 2, 2))
    with pytest.raises(RuntimeError, match="minibatch size mismatch between inputs tex, uv"):
        dr.texture(z(2, 4, 4, 3), z(3, 2, 2, 2))
    with pytest.raises(RuntimeError, match="minibatch size mismatch between inputs tex, uv"):
        dr.texture(z(2, 4, 4, 3), z(1, 2, 2, 2))  # uv does not broadcast
    with pytest.raises(RuntimeError, match="uv_da must have shape"):
        dr.texture(tex, uv, uv_da=z(1, 2, 2, 6))
    with pytest.raises(RuntimeError, match="uv_da must have shape"):
        dr.texture(tex, uv, uv_da=z(1, 2, 3, 4))
    with pytest.raises(RuntimeError, match="mip_level_bias must have shape"):
        dr.texture(tex, uv, mip_level_bias=z(1, 2, 2, 1))
    with pytest.raises(RuntimeError, match="mip_level_bias must have shape"):
        dr.texture(tex, uv, mip_level_bias=z(2, 2))
    with pytest.raises(RuntimeError, match="texture size too large"):
        dr.texture(z(1, 1, 65537, 1), uv)
    with pytest.raises(RuntimeError, match="tex must have shape"):
        dr.texture_construct_mip(z(1, 6, 4, 4, 3))


def test_error_messages_name_argument_and_values(dev):
    tex, uv = _ok_args(dev)
    with pytest.raises(RuntimeError) as ei:
        dr.texture(tex, torch.zeros(1, 2, 2, 5, device=dev))
    assert "uv" in str(ei.value) and "[1, 2, 2, 5]" in str(ei.value)
    with pytest.raises(KeyError) as ei:
        dr.texture(tex, uv, boundary_mode="mirror")
    assert "mirror" in str(ei.value) and "clamp" in str(ei.value)
