"""interpolate: spec values, attribute broadcasting, every diff_attrs form, invalid ids, cross-backend."""

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
from nvdiffrast.torch._ids import decode_triangle_ids  # noqa: E402

EXAMPLE_POS = [[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]]]


def _scene(backend, name="sphere", res=(24, 24)):
    s = meshes.scene(name)
    pos, tri = backend.tensor(s["pos"]), backend.tensor(s["tri"], torch.int32)
    rast, db = dr.rasterize(backend.make_context(), pos, tri, res)
    return s, pos, tri, rast, db


def test_spec_example(backend):
    pos, tri = backend.tensor(EXAMPLE_POS), backend.tensor([[0, 1, 2]], torch.int32)
    rast, db = dr.rasterize(backend.make_context(), pos, tri, (4, 4))
    attr = backend.tensor([[100.0], [200.0], [300.0]])
    out, da = dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs="all")
    assert out.shape == (1, 4, 4, 1) and da.shape == (1, 4, 4, 2)
    assert abs(out.cpu()[0, 1, 0, 0].item() - 187.5) < 1e-4
    torch.testing.assert_close(da.cpu()[0, 1, 0], torch.tensor([25.0, 50.0]), atol=1e-4, rtol=0)
    empty = rast.cpu()[..., 3] == 0
    assert (out.cpu()[empty] == 0).all() and (da.cpu()[empty] == 0).all()


def test_matches_direct_formula(backend):
    s, pos, tri, rast, db = _scene(backend)
    colors = s["colors"]
    out, da = dr.interpolate(backend.tensor(colors), rast, tri, rast_db=db, diff_attrs=[0, 2])
    r, d = rast.cpu().double().numpy(), db.cpu().double().numpy()
    ids = decode_triangle_ids(rast.cpu()[..., 3]).numpy()
    cov = ids > 0
    t = s["tri"][ids[cov] - 1]
    a = colors.astype(np.float64)[t]  # [P, 3, A]
    u, v = r[..., 0][cov][:, None], r[..., 1][cov][:, None]
    expect = u * a[:, 0] + v * a[:, 1] + (1 - u - v) * a[:, 2]
    np.testing.assert_allclose(out.cpu().numpy()[cov], expect, atol=1e-5)
    for j, k in enumerate((0, 2)):
        e0, e1 = a[:, 0, k] - a[:, 2, k], a[:, 1, k] - a[:, 2, k]
        ddx = e0 * d[..., 0][cov] + e1 * d[..., 2][cov]
        ddy = e0 * d[..., 1][cov] + e1 * d[..., 3][cov]
        np.testing.assert_allclose(da.cpu().numpy()[cov][:, 2 * j], ddx, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(da.cpu().numpy()[cov][:, 2 * j + 1], ddy, atol=1e-5, rtol=1e-4)


def test_attribute_batch_forms(backend):
    s, pos, tri, rast, db = _scene(backend, "torus")
    c = backend.tensor(s["colors"])
    o2, _ = dr.interpolate(c, rast, tri)
    o1, _ = dr.interpolate(c[None].contiguous(), rast, tri)
    oN, _ = dr.interpolate(torch.stack([c, c]).contiguous(), rast, tri)
    assert torch.equal(o2, o1) and torch.equal(o2, oN)
    per = torch.stack([c, 2 * c]).contiguous()
    op, _ = dr.interpolate(per, rast, tri)
    torch.testing.assert_close(op[1], dr.interpolate(2 * c, rast, tri)[0][1])
    torch.testing.assert_close(op[0], o2[0])


def test_diff_attrs_forms(backend):
    s, pos, tri, rast, db = _scene(backend, "cube")
    attr = backend.tensor(np.concatenate([s["colors"], s["colors"][:, :1] * 3], axis=1))  # A = 4
    _, d_all = dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs="all")
    assert d_all.shape[-1] == 8
    _, d_sel = dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs=[3, 1])
    torch.testing.assert_close(d_sel[..., 0:2], d_all[..., 6:8])
    torch.testing.assert_close(d_sel[..., 2:4], d_all[..., 2:4])
    _, d_neg = dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs=[-1])
    torch.testing.assert_close(d_neg, d_all[..., 6:8])
    _, d_np = dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs=np.array([1, 3]))
    _, d_tuple = dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs=(1, 3))
    assert torch.equal(d_np, d_tuple)
    _, d_oob = dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs=[0, 7, -9])
    assert d_oob.shape[-1] == 6
    assert (d_oob[..., 2:] == 0).all() and torch.equal(d_oob[..., :2], d_all[..., :2])
    for empty in (None, []):
        _, d0 = dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs=empty)
        assert d0.shape == (*rast.shape[:3], 0)
    out_plain, d_none = dr.interpolate(attr, rast, tri)
    assert d_none.shape == (*rast.shape[:3], 0)


def test_ids_beyond_tri_and_separate_index_buffer(backend):
    s, pos, tri, rast, db = _scene(backend, "cube")
    T = tri.shape[0]
    attr = backend.tensor(s["colors"])
    full, _ = dr.interpolate(attr, rast, tri)
    half, _ = dr.interpolate(attr, rast, tri[: T // 2].contiguous())
    ids = decode_triangle_ids(rast.cpu()[..., 3])
    beyond = ids > T // 2
    assert beyond.any()
    assert (half.cpu()[beyond] == 0).all()
    assert torch.equal(half.cpu()[~beyond], full.cpu()[~beyond])
    # A separate index buffer into a different attribute array (per-corner attributes).
    corner_attr = attr[tri.long().flatten()].contiguous()  # [3T, A]
    corner_tri = torch.arange(3 * T, dtype=torch.int32).reshape(T, 3).to(tri.device)
    sep, _ = dr.interpolate(corner_attr, rast, corner_tri)
    torch.testing.assert_close(sep, full)


def test_out_of_range_vertex_index_gives_zeros(backend):
    pos, tri = backend.tensor(EXAMPLE_POS), backend.tensor([[0, 1, 2]], torch.int32)
    rast, db = dr.rasterize(backend.make_context(), pos, tri, (4, 4))
    bad_tri = backend.tensor([[0, 1, 7]], torch.int32)
    out, da = dr.interpolate(backend.tensor([[1.0], [2.0], [3.0]]), rast, bad_tri, rast_db=db, diff_attrs="all")
    assert (out.cpu() == 0).all() and (da.cpu() == 0).all()


@pytest.mark.parametrize("name", ["sphere", "range_multi"])
def test_cross_backend_interpolate(backend, name):
    s = meshes.scene(name)
    pos, tri = backend.tensor(s["pos"]), backend.tensor(s["tri"], torch.int32)
    rg = None if s["ranges"] is None else torch.as_tensor(s["ranges"])
    rast, db = dr.rasterize(backend.make_context(), pos, tri, (20, 20), ranges=rg)
    attr = backend.tensor(s["colors"])
    out, da = dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs="all")
    ref_out, ref_da = dr.interpolate(refcheck.cpu(attr), refcheck.cpu(rast), refcheck.cpu(tri),
                                     rast_db=refcheck.cpu(db), diff_attrs="all")
    torch.testing.assert_close(out.cpu(), ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(da.cpu(), ref_da, atol=1e-5, rtol=1e-4)
