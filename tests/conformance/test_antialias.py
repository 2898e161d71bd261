"""antialias: known edges against the 1-D coverage formula, silhouettes vs internal edges, topology
hash, gradient conservation and pos_gradient_boost, cross-backend agreement."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "assets"))
import meshes  # noqa: E402
import refcheck  # noqa: E402

import nvdiffrast.torch as dr  # noqa: E402

H, W = 6, 10


def _quad(x_bottom: float, x_top: float, split: bool = False, transpose: bool = False):
    """Two triangles covering x < edge (edge from (x_bottom, -3) to (x_top, 3)), beyond the viewport
    elsewhere. The diagonal is shared (internal) unless ``split``."""
    v = [[-3.0, -3.0], [x_bottom, -3.0], [x_top, 3.0], [-3.0, 3.0]]
    tri = [[0, 1, 2], [0, 2, 3]]
    if split:
        v += [[-3.0, -3.0], [x_top, 3.0]]
        tri = [[0, 1, 2], [4, 5, 3]]
    if transpose:
        v = [[y, x] for x, y in v]
        tri = [[a, c, b] for a, b, c in tri]
    pos = [[x, y, 0.0, 1.0] for x, y in v]
    return np.array(pos, dtype=np.float32), np.array(tri, dtype=np.int32)


def _render(backend, pos, tri, res=(H, W), boost=1.0, topology=None, colors=None):
    ctx = backend.make_context()
    p = backend.tensor(pos[None]).requires_grad_(True)
    t = backend.tensor(tri, torch.int32)
    rast, _ = dr.rasterize(ctx, p, t, res)
    if colors is None:
        color = (rast[..., 3:4] > 0).float().repeat(1, 1, 1, 2)
        color[..., 1] *= 0.5
    else:
        color = colors
    color = color.detach().clone().requires_grad_(True)
    out = dr.antialias(color, rast.detach(), p, t, topology_hash=topology, pos_gradient_boost=boost)
    return out, color, p, rast


@pytest.mark.parametrize("edge_px", [5.3, 4.8, 6.6])
def test_vertical_edge_coverage(backend, edge_px):
    x = edge_px / (W / 2) - 1
    out, *_ = _render(backend, *_quad(x, x))
    cols = torch.arange(W, dtype=torch.float64)
    expect = (edge_px - cols).clamp(0, 1)
    got = out.detach().cpu().double()[0]
    torch.testing.assert_close(got[..., 0], expect.expand(H, W), atol=1e-4, rtol=0)
    torch.testing.assert_close(got[..., 1], 0.5 * expect.expand(H, W), atol=1e-4, rtol=0)


def test_slanted_edge_coverage(backend):
    # The edge runs from NDC y = -3 to 3 (18 px of rows) while moving 6 px: 1/3 px per row, steep
    # enough that only horizontal pixel pairs see it; each row follows the 1-D coverage formula.
    xb, xt = 2.0, 8.0
    out, *_ = _render(backend, *_quad(xb / 5 - 1, xt / 5 - 1), res=(H, W))
    y_ndc = (2 * torch.arange(H, dtype=torch.float64) + 1) / H - 1
    xcross = xb + (xt - xb) * (y_ndc + 3) / 6
    expect = (xcross[:, None] - torch.arange(W, dtype=torch.float64)[None]).clamp(0, 1)
    torch.testing.assert_close(out.detach().cpu().double()[0, ..., 0], expect, atol=1e-4, rtol=0)


def test_horizontal_edge_coverage(backend):
    edge_px = 2.7  # along rows (H = 6)
    y = edge_px / (H / 2) - 1
    out, *_ = _render(backend, *_quad(y, y, transpose=True))
    rows = torch.arange(H, dtype=torch.float64)
    expect = (edge_px - rows).clamp(0, 1)[:, None].expand(H, W)
    torch.testing.assert_close(out.detach().cpu().double()[0, ..., 0], expect, atol=1e-4, rtol=0)


def test_internal_edges_untouched_and_split_vertices_are_silhouettes(backend):
    pos, tri = _quad(0.0, 0.9)
    colors = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(0)).to(backend.device)
    shared, color, _, rast = _render(backend, pos, tri, res=(16, 16), colors=colors)
    split, *_ = _render(backend, *_quad(0.0, 0.9, split=True), res=(16, 16), colors=colors)
    changed_shared = (shared.detach() != color.detach()).any(-1).sum().item()
    changed_split = (split.detach() != color.detach()).any(-1).sum().item()
    assert 0 < changed_shared < changed_split
    # pixels whose 4-neighbourhood has one triangle id are never changed
    ids = rast.detach().cpu()[0, ..., 3]
    pad = torch.nn.functional.pad(ids[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    flat = (pad[1:-1, 1:-1] == pad[:-2, 1:-1]) & (pad[1:-1, 1:-1] == pad[2:, 1:-1])
    flat &= (pad[1:-1, 1:-1] == pad[1:-1, :-2]) & (pad[1:-1, 1:-1] == pad[1:-1, 2:])
    assert torch.equal(shared.detach().cpu()[0][flat], colors.cpu()[0][flat])


def test_topology_hash_reuse(backend):
    s = meshes.scene("torus")
    pos, tri = backend.tensor(s["pos"]), backend.tensor(s["tri"], torch.int32)
    ctx = backend.make_context()
    rast, _ = dr.rasterize(ctx, pos, tri, (32, 32))
    color, _ = dr.interpolate(backend.tensor(s["colors"]), rast, tri)
    topo = dr.antialias_construct_topology_hash(tri)
    a = dr.antialias(color, rast, pos, tri)
    b = dr.antialias(color, rast, pos, tri, topology_hash=topo)
    c = dr.antialias(color, rast, pos, tri, topology_hash=topo)
    assert torch.equal(a, b) and torch.equal(b, c)
    assert (a != color).any()


def test_color_gradient_conserved_and_boost_linear(backend):
    s = meshes.scene("cube")
    ctx = backend.make_context()
    tri = backend.tensor(s["tri"], torch.int32)
    grads = {}
    for boost in (1.0, 3.0):
        pos = backend.tensor(s["pos"]).requires_grad_(True)
        rast, _ = dr.rasterize(ctx, pos, tri, (24, 24))
        color, _ = dr.interpolate(backend.tensor(s["colors"]), rast.detach(), tri)
        color = color.detach().requires_grad_(True)
        out = dr.antialias(color, rast.detach(), pos, tri, pos_gradient_boost=boost)
        dy = torch.rand(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device)
        gc, gp = torch.autograd.grad(out, [color, pos], dy)
        torch.testing.assert_close(gc.sum((0, 1, 2)).cpu(), dy.sum((0, 1, 2)).cpu(), rtol=1e-5, atol=1e-3)
        assert (gp.cpu()[..., 2] == 0).all()
        grads[boost] = (gc.cpu(), gp.cpu())
    assert grads[1.0][1].abs().sum() > 0
    torch.testing.assert_close(grads[3.0][1], 3 * grads[1.0][1], rtol=1e-5, atol=1e-6)
    assert torch.equal(grads[3.0][0], grads[1.0][0])


def test_edge_position_gradient(backend):
    """d(Σ out)/d(edge x) = rows × W/2: each row's boundary pixel gains coverage at that rate."""
    edge_px = 5.3
    x = edge_px / (W / 2) - 1
    out, color, p, _ = _render(backend, *_quad(x, x))
    (gp,) = torch.autograd.grad(out[..., 0].sum(), p)
    gx = gp.cpu()[0, :, 0]
    torch.testing.assert_close(gx[1] + gx[2], torch.tensor(H * W / 2.0), rtol=1e-3, atol=1e-3)
    assert gx[0] == 0 and gx[3] == 0


@pytest.mark.parametrize("name", ["sphere", "range_multi"])
def test_cross_backend_antialias(backend, name):
    s = meshes.scene(name)
    pos, tri = backend.tensor(s["pos"]), backend.tensor(s["tri"], torch.int32)
    rg = None if s["ranges"] is None else torch.as_tensor(s["ranges"])
    rast, _ = dr.rasterize(backend.make_context(), pos, tri, (24, 24), ranges=rg)
    color, _ = dr.interpolate(backend.tensor(s["colors"]), rast, tri)
    color = color.detach().requires_grad_(True)
    p = pos.detach().clone().requires_grad_(True)
    out = dr.antialias(color, rast, p, tri)
    dy = torch.rand(out.shape, generator=torch.Generator().manual_seed(2)).to(out.device)
    gc, gp = torch.autograd.grad(out, [color, p], dy)
    rc = refcheck.cpu(color).requires_grad_(True)
    rp = refcheck.cpu(pos).requires_grad_(True)
    ref = dr.antialias(rc, refcheck.cpu(rast), rp, refcheck.cpu(tri))
    rgc, rgp = torch.autograd.grad(ref, [rc, rp], dy.cpu())
    torch.testing.assert_close(out.detach().cpu(), ref.detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gc.cpu(), rgc, atol=1e-4, rtol=1e-4)
    scale = rgp.abs().max().item() + 1e-6
    torch.testing.assert_close(gp.cpu() / scale, rgp / scale, atol=2e-3, rtol=0)
