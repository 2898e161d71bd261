"""Mip stacks (spec §3.6 "Mip stack rules", §3.7): level sizes, the odd-extent error, box-filter
values, prebuilt stacks (``texture_construct_mip``) vs internal stacks, stale stacks, custom lists
and their errors, and the adjoint that carries level gradients back to ``tex``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nvdiffrast.torch as dr
from nvdiffrast.torch import _mip

ATOL = 2e-5


@pytest.fixture
def dev(backend):
    if backend.name == "gl":
        pytest.skip("texture takes no rasterizer context: the gl case equals the reference/cuda case of its device")
    return backend.device


def _t(x, dev):
    return torch.as_tensor(np.asarray(x), dtype=torch.float32).to(dev).contiguous()


def np_box(t):
    h, w, c = t.shape[-3:]
    fh, fw = (2 if h > 1 else 1), (2 if w > 1 else 1)
    return t.reshape(*t.shape[:-3], h // fh, fh, w // fw, fw, c).mean(axis=(-4, -2))


# ------------------------------------------------------------------------------------- sizes
def test_level_sizes():
    assert _mip.mip_level_sizes(8, 4) == [(4, 2), (2, 1), (1, 1)]
    assert _mip.mip_level_sizes(1, 16) == [(1, 8), (1, 4), (1, 2), (1, 1)]
    assert _mip.mip_level_sizes(16, 16, 2) == [(8, 8), (4, 4)]
    assert _mip.mip_level_sizes(16, 16, 0) == []
    assert _mip.mip_level_sizes(1, 1) == []
    # 16 levels in all, base included: a 65536 side stops at 2 texels instead of failing.
    assert _mip.MAX_MIP_LEVELS == 15 and _mip.mip_level_sizes(65536, 1)[-1] == (2, 1)
    assert len(_mip.mip_level_sizes(32768, 4)) == 15
    assert _mip.mip_level_sizes(160, 32, 5) == [(80, 16), (40, 8), (20, 4), (10, 2), (5, 1)]
    assert _mip.custom_level_size(6, 5, 1) == (3, 2) and _mip.custom_level_size(6, 5, 3) == (1, 1)


def test_odd_extent_error_with_size_table(dev):
    tex = torch.zeros(1, 32, 160, 3, device=dev)  # the docs' 160x32 atlas
    uv = torch.full((1, 2, 2, 2), 0.3, device=dev)
    bias = torch.full((1, 2, 2), 2.0, device=dev)
    with pytest.raises(RuntimeError) as ei:
        dr.texture(tex, uv, mip_level_bias=bias)
    msg = str(ei.value)
    assert msg.startswith("Mip-map size error - cannot downsample an odd extent greater than 1")
    assert "max_mip_level=5" in msg
    for w, h in [(160, 32), (80, 16), (40, 8), (20, 4), (10, 2), (5, 1)]:  # the table of attempted sizes
        assert any(line.split()[1:3] == [str(w), str(h)] for line in msg.splitlines()[1:]), (w, h, msg)
    with pytest.raises(RuntimeError, match="Mip-map size error"):
        dr.texture_construct_mip(tex)
    out = dr.texture(tex, uv, mip_level_bias=bias, max_mip_level=5)
    assert out.shape == (1, 2, 2, 3)
    assert dr.texture_construct_mip(tex, max_mip_level=5) is not None
    with pytest.raises(RuntimeError, match="Mip-map size error"):
        dr.texture(torch.zeros(1, 4, 6, 1, device=dev), uv, mip_level_bias=bias)  # level 1 is 3x2
    dr.texture(torch.zeros(1, 4, 6, 1, device=dev), uv, mip_level_bias=bias, max_mip_level=1)
    with pytest.raises(RuntimeError, match="Mip-map size error"):
        dr.texture(torch.zeros(1, 6, 6, 6, 1, device=dev), torch.ones(1, 1, 1, 3, device=dev),
                   mip_level_bias=torch.ones(1, 1, 1, device=dev), boundary_mode="cube")


def test_box_filter_values_non_square(dev):
    """Sampling at a level's texel centres returns the box-filtered texels (2-sample once H is 1)."""
    rng = np.random.default_rng(40)
    tex_np = rng.standard_normal((1, 2, 8, 2)).astype(np.float32)  # 8x2 -> 4x1 -> 2x1 -> 1x1
    levels = [tex_np[0].astype(np.float64)]
    for _ in range(3):
        levels.append(np_box(levels[-1]))
    assert [lv.shape[:2] for lv in levels] == [(2, 8), (1, 4), (1, 2), (1, 1)]
    tex = _t(tex_np, dev)
    mip = dr.texture_construct_mip(tex)
    for lvl in (1, 2, 3):
        h, w = levels[lvl].shape[:2]
        jj, ii = np.meshgrid(np.arange(w), np.arange(h))
        uv = np.stack([(jj + 0.5) / w, (ii + 0.5) / h], -1).reshape(1, h, w, 2)
        bias = torch.full((1, h, w), float(lvl), device=dev)
        for stack in (None, mip):
            out = dr.texture(tex, _t(uv, dev), mip_level_bias=bias, mip=stack, filter_mode="linear-mipmap-nearest")
            assert np.allclose(out[0].cpu().numpy(), levels[lvl], atol=ATOL), lvl


def test_wrapper_is_opaque():
    tex = torch.zeros(2, 4, 4, 3)
    m = dr.texture_construct_mip(tex)
    assert type(m).__name__ == "TextureMipWrapper" and not isinstance(m, torch.Tensor)
    assert "TextureMipWrapper" in repr(m)
    mc = dr.texture_construct_mip(torch.zeros(1, 6, 8, 8, 1), max_mip_level=2, cube_mode=True)
    assert type(mc).__name__ == "TextureMipWrapper"


# ----------------------------------------------------------------------- prebuilt vs internal
def _inputs(rng, dev, cube):
    if cube:
        tex = _t(rng.standard_normal((1, 6, 8, 8, 2)), dev)
        uv = _t(rng.standard_normal((2, 3, 3, 3)), dev)
        uv_da = _t(rng.standard_normal((2, 3, 3, 6)) * 0.2, dev)
    else:
        tex = _t(rng.standard_normal((1, 8, 16, 2)), dev)
        uv = _t(rng.uniform(-0.5, 1.5, size=(2, 3, 3, 2)), dev)
        uv_da = _t(rng.standard_normal((2, 3, 3, 4)) * 0.15, dev)
    bias = _t(rng.uniform(-0.5, 1.5, size=(2, 3, 3)), dev)
    return tex, uv, uv_da, bias


def _run_with_grads(tex, uv, uv_da, bias, cube, mip, w):
    ins = [x.clone().requires_grad_(True) for x in (tex, uv, uv_da, bias)]
    out = dr.texture(*ins[:2], uv_da=ins[2], mip_level_bias=ins[3], mip=mip,
                     boundary_mode="cube" if cube else "wrap")
    (out * w).sum().backward()
    return out.detach(), [x.grad for x in ins]


@pytest.mark.parametrize("cube", [False, True])
def test_prebuilt_equals_internal(dev, cube):
    rng = np.random.default_rng(41)
    tex, uv, uv_da, bias = _inputs(rng, dev, cube)
    w = _t(rng.standard_normal((2, 3, 3, 2)), dev)
    o1, g1 = _run_with_grads(tex, uv, uv_da, bias, cube, None, w)
    o2, g2 = _run_with_grads(tex, uv, uv_da, bias, cube, dr.texture_construct_mip(tex, cube_mode=cube), w)
    assert torch.allclose(o1, o2, atol=1e-6)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-5)
    assert g1[0].abs().sum() > 0


def test_stale_prebuilt_stack(dev):
    """Forward reads the stored levels; gradients still reach the new tex through the adjoint."""
    rng = np.random.default_rng(42)
    tex_old = _t(rng.standard_normal((1, 8, 8, 1)), dev)
    tex_new = _t(rng.standard_normal((1, 8, 8, 1)), dev)
    stale = dr.texture_construct_mip(tex_old)
    uv = _t(rng.uniform(0, 1, size=(1, 4, 4, 2)), dev)
    bias = torch.full((1, 4, 4), 1.0, device=dev)  # exactly level 1
    a = dr.texture(tex_new, uv, mip_level_bias=bias, mip=stale)
    b = dr.texture(tex_old, uv, mip_level_bias=bias)
    c = dr.texture(tex_new, uv, mip_level_bias=bias)
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, c, atol=1e-3)
    t1 = tex_new.clone().requires_grad_(True)
    t2 = tex_new.clone().requires_grad_(True)
    dr.texture(t1, uv, mip_level_bias=bias, mip=stale).sum().backward()
    dr.texture(t2, uv, mip_level_bias=bias).sum().backward()
    assert torch.allclose(t1.grad, t2.grad, atol=1e-6)
    assert t1.grad.sum().item() == pytest.approx(16.0, abs=1e-4)


def test_prebuilt_stack_uses_its_own_level_limit(dev):
    rng = np.random.default_rng(43)
    tex = _t(rng.standard_normal((1, 16, 16, 1)), dev)
    uv = _t(rng.uniform(0, 1, size=(1, 3, 3, 2)), dev)
    bias = torch.full((1, 3, 3), 3.0, device=dev)
    limited = dr.texture_construct_mip(tex, max_mip_level=1)
    a = dr.texture(tex, uv, mip_level_bias=bias, mip=limited)  # lambda clamps to level 1
    b = dr.texture(tex, uv, mip_level_bias=torch.full((1, 3, 3), 1.0, device=dev))
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.equal(dr.texture(tex, uv, mip_level_bias=bias, mip=limited, max_mip_level=0),
                       dr.texture(tex, uv))


def test_prebuilt_mismatch_errors(dev):
    tex = torch.zeros(1, 8, 8, 2, device=dev)
    uv = torch.zeros(1, 2, 2, 2, device=dev)
    bias = torch.zeros(1, 2, 2, device=dev)
    for other in (torch.zeros(1, 4, 4, 2), torch.zeros(1, 8, 8, 3), torch.zeros(2, 8, 8, 2)):
        with pytest.raises(RuntimeError, match="mip does not match texture size"):
            dr.texture(tex, uv, mip_level_bias=bias, mip=dr.texture_construct_mip(other.to(dev)))
    cube_tex = torch.zeros(1, 6, 8, 8, 2, device=dev)
    with pytest.raises(RuntimeError, match="mip does not match texture size"):
        dr.texture(cube_tex, torch.ones(1, 2, 2, 3, device=dev), mip_level_bias=bias,
                   mip=dr.texture_construct_mip(tex), boundary_mode="cube")


# ---------------------------------------------------------------------------------- custom
def test_custom_list_equal_to_box_levels_matches_internal(dev):
    rng = np.random.default_rng(44)
    tex_np = rng.standard_normal((2, 4, 8, 3)).astype(np.float32)
    levels = [tex_np]
    for _ in range(3):
        levels.append(np_box(levels[-1]).astype(np.float32))
    uv = _t(rng.uniform(0, 1, size=(2, 3, 3, 2)), dev)
    bias = _t(rng.uniform(0, 3, size=(2, 3, 3)), dev)
    tex = _t(tex_np, dev)
    a = dr.texture(tex, uv, mip_level_bias=bias, mip=[_t(x, dev) for x in levels[1:]])
    b = dr.texture(tex, uv, mip_level_bias=bias)
    assert torch.allclose(a, b, atol=1e-5)
    # Different custom contents change the result (the list is really used) ...
    c = dr.texture(tex, uv, mip_level_bias=bias, mip=[_t(x + 1.0, dev) for x in levels[1:]])
    assert not torch.allclose(a, c, atol=1e-3)
    # ... and a shorter list caps the level count.
    d = dr.texture(tex, uv, mip_level_bias=torch.full_like(bias, 3.0), mip=[_t(levels[1], dev)])
    e = dr.texture(tex, uv, mip_level_bias=torch.full_like(bias, 1.0))
    assert torch.allclose(d, e, atol=1e-5)
    # An empty list leaves only the base level.
    assert torch.allclose(dr.texture(tex, uv, mip_level_bias=bias, mip=[]), dr.texture(tex, uv), atol=1e-6)


def test_custom_list_for_non_power_of_two_texture(dev):
    """Custom lists follow max(1, side >> level) and need no halving, so odd sides are fine."""
    tex = torch.zeros(1, 5, 6, 1, device=dev)  # level 1: 3x2, level 2: 1x1
    lv = [torch.full((1, 2, 3, 1), 1.0, device=dev), torch.full((1, 1, 1, 1), 2.0, device=dev)]
    uv = torch.full((1, 1, 2, 2), 0.5, device=dev)
    out = dr.texture(tex, uv, mip_level_bias=_t([[[1.0, 2.0]]], dev), mip=lv, filter_mode="linear-mipmap-nearest")
    assert out.reshape(-1).tolist() == pytest.approx([1.0, 2.0])


def test_custom_list_errors(dev):
    tex = torch.zeros(2, 8, 4, 3, device=dev)  # W 4, H 8: levels 2x4, 1x2, 1x1
    uv = torch.zeros(2, 2, 2, 2, device=dev)
    bias = torch.zeros(2, 2, 2, device=dev)
    good = [torch.zeros(2, 4, 2, 3, device=dev), torch.zeros(2, 2, 1, 3, device=dev),
            torch.zeros(2, 1, 1, 3, device=dev)]
    dr.texture(tex, uv, mip_level_bias=bias, mip=good)

    def bad(lst, exc, pattern):
        with pytest.raises(exc, match=pattern):
            dr.texture(tex, uv, mip_level_bias=bias, mip=lst)

    mismatch = "mip level size mismatch in custom mip stack"
    bad([torch.zeros(2, 2, 4, 3, device=dev)], RuntimeError, mismatch + r".*\[2, 4, 2, 3\]")
    bad([torch.zeros(1, 4, 2, 3, device=dev)], RuntimeError, "mip level size mismatch in custom mip stack")
    bad([torch.zeros(2, 4, 2, 1, device=dev)], RuntimeError, "mip level size mismatch in custom mip stack")
    bad([*good, torch.zeros(2, 1, 1, 3, device=dev)], RuntimeError, "1x1, so it must be the last")
    bad([good[0], "level"], AssertionError, r"mip\[1\]")
    bad([good[0].double()], RuntimeError, "float32")
    bad([torch.zeros(2, 2, 4, 3, device=dev).transpose(1, 2)], RuntimeError, "contiguous")
    bad([good[0].to("meta")], RuntimeError, "device")
    bad([good[0]] * 16, RuntimeError, "at most 15 levels")


def test_custom_list_cube(dev):
    rng = np.random.default_rng(45)
    tex = _t(rng.standard_normal((1, 6, 4, 4, 2)), dev)
    internal = [np_box(tex.cpu().numpy())]
    internal.append(np_box(internal[0]))
    dirs = _t(rng.standard_normal((1, 2, 3, 3)), dev)
    bias = _t(rng.uniform(0, 2, size=(1, 2, 3)), dev)
    a = dr.texture(tex, dirs, mip_level_bias=bias, mip=[_t(x, dev) for x in internal], boundary_mode="cube")
    b = dr.texture(tex, dirs, mip_level_bias=bias, boundary_mode="cube")
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(RuntimeError, match="mip level size mismatch in custom mip stack"):
        dr.texture(tex, dirs, mip_level_bias=bias, mip=[torch.zeros(1, 2, 2, 2, device=dev)], boundary_mode="cube")


# ---------------------------------------------------------------------------------- adjoint
@pytest.mark.parametrize("shape", [(2, 8, 4, 3), (1, 2, 16, 1), (1, 6, 8, 8, 2)])
def test_mip_adjoint_is_the_transpose_of_building(dev, shape):
    torch.manual_seed(0)
    tex = torch.randn(*shape, device=dev, requires_grad=True)
    h, w = shape[-3], shape[-2]
    levels = [tex, *_mip.build_mip_levels(tex, _mip.mip_level_sizes(w, h))]
    gs = [torch.randn_like(x) for x in levels]
    (want,) = torch.autograd.grad(sum((x * g).sum() for x, g in zip(levels, gs)), tex)
    got = _mip.mip_adjoint([g.detach() for g in gs], tex.shape)
    assert torch.allclose(got, want, atol=1e-5)
    # Missing entries count as zero.
    got2 = _mip.mip_adjoint([None, *[g.detach() for g in gs[1:]]], tex.shape)
    (want2,) = torch.autograd.grad(sum((x * g).sum() for x, g in zip(levels[1:], gs[1:])), tex)
    assert torch.allclose(got2, want2, atol=1e-5)
