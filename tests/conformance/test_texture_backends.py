"""Cross-backend agreement for texture(): a non-reference backend against the CPU reference on
random inputs (every filter x boundary mode, cube maps with many edge- and corner-crossing
footprints, mipmaps from uv_da and bias, custom and prebuilt stacks), forward and all gradients.

Tolerances: forward 1e-4 absolute (float32 evaluation order, fused multiply-add); gradients 1e-3
relative to the largest magnitude (float atomics accumulate in a different order). Filters with
discontinuities ('nearest' texel choice, 'linear-mipmap-nearest' level choice) may flip on the
few samples that land within rounding error of a boundary: at most 1 % of the samples may differ.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nvdiffrast.torch as dr
from nvdiffrast.torch import _mip

MODES_2D = [(f, b) for f in ("nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear")
            for b in ("wrap", "clamp", "zero")]
MODES_CUBE = [(f, "cube") for f in ("nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear")]


@pytest.fixture
def other(backend):
    if backend.name == "reference":
        pytest.skip("this test compares another backend with the reference backend")
    if backend.name == "gl":
        pytest.skip("texture takes no rasterizer context: the gl case equals the reference/cuda case of its device")
    return backend.device


def _inputs(seed, filter_mode, boundary, stack):
    rng = np.random.default_rng(seed)
    cube = boundary == "cube"
    n, h, w, c = 2, 16, 16, 3
    if cube:
        tex = rng.standard_normal((1, 6, 16, 16, c))
        uv = rng.standard_normal((n, h, w, 3))
        uv[0, :4] = np.sign(uv[0, :4]) * (1 + 1e-3 * rng.standard_normal((4, w, 3)))  # near corners
        uv_da = rng.standard_normal((n, h, w, 6)) * 0.1
    else:
        tex = rng.standard_normal((n, 16, 32, c))
        uv = rng.uniform(-1.5, 2.5, size=(n, h, w, 2))
        uv_da = rng.standard_normal((n, h, w, 4)) * 0.1
    bias = rng.uniform(-1.0, 3.0, size=(n, h, w))
    t = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in
         {"tex": tex, "uv": uv, "uv_da": uv_da, "bias": bias}.items()}
    if stack == "custom":  # box levels plus an offset, so that they differ from the internal stack
        hh, ww = t["tex"].shape[-3], t["tex"].shape[-2]
        t["levels"] = [x + 0.1 for x in _mip.build_mip_levels(t["tex"], _mip.mip_level_sizes(ww, hh))]
    return t


def _run(t, device, filter_mode, boundary, stack):
    ins = {k: (v.detach().to(device).requires_grad_(True) if k != "levels" else
               [x.detach().to(device).requires_grad_(True) for x in v]) for k, v in t.items()}
    mip = "mipmap" in filter_mode
    kw = {"uv_da": ins["uv_da"], "mip_level_bias": ins["bias"]} if mip else {}
    if mip and stack == "custom":
        kw["mip"] = ins["levels"]
    elif mip and stack == "prebuilt":
        kw["mip"] = dr.texture_construct_mip(ins["tex"].detach(), cube_mode=boundary == "cube")
    out = dr.texture(ins["tex"], ins["uv"], filter_mode=filter_mode, boundary_mode=boundary, **kw)
    gen = torch.Generator().manual_seed(7)
    wgt = torch.randn(out.shape, generator=gen).to(device)
    (out * wgt).sum().backward()
    grads = {k: (v.grad if k != "levels" else [x.grad for x in v]) for k, v in ins.items()}
    return out.detach().cpu(), grads


def _close_frac(a, b, atol):
    bad = (a - b).abs().amax(-1) > atol
    return float(bad.float().mean())


@pytest.mark.parametrize("stack", ["internal", "prebuilt", "custom"])
@pytest.mark.parametrize("filter_mode,boundary", MODES_2D + MODES_CUBE)
def test_matches_reference(other, filter_mode, boundary, stack):
    if stack != "internal" and "mipmap" not in filter_mode:
        pytest.skip("mip stacks only matter for mipmap filter modes")
    t = _inputs(50, filter_mode, boundary, stack)
    ref_out, ref_g = _run(t, torch.device("cpu"), filter_mode, boundary, stack)
    out, g = _run(t, other, filter_mode, boundary, stack)
    discontinuous = filter_mode in ("nearest", "linear-mipmap-nearest")
    allowed = 0.01 if discontinuous else 0.0
    assert _close_frac(out, ref_out, 1e-4) <= allowed
    for k in ("tex", "uv", "uv_da", "bias"):
        a, b = g[k], ref_g[k]
        assert (a is None) == (b is None), k
        if a is None:
            continue
        a = a.cpu()
        scale = float(b.abs().max()) + 1e-6
        if discontinuous:
            assert float(((a - b).abs() > 1e-3 * scale).float().mean()) <= 0.02, k
        else:
            assert torch.allclose(a, b, atol=1e-3 * scale, rtol=0), k
    if stack == "custom" and "mipmap" in filter_mode:
        for a, b in zip(g["levels"], ref_g["levels"]):
            scale = float(b.abs().max()) + 1e-6
            assert float(((a.cpu() - b).abs() > 1e-3 * scale).float().mean()) <= (0.02 if discontinuous else 0.0)
