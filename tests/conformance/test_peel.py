"""DepthPeeler: layers of a depth-complex scene, equal-depth surfaces, context rules, gradients."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "assets"))
import meshes  # noqa: E402

import nvdiffrast.torch as dr  # noqa: E402
from nvdiffrast.torch._ids import decode_triangle_ids  # noqa: E402

RES = (32, 32)


def _setup(backend, name="depth_complex"):
    s = meshes.scene(name)
    return s, backend.tensor(s["pos"]), backend.tensor(s["tri"], torch.int32)


def _layers(ctx, pos, tri, res, n, ranges=None):
    out = []
    with dr.DepthPeeler(ctx, pos, tri, res, ranges=ranges) as peeler:
        for _ in range(n):
            rast, db = peeler.rasterize_next_layer()
            out.append((rast.cpu(), db.cpu()))
    return out


def test_layers_enumerate_every_fragment(backend):
    s, pos, tri = _setup(backend)
    ctx = backend.make_context()
    layers = _layers(ctx, pos, tri, RES, 8)
    plain, plain_db = dr.rasterize(ctx, pos, tri, RES)
    assert torch.equal(layers[0][0], plain.cpu()) and torch.equal(layers[0][1], plain_db.cpu())
    ids = torch.stack([decode_triangle_ids(r[0, ..., 3]) for r, _ in layers])  # [L, H, W]
    depth = torch.stack([r[0, ..., 2] for r, _ in layers])
    counts = (ids > 0).sum(0)
    # three nested closed spheres: six surfaces at the image centre, never more than six
    assert counts[RES[0] // 2, RES[1] // 2] == 6 and counts.max() == 6
    assert (ids[6:] == 0).all() and (layers[7][0] == 0).all()
    # a pixel empty in one layer stays empty afterwards, depths strictly increase
    for k in range(1, 8):
        assert not ((ids[k] > 0) & (ids[k - 1] == 0)).any()
        both = (ids[k] > 0) & (ids[k - 1] > 0)
        assert (depth[k][both] > depth[k - 1][both]).all()
    # every fragment appears in exactly one layer: per-pixel counts equal per-triangle coverage counts
    T = len(s["tri"])
    ranges = torch.tensor(np.stack([np.arange(T), np.ones(T)], 1), dtype=torch.int32)
    single, _ = dr.rasterize(ctx, pos[0].contiguous(), tri, RES, ranges=ranges)
    per_tri = (single.cpu()[..., 3] > 0).sum(0)
    assert torch.equal(per_tri, counts)
    # each layer's triangle at a pixel is one of the triangles covering it
    sid = decode_triangle_ids(single.cpu()[..., 3])  # [T, H, W]
    for k in range(6):
        m = ids[k] > 0
        hit = torch.gather(sid, 0, (ids[k].clamp(min=1) - 1)[None]).squeeze(0)
        assert (hit[m] == ids[k][m]).all()


def test_equal_depth_surfaces_are_never_separated(backend):
    t = [[-1.0, -1.0, 0.25, 1.0], [1.0, -1.0, 0.25, 1.0], [-1.0, 1.0, 0.25, 1.0]]
    pos = backend.tensor([t + t])
    tri = backend.tensor([[0, 1, 2], [3, 4, 5]], torch.int32)
    layers = _layers(backend.make_context(), pos, tri, (8, 8), 3)
    assert (layers[0][0][..., 3] > 0).any()
    assert (layers[1][0] == 0).all() and (layers[2][0] == 0).all()


def test_range_mode_peeling(backend):
    s = meshes.scene("range_multi")
    pos, tri = backend.tensor(s["pos"]), backend.tensor(s["tri"], torch.int32)
    ranges = torch.as_tensor(s["ranges"])
    layers = _layers(backend.make_context(), pos, tri, (24, 24), 3, ranges=ranges)
    assert layers[0][0].shape[0] == len(s["ranges"])
    ids = [decode_triangle_ids(r[..., 3]) for r, _ in layers]
    for n, (first, count) in enumerate(s["ranges"].tolist()):
        for k in range(3):
            m = ids[k][n] > 0
            assert ((ids[k][n][m] > first) & (ids[k][n][m] <= first + count)).all()
    assert (ids[1] > 0).any()  # the back faces of the convex objects


def test_peeler_context_rules(backend):
    s, pos, tri = _setup(backend)
    ctx = backend.make_context()
    peeler = dr.DepthPeeler(ctx, pos, tri, RES)
    assert ctx.active_depth_peeler is None
    with peeler as p:
        assert p is peeler and ctx.active_depth_peeler is peeler
        with pytest.raises(RuntimeError, match="during depth peeling"):
            dr.rasterize(ctx, pos, tri, RES)
        with pytest.raises(RuntimeError, match="multiple depth peelers"):
            with dr.DepthPeeler(ctx, pos, tri, RES):
                pass
        assert ctx.active_depth_peeler is peeler
        p.rasterize_next_layer()
    assert ctx.active_depth_peeler is None
    with pytest.raises(RuntimeError, match="re-enter"):
        with peeler:
            pass
    with pytest.raises((AssertionError, AttributeError)):
        peeler.rasterize_next_layer()
    fresh = dr.DepthPeeler(ctx, pos, tri, RES)
    with pytest.raises(AssertionError):
        fresh.rasterize_next_layer()  # not entered
    dr.rasterize(ctx, pos, tri, RES)  # usable again after the peeler exited
    # a peeler left by an exception unregisters itself too
    with pytest.raises(ValueError):
        with dr.DepthPeeler(ctx, pos, tri, RES):
            raise ValueError("boom")
    assert ctx.active_depth_peeler is None


def test_each_layer_is_differentiable(backend):
    s, pos, tri = _setup(backend)
    pos = pos.clone().requires_grad_(True)
    grads = []
    with dr.DepthPeeler(backend.make_context(), pos, tri, RES) as peeler:
        for _ in range(2):
            rast, _ = peeler.rasterize_next_layer()
            (g,) = torch.autograd.grad(rast[..., :2].sum(), pos)
            grads.append(g.cpu())
    for g in grads:
        assert g.abs().sum() > 0 and (g[..., 2] == 0).all()
    assert not torch.equal(grads[0], grads[1])
