"""Cube-map texturing (spec §4.4): face selection and its ties, the (s, t) table, seamless edges,
corners, mip levels from 6-channel uv_da, invalid directions, and cube-specific errors.

The oracle transcribes the spec's face table per point in float64 NumPy; footprints that cross a
face edge are checked by continuity (a wrongly oriented or wrongly chosen neighbour shows up as a
jump of the order of the texel values) and, at the corners, by the exact three-texel average.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nvdiffrast.torch as dr

ATOL = 2e-5


@pytest.fixture
def dev(backend):
    if backend.name == "gl":
        pytest.skip("texture takes no rasterizer context: the gl case equals the reference/cuda case of its device")
    return backend.device


def _t(x, dev):
    return torch.as_tensor(np.asarray(x), dtype=torch.float32).to(dev).contiguous()


def np_face_st(d):
    """Face index and (s, t) of a direction by the spec's table (ties: X over Y over Z)."""
    x, y, z = (float(v) for v in d)
    ax, ay, az = abs(x), abs(y), abs(z)
    if az > max(ax, ay):
        face, m = (4 if z > 0 else 5), az
    elif ay > ax:
        face, m = (2 if y > 0 else 3), ay
    else:
        face, m = (0 if x > 0 else 1), ax
    st = {
        0: (0.5 - z / (2 * m), 0.5 - y / (2 * m)),
        1: (0.5 + z / (2 * m), 0.5 - y / (2 * m)),
        2: (0.5 + x / (2 * m), 0.5 + z / (2 * m)),
        3: (0.5 + x / (2 * m), 0.5 - z / (2 * m)),
        4: (0.5 + x / (2 * m), 0.5 - y / (2 * m)),
        5: (0.5 - x / (2 * m), 0.5 - y / (2 * m)),
    }[face]
    return face, st[0], st[1]


def np_bilinear_inside(img, s, t):
    """Bilinear lookup of a face image [S, S, C] whose footprint lies inside the face."""
    size = img.shape[0]
    x, y = s * size - 0.5, t * size - 0.5
    j0, i0 = math.floor(x), math.floor(y)
    fx, fy = x - j0, y - i0
    j1, i1 = min(j0 + 1, size - 1), min(i0 + 1, size - 1)
    return ((1 - fx) * (1 - fy) * img[i0, j0] + fx * (1 - fy) * img[i0, j1]
            + (1 - fx) * fy * img[i1, j0] + fx * fy * img[i1, j1])


def np_face_pyramid(face_img, levels):
    out = [face_img.astype(np.float64)]
    for _ in range(levels):
        t = out[-1]
        s, c = t.shape[0], t.shape[2]
        out.append(t.reshape(s // 2, 2, s // 2, 2, c).mean(axis=(1, 3)))
    return out


def random_cube(rng, size, channels=2, batch=1):
    return rng.standard_normal((batch, 6, size, size, channels)).astype(np.float32)


# ------------------------------------------------------------------------------ face selection
def test_face_selection_probes(dev):
    tex_np = np.zeros((1, 6, 4, 4, 1), dtype=np.float32)
    for f in range(6):
        for i in range(4):
            for j in range(4):
                tex_np[0, f, i, j, 0] = 100 * f + 10 * i + j
    tex = _t(tex_np, dev)
    probes = {
        (1.0, 0.5, 0.0): (0, 1, None),  # +X row 1
        (1.0, 0.0, 0.5): (0, None, 1),  # +X col 1
        (0.0, 1.0, 0.5): (2, 3, None),  # +Y row 3
        (0.0, -1.0, 0.5): (3, 1, None),  # -Y row 1
        (0.5, 0.0, -1.0): (5, None, 1),  # -Z col 1
        (1.0, 1.0, 0.0): (0, None, None),  # tie X/Y -> X
        (1.0, 1.0, 1.0): (0, None, None),  # three-way tie -> X
        (-1.0, -1.0, -1.0): (1, None, None),
        (0.0, 1.0, 1.0): (2, None, None),  # tie Y/Z -> Y
        (0.0, -1.0, -1.0): (3, None, None),
        (1.0, 0.0, 1.0): (0, None, None),  # tie X/Z -> X
        (0.2, -0.3, 2.0): (4, None, None),
        (-3.0, 0.2, 0.1): (1, None, None),
    }
    dirs = list(probes)
    out = dr.texture(tex, _t(np.array(dirs).reshape(1, 1, -1, 3), dev), filter_mode="nearest",
                     boundary_mode="cube").cpu().numpy().reshape(-1)
    for d, v in zip(dirs, out):
        face, row, col = probes[d]
        v = int(round(float(v)))
        assert v // 100 == face, (d, v)
        if row is not None:
            assert (v % 100) // 10 == row, (d, v)
        if col is not None:
            assert v % 10 == col, (d, v)
        f2, s, t = np_face_st(d)
        assert v == 100 * f2 + 10 * min(int(t * 4), 3) + min(int(s * 4), 3)


@pytest.mark.parametrize("filter_mode", ["nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear"])
def test_face_table_inside_faces(dev, filter_mode):
    """Directions whose footprints stay inside a face match the spec's table + bilinear lookup."""
    rng = np.random.default_rng(20)
    size = 8
    tex_np = random_cube(rng, size, channels=3, batch=2)
    # Face coordinates in [0.27, 0.73] keep the footprint inside the face on levels 0..2.
    n = 48
    face = rng.integers(0, 6, size=n)
    s = rng.uniform(0.27, 0.73, size=n)
    t = rng.uniform(0.27, 0.73, size=n)
    if filter_mode == "nearest":
        s = (np.floor(s * size) + rng.uniform(0.1, 0.9, size=n)) / size
        t = (np.floor(t * size) + rng.uniform(0.1, 0.9, size=n)) / size
    dirs = np.zeros((n, 3))
    for k in range(n):  # invert the table: a point on the face plane at distance r
        r = rng.uniform(0.5, 3.0)
        u, v = 2 * s[k] - 1, 2 * t[k] - 1
        dirs[k] = r * np.array({0: (1, -v, -u), 1: (-1, -v, u), 2: (u, 1, v), 3: (u, -1, -v),
                                4: (u, -v, 1), 5: (-u, -v, -1)}[face[k]], dtype=np.float64)
    uv_np = dirs.reshape(2, 4, 6, 3).astype(np.float32)
    bias_np = rng.uniform(-0.5, 1.95, size=(2, 4, 6)).astype(np.float32)
    kw = {"mip_level_bias": _t(bias_np, dev)} if "mipmap" in filter_mode else {}
    got = dr.texture(_t(tex_np, dev), _t(uv_np, dev), filter_mode=filter_mode, boundary_mode="cube", **kw)
    got = got.cpu().numpy().reshape(n, 3)
    for k in range(n):
        b = k // 24
        f, ss, tt = np_face_st(uv_np.reshape(n, 3)[k])
        assert f == face[k]
        img = tex_np[b, f]
        if filter_mode == "nearest":
            want = img[min(int(tt * size), size - 1), min(int(ss * size), size - 1)]
        elif filter_mode == "linear":
            want = np_bilinear_inside(img, ss, tt)
        else:
            pyr = np_face_pyramid(img, 3)
            lam = min(max(float(bias_np.reshape(n)[k]), 0.0), 3.0)
            l0 = math.floor(lam)
            f_ = lam - l0
            want = np_bilinear_inside(pyr[l0], ss, tt)
            if filter_mode == "linear-mipmap-linear" and f_ > 0:
                want = (1 - f_) * want + f_ * np_bilinear_inside(pyr[l0 + 1], ss, tt)
        assert np.allclose(got[k], want, atol=ATOL), (k, got[k], want)


# ------------------------------------------------------------------------------- seams, corners
def _edge_points(rng, per_edge):
    """Points on all 12 cube edges and, for each, a unit step into each of the two faces."""
    out = []
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        c = 3 - a - b
        for sa in (1.0, -1.0):
            for sb in (1.0, -1.0):
                for z in rng.uniform(-0.9, 0.9, size=per_edge):
                    p = np.zeros(3)
                    p[a], p[b], p[c] = sa, sb, z
                    into_a = np.zeros(3)
                    into_a[b] = -sb  # shrink the b component: face a wins
                    into_b = np.zeros(3)
                    into_b[a] = -sa
                    out.append((p, into_a, into_b))
    return out


@pytest.mark.parametrize("level_bias", [None, 1.0])
def test_seams_are_continuous(dev, level_bias):
    rng = np.random.default_rng(21)
    size = 4
    tex = _t(random_cube(rng, size, channels=2), dev)
    pts = _edge_points(rng, 6)
    delta = 1e-4
    da = np.array([p + delta * ia for p, ia, _ in pts])
    db = np.array([p + delta * ib for p, _, ib in pts])
    on = np.array([p for p, _, _ in pts])
    uv = _t(np.concatenate([da, db, on]).reshape(1, 3, -1, 3), dev)
    kw = {}
    if level_bias is not None:
        kw = {"mip_level_bias": torch.full((1, 3, len(pts)), level_bias, device=dev),
              "filter_mode": "linear-mipmap-nearest"}
    out = dr.texture(tex, uv, boundary_mode="cube", **kw)[0].cpu().numpy()
    # Faces differ on both sides of each pair (so the test would see a wrong neighbour) ...
    fa = [np_face_st(d)[0] for d in da]
    fb = [np_face_st(d)[0] for d in db]
    assert all(x != y for x, y in zip(fa, fb))
    # ... but the filtered values agree up to the Lipschitz bound of a bilinear lookup.
    lip = 8.0 * size * float(np.abs(tex.cpu().numpy()).max())
    assert np.abs(out[0] - out[1]).max() < lip * 2 * delta
    assert np.abs(out[0] - out[2]).max() < lip * 2 * delta


def _corner_texel(size, face, s, t):
    return face, (0 if t < 0.5 else size - 1), (0 if s < 0.5 else size - 1)


def test_corners_average_three_texels_and_split_gradient(dev):
    rng = np.random.default_rng(22)
    size = 4
    tex_np = random_cube(rng, size, channels=2)
    corners = np.array([[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)], dtype=np.float64)
    for corner in corners:
        want = np.zeros(2)
        texels = []
        for axis in range(3):  # the three faces that meet here
            nudge = corner.copy()
            nudge[axis] *= 1.001
            f, s, t = np_face_st(nudge)
            _, row, col = _corner_texel(size, f, s, t)
            texels.append((f, row, col))
            want += tex_np[0, f, row, col] / 3
        tex = _t(tex_np, dev).requires_grad_(True)
        out = dr.texture(tex, _t(corner.reshape(1, 1, 1, 3), dev), boundary_mode="cube")
        assert np.allclose(out[0, 0, 0].detach().cpu().numpy(), want, atol=ATOL)
        out[..., 0].sum().backward()
        g = tex.grad[0, ..., 0].cpu().numpy()
        expect = np.zeros_like(g)
        for f, row, col in texels:
            expect[f, row, col] = 1.0 / 3.0
        assert np.allclose(g, expect, atol=1e-6), corner
        # Continuity into each of the three faces.
        near = np.array([corner + 1e-4 * np.eye(3)[a] * -corner[a] for a in range(3)])
        vals = dr.texture(_t(tex_np, dev), _t(near.reshape(1, 1, 3, 3), dev), boundary_mode="cube")
        assert np.abs(vals[0, 0].cpu().numpy() - want).max() < 1e-2


def test_single_texel_faces(dev):
    """1x1 faces: every bilinear footprint crosses edges; the result must stay a convex blend."""
    rng = np.random.default_rng(23)
    tex_np = rng.uniform(1.0, 2.0, size=(1, 6, 1, 1, 1)).astype(np.float32)
    dirs = rng.standard_normal((1, 4, 8, 3)).astype(np.float32)
    out = dr.texture(_t(tex_np, dev), _t(dirs, dev), boundary_mode="cube").cpu().numpy()
    assert (out >= tex_np.min() - 1e-6).all() and (out <= tex_np.max() + 1e-6).all()
    centre = dr.texture(_t(tex_np, dev), _t([[[[0.0, 0.0, 5.0]]]], dev), boundary_mode="cube")
    assert centre.item() == pytest.approx(float(tex_np[0, 4, 0, 0, 0]), abs=ATOL)


# ----------------------------------------------------------------------------------- mip level
def _np_face_jacobian(d):
    """d(s, t)/d(direction) of the spec table by central differences in float64 (direction inside a face)."""
    jac = np.zeros((2, 3))
    for a in range(3):
        e = np.zeros(3)
        e[a] = 1e-6
        _, s1, t1 = np_face_st(d + e)
        _, s0, t0 = np_face_st(d - e)
        jac[:, a] = [(s1 - s0) / 2e-6, (t1 - t0) / 2e-6]
    return jac


def test_cube_lambda_from_6ch_uv_da(dev):
    rng = np.random.default_rng(24)
    size = 32
    tex = _t(random_cube(rng, size, channels=1), dev)
    n = 12
    dirs, das, lams = [], [], []
    while len(dirs) < n:
        d = rng.standard_normal(3)
        f, s, t = np_face_st(d)
        if not (0.3 < s < 0.7 and 0.3 < t < 0.7):
            continue
        da = rng.standard_normal((3, 2)) * 10 ** rng.uniform(-1.5, -0.5)  # (x, y, z) x (X, Y)
        jst = _np_face_jacobian(d) @ da * size
        lam = math.log2(np.linalg.svd(jst, compute_uv=False)[0])
        if not (0.1 < lam < 4.9):
            continue
        dirs.append(d)
        das.append(da.reshape(6))  # (dx/dX, dx/dY, dy/dX, dy/dY, dz/dX, dz/dY)
        lams.append(lam)
    uv = _t(np.array(dirs).reshape(1, 1, n, 3), dev)
    a = dr.texture(tex, uv, uv_da=_t(np.array(das).reshape(1, 1, n, 6), dev), boundary_mode="cube")
    b = dr.texture(tex, uv, mip_level_bias=_t(np.array(lams).reshape(1, 1, n), dev), boundary_mode="cube")
    assert torch.allclose(a, b, atol=1e-4)


def test_cube_stack_filters_faces_independently(dev):
    tex_np = np.zeros((1, 6, 2, 2, 1), dtype=np.float32)
    for f in range(6):
        tex_np[0, f] = f
    tex = _t(tex_np, dev)
    # Face centres: the 1x1 level is then read without crossing an edge.
    dirs = _t([[[[2, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -3, 0], [0, 0, 1], [0, 0, -1]]]], dev)
    out = dr.texture(tex, dirs, mip_level_bias=torch.full((1, 1, 6), 1.0, device=dev), boundary_mode="cube",
                     filter_mode="linear-mipmap-nearest")
    assert out.reshape(-1).tolist() == pytest.approx([0, 1, 2, 3, 4, 5], abs=ATOL)


# ----------------------------------------------------------------------------- invalid / errors
def test_invalid_directions_give_zero_and_no_gradient(dev):
    tex = _t(np.ones((1, 6, 4, 4, 2)), dev).requires_grad_(True)
    nan = float("nan")
    uv = _t([[[[0, 0, 0], [nan, 1, 0], [1, 0.2, 0.3]]]], dev).requires_grad_(True)
    da = _t(np.full((1, 1, 3, 6), 0.05), dev).requires_grad_(True)
    for mode in ("nearest", "linear", "linear-mipmap-linear"):
        kw = {"uv_da": da} if "mipmap" in mode else {}
        out = dr.texture(tex, uv, boundary_mode="cube", filter_mode=mode, **kw)
        assert torch.equal(out[0, 0, :2], torch.zeros(2, 2, device=dev))
        assert out[0, 0, 2].tolist() == pytest.approx([1.0, 1.0])
        out.sum().backward()
        assert tex.grad.sum().item() == pytest.approx(2.0, abs=1e-5)
        if mode != "nearest":
            assert torch.equal(uv.grad[0, 0, :2], torch.zeros(2, 3, device=dev))
            assert torch.isfinite(uv.grad).all()
        if "mipmap" in mode:
            assert torch.equal(da.grad[0, 0, :2], torch.zeros(2, 6, device=dev))
        tex.grad = uv.grad = da.grad = None


def test_cube_shape_errors(dev):
    z = lambda *s: torch.zeros(*s, device=dev)  # noqa: E731
    uv = z(1, 2, 2, 3)
    with pytest.raises(RuntimeError, match=r"tex must have shape \[>0, 6, >0, >0, >0\] in cube map mode"):
        dr.texture(z(1, 4, 4, 3), uv, boundary_mode="cube")
    with pytest.raises(RuntimeError, match="in cube map mode"):
        dr.texture(z(1, 5, 4, 4, 3), uv, boundary_mode="cube")
    with pytest.raises(RuntimeError, match="texture shape must be square in cube map mode"):
        dr.texture(z(1, 6, 4, 8, 3), uv, boundary_mode="cube")
    with pytest.raises(RuntimeError, match=r"uv must have shape \[>0, >0, >0, 3\] in cube map mode"):
        dr.texture(z(1, 6, 4, 4, 3), z(1, 2, 2, 2), boundary_mode="cube")
    with pytest.raises(RuntimeError, match="uv_da must have shape.*6"):
        dr.texture(z(1, 6, 4, 4, 3), uv, uv_da=z(1, 2, 2, 4), boundary_mode="cube")
    with pytest.raises(RuntimeError, match="in cube map mode|square"):
        dr.texture_construct_mip(z(1, 6, 4, 8, 3), cube_mode=True)
    with pytest.raises(RuntimeError, match="tex must have shape"):
        dr.texture_construct_mip(z(1, 4, 4, 3), cube_mode=True)
