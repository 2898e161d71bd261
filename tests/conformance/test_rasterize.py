"""rasterize: analytic cases, fill rule / watertightness, clipping, depth, range mode, id encoding."""

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
from nvdiffrast.torch._ids import decode_triangle_ids, encode_triangle_ids  # noqa: E402

EXAMPLE_POS = [[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]]]


def _raster(backend, pos, tri, res, ranges=None, grad_db=True):
    ctx = backend.make_context()
    pos_t = backend.tensor(pos)
    tri_t = backend.tensor(tri, torch.int32)
    rg = None if ranges is None else torch.as_tensor(ranges, dtype=torch.int32)
    return dr.rasterize(ctx, pos_t, tri_t, res, ranges=rg, grad_db=grad_db)


# ------------------------------------------------------------------------------------- analytic
def test_spec_example_values(backend):
    rast, db = _raster(backend, EXAMPLE_POS, [[0, 1, 2]], (4, 4))
    assert rast.shape == (1, 4, 4, 4) and db.shape == (1, 4, 4, 4)
    assert rast.dtype == torch.float32 and rast.is_contiguous() and rast.device.type == backend.device.type
    r = rast.cpu()
    torch.testing.assert_close(r[0, 1, 0], torch.tensor([0.5, 0.125, 0.0, 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(db.cpu()[0, 1, 0], torch.tensor([-0.25, -0.25, 0.25, 0.0]), atol=1e-6, rtol=0)


def test_example_coverage_pattern(backend):
    rast, _ = _raster(backend, EXAMPLE_POS, [[0, 1, 2]], (4, 4))
    ids = decode_triangle_ids(rast.cpu()[0, ..., 3])
    # Centres with X + Y < 0 are inside, X + Y > 0 outside; X + Y = 0 lies on the hypotenuse.
    X, Y = refcheck.pixel_centers(4, 4)
    s = torch.from_numpy(X + Y)
    assert (ids[s < 0] == 1).all() and (ids[s > 0] == 0).all()
    if backend.name == "reference":  # documented tie rule: a lone triangle's right-hand edge is excluded
        assert (ids[s == 0] == 0).all()
    # empty pixels are all-zero in both outputs
    empty = ids == 0
    assert (rast.cpu()[0][empty] == 0).all()


def test_perspective_correct_barycentrics(backend):
    # Triangle with different w per vertex; the oracle solves the pixel-ray equations directly.
    clip = np.array([[-0.9, -0.8, 0.1, 1.0], [2.4, -1.5, 1.2, 3.0], [-0.5, 1.6, 0.3, 2.0]])
    H, W = 16, 24
    rast, db = _raster(backend, clip[None], [[0, 1, 2]], (H, W))
    o = refcheck.raycast_triangle(clip, H, W)
    r = rast.cpu().double()[0]
    ids = decode_triangle_ids(r[..., 3]).numpy()
    safe = o["margin"] > 1e-3
    assert ((ids == 1) == o["hit"])[safe].all()
    both = (ids == 1) & o["hit"]
    np.testing.assert_allclose(r[..., 0].numpy()[both], o["b"][..., 0][both], atol=1e-5)
    np.testing.assert_allclose(r[..., 1].numpy()[both], o["b"][..., 1][both], atol=1e-5)
    np.testing.assert_allclose(r[..., 2].numpy()[both], o["depth"][both], atol=1e-5)
    # rast_db: central differences of the oracle's barycentrics in pixel units
    b = o["b"]
    du_dx = (b[1:-1, 2:, 0] - b[1:-1, :-2, 0]) / 2
    dv_dy = (b[2:, 1:-1, 1] - b[:-2, 1:-1, 1]) / 2
    inner = both[1:-1, 1:-1]
    d = db.cpu().double()[0].numpy()
    np.testing.assert_allclose(d[1:-1, 1:-1, 0][inner], du_dx[inner], rtol=0.02, atol=1e-4)
    np.testing.assert_allclose(d[1:-1, 1:-1, 3][inner], dv_dy[inner], rtol=0.02, atol=1e-4)


def test_both_windings_and_clamps(backend):
    cw = [[[-1.0, -1.0, 0.5, 1.0], [-1.0, 1.0, 0.5, 1.0], [1.0, -1.0, 0.5, 1.0]]]
    ccw = [[[-1.0, -1.0, 0.5, 1.0], [1.0, -1.0, 0.5, 1.0], [-1.0, 1.0, 0.5, 1.0]]]
    a, _ = _raster(backend, cw, [[0, 1, 2]], (8, 8))
    b, _ = _raster(backend, ccw, [[0, 1, 2]], (8, 8))
    assert (a.cpu()[..., 3] > 0).sum() == (b.cpu()[..., 3] > 0).sum() > 0
    rng = np.random.default_rng(3)
    pos = rng.uniform(-1.5, 1.5, size=(1, 60, 4)).astype(np.float32)
    pos[..., 3] = rng.uniform(0.5, 2.0, size=(1, 60))
    pos[..., 2] = rng.uniform(-0.5, 0.5, size=(1, 60)) * pos[..., 3]
    tri = rng.integers(0, 60, size=(40, 3))
    rast, _ = _raster(backend, pos, tri, (32, 32))
    r = rast.cpu()
    cov = r[..., 3] > 0
    assert cov.any()
    assert (r[..., 0][cov] >= 0).all() and (r[..., 0][cov] <= 1).all()
    assert (r[..., 1][cov] >= 0).all() and (r[..., 1][cov] <= 1).all()
    assert (r[..., 0] + r[..., 1])[cov].max() <= 1.0 + 1e-6
    assert (r[..., 2][cov].abs() <= 1).all()


def test_degenerate_and_invalid_triangles_are_skipped(backend):
    pos = [[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0],
            [float("nan"), 0.0, 0.0, 1.0]]]
    tri = [[0, 1, 1], [0, 1, 9], [-1, 0, 1], [0, 1, 4], [0, 3, 3], [1, 2, 0]]
    rast, _ = _raster(backend, pos, tri, (8, 8))
    ids = decode_triangle_ids(rast.cpu()[..., 3])
    assert set(ids.unique().tolist()) <= {0, 6}
    assert (ids == 6).sum() > 0
    assert torch.isfinite(rast.cpu()).all()


# --------------------------------------------------------------------------------- watertightness
def _coverage_count(backend, pos2d: np.ndarray, tri: np.ndarray, res) -> torch.Tensor:
    """Per-pixel number of triangles covering it, each triangle rasterized alone (range mode)."""
    ranges = np.stack([np.arange(len(tri)), np.ones(len(tri))], axis=1).astype(np.int32)
    rast, _ = _raster(backend, pos2d, tri, res, ranges=ranges)
    return (rast.cpu()[..., 3] > 0).sum(0)


def _aligned_grid(w: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid whose lines (and one diagonal per cell) pass exactly through 8×8 pixel centres."""
    xs = np.array([-0.875, -0.375, 0.125, 0.625])
    verts = np.array([[x * w, y * w, 0.2 * w, w] for y in xs for x in xs])
    tris = []
    for i in range(3):
        for j in range(3):
            a = i * 4 + j
            b, c, d = a + 1, a + 5, a + 4
            tris += [(a, b, c), (a, c, d)] if (i + j) % 2 == 0 else [(a, b, d), (b, c, d)]
    return verts, np.array(tris)


@pytest.mark.parametrize("w", [1.0, 2.5])
def test_shared_edges_through_pixel_centres_covered_once(backend, w):
    verts, tris = _aligned_grid(w)
    count = _coverage_count(backend, verts, tris, (8, 8))
    X, Y = refcheck.pixel_centers(8, 8)
    strictly_inside = torch.from_numpy((X > -0.875) & (X < 0.625) & (Y > -0.875) & (Y < 0.625))
    assert (count[strictly_inside] == 1).all(), count
    assert count.max() <= 1
    # the single-pass rasterization sees the same pixels
    rast, _ = _raster(backend, verts[None], tris, (8, 8))
    assert ((rast.cpu()[0, ..., 3] > 0) == (count > 0)).all()


@pytest.mark.parametrize("name", ["sphere", "cube", "torus"])
def test_closed_mesh_parity(backend, name):
    """Every pixel ray enters and leaves a closed mesh equally often: per-pixel counts are even."""
    s = meshes.scene(name)
    count = _coverage_count(backend, s["pos"][0], s["tri"], (40, 40))
    assert (count % 2 == 0).all(), "a crack or double coverage in a closed mesh"
    assert (count > 0).sum() > 100


def test_sliver_fan_covered_once(backend):
    v, t = meshes.slivers(40)
    v, t = v[:41], t[:40]  # the fan only
    pos = meshes.to_clip(v, meshes.translate(0.013, -0.007, 0.0))
    count = _coverage_count(backend, pos, t, (48, 48))
    X, Y = refcheck.pixel_centers(48, 48)
    ang = np.arctan2(Y - (-0.007), X - 0.013)
    r = np.hypot(X - 0.013, Y + 0.007)
    # inner radius of the 40-gon, minus a margin
    inside = torch.from_numpy(r < 0.9 * np.cos(np.pi / 40) - 0.02)
    del ang
    assert (count[inside] == 1).all()
    assert count.max() <= 1


def test_clipped_shared_edges_are_watertight(backend):
    """A planar grid crossing the near plane and w = 0 covers exactly what its outer quad covers."""
    grid_v, grid_t = meshes.grid_plane(6, 3.0)
    m = meshes.perspective(70.0, 1.0, 0.3, 5.0) @ meshes.translate(0.05, -0.4, 0.1) @ meshes.rotate(0.11, 0.23)
    pos = meshes.to_clip(grid_v, m)
    assert (pos[:, 3] < 0).any() and (pos[:, 3] > 0).any()
    count = _coverage_count(backend, pos, grid_t, (40, 40))
    assert count.max() <= 1
    corners = [0, 6, 48, 42]
    quad_pos = pos[corners]
    quad = _coverage_count(backend, quad_pos, np.array([[0, 3, 2], [0, 2, 1]]), (40, 40))
    assert quad.max() <= 1
    assert (count == quad).all(), "grid and its outer quad cover different pixels"
    assert count.sum() > 200


# ------------------------------------------------------------------------------------------ clipping
def test_triangle_behind_camera_is_empty(backend):
    pos = [[[-0.5, -0.5, 0.0, -1.0], [0.5, -0.5, 0.0, -1.0], [0.0, 0.5, 0.0, -2.0]]]
    rast, db = _raster(backend, pos, [[0, 1, 2]], (16, 16))
    assert (rast.cpu() == 0).all() and (db.cpu() == 0).all()


@pytest.mark.parametrize(
    "view",
    [
        # straddles w = 0: one vertex behind the camera
        [[-1.0, -0.6, -2.0], [1.2, -0.4, -3.0], [0.1, -0.3, 1.5]],
        # crosses the near plane (near = 0.5) and the far plane (far = 4)
        [[-1.5, -1.0, -0.2], [1.0, -0.8, -6.0], [0.2, 1.2, -2.0]],
    ],
)
def test_clipping_matches_raycast_oracle(backend, view):
    proj = meshes.perspective(60.0, 1.0, 0.5, 4.0)
    clip = meshes.to_clip(np.array(view), proj).astype(np.float64)
    H, W = 24, 24
    rast, _ = _raster(backend, clip[None].astype(np.float32), [[0, 1, 2]], (H, W))
    o = refcheck.raycast_triangle(clip.astype(np.float32).astype(np.float64), H, W)
    ids = decode_triangle_ids(rast.cpu()[0, ..., 3]).numpy()
    safe = o["margin"] > 2e-3
    assert o["hit"][safe].sum() > 10 and (~o["hit"][safe]).sum() > 10
    assert ((ids == 1) == o["hit"])[safe].all()
    both = (ids == 1) & o["hit"] & safe
    np.testing.assert_allclose(rast.cpu()[0, ..., 0].double().numpy()[both], o["b"][..., 0][both], atol=2e-4)
    np.testing.assert_allclose(rast.cpu()[0, ..., 2].double().numpy()[both], o["depth"][both], atol=1e-4)


def test_huge_triangle_beyond_viewport(backend):
    pos = [[[-50.0, -50.0, 0.0, 1.0], [60.0, -40.0, 0.0, 1.0], [-30.0, 70.0, 0.0, 1.0]]]
    rast, _ = _raster(backend, pos, [[0, 1, 2]], (16, 16))
    assert (rast.cpu()[..., 3] == 1).all()
    o = refcheck.raycast_triangle(np.array(pos[0]), 16, 16)
    np.testing.assert_allclose(rast.cpu()[0, ..., 0].double().numpy(), o["b"][..., 0], atol=1e-5)


# -------------------------------------------------------------------------------------------- depth
def test_closest_fragment_wins(backend):
    near = [[-1.0, -1.0, -0.5, 1.0], [1.0, -1.0, -0.5, 1.0], [-1.0, 1.0, -0.5, 1.0]]
    far = [[-1.0, -1.0, 0.5, 1.0], [1.0, -1.0, 0.5, 1.0], [-1.0, 1.0, 0.5, 1.0]]
    for order, expect in (((near, far), 1), ((far, near), 2)):
        pos = [order[0] + order[1]]
        rast, _ = _raster(backend, pos, [[0, 1, 2], [3, 4, 5]], (8, 8))
        ids = decode_triangle_ids(rast.cpu()[..., 3])
        assert set(ids[ids > 0].unique().tolist()) == {expect}
        assert torch.allclose(rast.cpu()[..., 2][ids > 0], torch.tensor(-0.5))


def test_depth_ties(backend):
    """Identical triangles: the later one wins (CUDA rule); OpenGL keeps one of them consistently."""
    t = [[-1.0, -1.0, 0.25, 1.0], [1.0, -1.0, 0.25, 1.0], [-1.0, 1.0, 0.25, 1.0]]
    rast, _ = _raster(backend, [t + t + t], [[0, 1, 2], [3, 4, 5], [6, 7, 8]], (8, 8))
    ids = decode_triangle_ids(rast.cpu()[..., 3])
    winners = set(ids[ids > 0].unique().tolist())
    if backend.name == "gl":
        assert len(winners) == 1
    else:
        assert winners == {3}


# ---------------------------------------------------------------------------------------- range mode
def test_range_mode_equals_instanced(backend):
    s = meshes.scene("range_multi")
    res = (32, 40)
    rr, rdb = _raster(backend, s["pos"], s["tri"], res, ranges=s["ranges"])
    assert rr.shape == (len(s["ranges"]), 32, 40, 4)
    for n, (first, count) in enumerate(s["ranges"]):
        sub = s["tri"][first:first + count]
        ir, idb = _raster(backend, s["pos"][None], sub, res)
        a, b = rr.cpu()[n].clone(), ir.cpu()[0].clone()
        ida, idb_ = decode_triangle_ids(a[..., 3]), decode_triangle_ids(b[..., 3])
        assert (ida == torch.where(idb_ > 0, idb_ + int(first), idb_)).all()
        assert torch.equal(a[..., :3], b[..., :3])
        assert torch.equal(rdb.cpu()[n], idb.cpu()[0])


def test_range_past_the_end_is_clipped(backend):
    s = meshes.scene("range_multi")
    T = len(s["tri"])
    ranges = np.array([[T - 20, 100], [T + 5, 3], [0, 0]], dtype=np.int32)
    rr, _ = _raster(backend, s["pos"], s["tri"], (16, 16), ranges=ranges)
    ids = decode_triangle_ids(rr.cpu()[..., 3])
    assert ids[0][ids[0] > 0].min() > T - 20
    assert (ids[1] == 0).all() and (ids[2] == 0).all()


def test_instanced_batch_independent(backend):
    s = meshes.scene("torus")
    both, _ = _raster(backend, s["pos"], s["tri"], (24, 24))
    for n in range(2):
        one, _ = _raster(backend, s["pos"][n:n + 1], s["tri"], (24, 24))
        assert torch.equal(both.cpu()[n], one.cpu()[0])


def test_non_square_resolution_orientation(backend):
    # A triangle in the upper-right NDC quadrant lands at high rows and high columns.
    pos = [[[0.2, 0.2, 0.0, 1.0], [0.9, 0.2, 0.0, 1.0], [0.2, 0.9, 0.0, 1.0]]]
    rast, _ = _raster(backend, pos, [[0, 1, 2]], (10, 30))
    rows, cols = torch.nonzero(rast.cpu()[0, ..., 3] > 0, as_tuple=True)
    assert rows.min() >= 5 and cols.min() >= 15


# ------------------------------------------------------------------------------------------- ids
def test_triangle_id_encoding_roundtrip():
    k = torch.tensor([0, 1, 2, 1000, 2**24 - 1, 2**24, 2**24 + 1, 2**24 + 2, 2**25 + 7, 2**28 + 12345])
    enc = encode_triangle_ids(k)
    assert enc.dtype == torch.float32
    assert enc[6].item() == 16777218.0  # spec: k = 2^24 + 1 is stored as 16777218.0
    assert enc[5].item() == 16777216.0
    assert enc[6].view(torch.int32).item() == 0x4A800000 + 2**24 + 1
    assert torch.equal(decode_triangle_ids(enc), k)
    big = enc[6:]
    assert len(set(big.tolist())) == len(big) and (big > 2**24).all()


def test_triangle_ids_above_2_pow_24(backend):
    """End to end: a triangle at index 2^24 + 1 gets the special encoding; interpolate decodes it."""
    T = 2**24 + 2
    tri = torch.zeros(T, 3, dtype=torch.int32)
    tri[T - 1] = torch.tensor([0, 1, 2], dtype=torch.int32)
    tri[5] = torch.tensor([0, 1, 2], dtype=torch.int32)
    pos = backend.tensor(EXAMPLE_POS[0])
    ranges = torch.tensor([[T - 1, 1], [5, 1]], dtype=torch.int32)
    tri_d = tri.to(backend.device)
    rast, _ = dr.rasterize(backend.make_context(), pos, tri_d, (4, 4), ranges=ranges)
    v = rast.cpu()[0, 1, 0, 3]
    assert v.view(torch.int32).item() == 0x4A800000 + T
    assert decode_triangle_ids(rast.cpu()[1, 1, 0, 3:]).item() == 6
    attr = backend.tensor([[100.0], [200.0], [300.0]])
    out, _ = dr.interpolate(attr, rast, tri_d)
    assert abs(out.cpu()[0, 1, 0, 0].item() - 187.5) < 1e-3
    assert abs(out.cpu()[1, 1, 0, 0].item() - 187.5) < 1e-3


def test_gl_output_db_false(backend):
    """A RasterizeGLContext with output_db=False returns rast_db of shape [N, H, W, 0] and no db gradient."""
    if backend.name != "gl":
        pytest.skip("RasterizeGLContext only")
    ctx = dr.RasterizeGLContext(output_db=False, device=backend.device)
    pos = backend.tensor(EXAMPLE_POS).requires_grad_(True)
    tri = backend.tensor([[0, 1, 2]], torch.int32)
    rast, db = dr.rasterize(ctx, pos, tri, (4, 4))
    assert db.shape == (1, 4, 4, 0)
    torch.testing.assert_close(rast.cpu()[0, 1, 0], torch.tensor([0.5, 0.125, 0.0, 1.0]), atol=1e-6, rtol=0)
    (g,) = torch.autograd.grad(rast[..., :2].sum() + db.sum(), pos)
    ref = pos.detach().cpu().requires_grad_(True)
    r_ref, _ = dr.rasterize(dr.RasterizeCudaContext(device="cpu"), ref, tri.cpu(), (4, 4))
    (g_ref,) = torch.autograd.grad(r_ref[..., :2].sum(), ref)
    torch.testing.assert_close(g.cpu(), g_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["sphere", "slivers", "clipped", "range_multi"])
def test_cross_backend_rasterize_and_gradient(backend, name):
    """Outputs agree with the reference backend; the backward pass on the backend's own rast equals
    the reference backward on that same rast."""
    from nvdiffrast.torch import reference

    s = meshes.scene(name)
    res = (40, 36)
    ranges = None if s["ranges"] is None else torch.as_tensor(s["ranges"])
    pos = backend.tensor(s["pos"]).requires_grad_(True)
    tri = backend.tensor(s["tri"], torch.int32)
    rast, db = dr.rasterize(backend.make_context(), pos, tri, res, ranges=ranges)
    ref_rast, ref_db = refcheck.reference_rasterize(pos, tri, res, ranges)
    refcheck.compare_rast(rast, db, ref_rast, ref_db, exact=backend.name == "reference", label=name)
    gen = torch.Generator().manual_seed(11)
    dy = torch.rand(rast.shape, generator=gen) - 0.5
    ddb = torch.rand(rast.shape, generator=gen) - 0.5
    (g,) = torch.autograd.grad([rast, db], pos, [dy.to(rast.device), ddb.to(rast.device)])
    g_ref = reference.rasterize_bwd(refcheck.cpu(pos), refcheck.cpu(tri), refcheck.cpu(rast), dy, ddb)
    scale = g_ref.abs().max().item()
    assert scale > 0
    # The CUDA backward evaluates the same rational functions in float32 (reference: float64).
    tol = 2e-3 if pos.is_cuda else 1e-5
    torch.testing.assert_close(g.cpu() / scale, g_ref / scale, atol=tol, rtol=10 * tol)
