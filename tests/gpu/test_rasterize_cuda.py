"""CUDA rasterizer: agreement with the CPU reference, robustness on bad or extreme input, determinism.

Calls the CUDA backend adapters (``nvdiffrast.torch._cuda.rasterize``) directly, so these tests do
not depend on the public API layer. Skipped without a GPU or without the native module.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu

from gpu_env import cuda_skip_reason  # noqa: E402 - tests/gpu is on sys.path (pytest rootdir insertion)

_REASON = cuda_skip_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from nvdiffrast.torch._cuda import rasterize as cr  # noqa: E402
from nvdiffrast.torch._ids import decode_triangle_ids  # noqa: E402

try:
    from nvdiffrast.torch.reference import rasterize as rr  # noqa: E402
except ImportError:  # pragma: no cover - the reference is developed in parallel
    rr = None

DEV = torch.device("cuda")


# ------------------------------------------------------------------------------------------ helpers
def _perspective(fovy: float = 0.9, near: float = 0.2, far: float = 20.0) -> np.ndarray:
    f = 1.0 / math.tan(fovy / 2)
    return np.array([[f, 0, 0, 0], [0, f, 0, 0], [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
                     [0, 0, -1, 0]])


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    m = np.eye(4)
    m[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    return m


def _sphere(n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    v = [(0.0, 0.0, 1.0)]
    for i in range(1, n_lat):
        th = math.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * math.pi * j / n_lon
            v.append((math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th)))
    v.append((0.0, 0.0, -1.0))
    s = len(v) - 1

    def ring(i: int, j: int) -> int:
        return 1 + (i - 1) * n_lon + (j % n_lon)

    t = []
    for j in range(n_lon):
        t += [(0, ring(1, j), ring(1, j + 1)), (s, ring(n_lat - 1, j + 1), ring(n_lat - 1, j))]
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            t += [(a, c, d), (a, d, b)]
    return np.array(v), np.array(t, dtype=np.int32)


def _scene(batch: int, n_lat: int = 24, n_lon: int = 40, dist: float = 3.0, seed: int = 0,
           extra_big: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Bumpy spheres (small triangles) plus, optionally, a few large and clipped triangles."""
    rng = np.random.default_rng(seed)
    v, t = _sphere(n_lat, n_lon)
    v = v * (1.0 + 0.05 * rng.standard_normal((len(v), 1)))
    vh = np.concatenate([v, np.ones((len(v), 1))], 1)
    if extra_big:
        # a floor crossing the near plane and w = 0, and a big tilted quad behind the sphere
        big = np.array([[-6, -1.2, -8, 1], [6, -1.2, -8, 1], [6, -1.2, 5, 1], [-6, -1.2, 5, 1],
                        [-2, -2, -1.5, 1], [2, -2, -1.5, 1], [2, 2, -1.8, 1], [-2, 2, -1.8, 1]], dtype=np.float64)
        base = len(vh)
        vh = np.concatenate([vh, big], 0)
        q = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]], dtype=np.int32) + base
        t = np.concatenate([t, q], 0)
    P = _perspective()
    pos = []
    for _ in range(batch):
        view = np.eye(4)
        view[2, 3] = -dist
        m = P @ view @ _rotation(rng) if not extra_big else P @ view @ _tilt(rng)
        pos.append(vh @ m.T)
    return (torch.tensor(np.stack(pos), dtype=torch.float32, device=DEV).contiguous(),
            torch.tensor(t, dtype=torch.int32, device=DEV))


def _tilt(rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(-0.3, 0.3)
    m = np.eye(4)
    m[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
    return m


def _ids(rast: torch.Tensor) -> torch.Tensor:
    return decode_triangle_ids(rast[..., 3].cpu())


def _compare_with_reference(pos, tri, res, ranges=None, prev=None):
    got, got_db = cr.rasterize_fwd(pos, tri, res, ranges, prev)
    ref, ref_db = rr.rasterize_fwd(pos.cpu(), tri.cpu(), res, ranges, None if prev is None else prev.cpu())
    gi, ri = _ids(got), _ids(ref)
    same = gi == ri
    assert same.float().mean() >= 0.9995, f"{(~same).sum().item()} pixels with different triangles"
    g, r = got.cpu()[same], ref[same]
    torch.testing.assert_close(g, r, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(got_db.cpu()[same], ref_db[same], atol=1e-5, rtol=1e-4)
    return got, got_db


# -------------------------------------------------------------------------------------- correctness
def test_spec_example():
    pos = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]]], device=DEV)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=DEV)
    rast, db = cr.rasterize_fwd(pos, tri, (4, 4), None, None)
    torch.testing.assert_close(rast[0, 1, 0].cpu(), torch.tensor([0.5, 0.125, 0.0, 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(db[0, 1, 0].cpu(), torch.tensor([-0.25, -0.25, 0.25, 0.0]), atol=1e-6, rtol=0)
    assert (rast[0, 3, 3] == 0).all() and (db[0, 3, 3] == 0).all()


@pytest.mark.skipif(rr is None, reason="reference rasterizer not available")
@pytest.mark.parametrize("res", [(48, 64), (97, 35)])
def test_matches_reference_instanced(res):
    pos, tri = _scene(3)
    _compare_with_reference(pos, tri, res)


@pytest.mark.skipif(rr is None, reason="reference rasterizer not available")
def test_matches_reference_dense_noisy_mesh():
    """> 65536 triangles (the many-triangles work split) with long slivers and high depth complexity."""
    pos, tri = _scene(1, n_lat=190, n_lon=200, seed=3)
    gen = torch.Generator(device="cpu").manual_seed(3)
    noise = 1.0 + 0.08 * torch.randn(pos.shape[1], 1, generator=gen)
    pos = (pos.cpu() * torch.cat([noise.expand(-1, 3), torch.ones_like(noise)], 1)).to(DEV).contiguous()
    _compare_with_reference(pos, tri, (150, 130))


@pytest.mark.skipif(rr is None, reason="reference rasterizer not available")
def test_matches_reference_range_mode_and_peeling():
    pos, tri = _scene(1)
    pos2 = pos[0].contiguous()
    T = tri.shape[0]
    ranges = torch.tensor([[0, T], [T // 3, T], [-5, 40], [T + 3, 5], [10, 0]], dtype=torch.int32)
    _compare_with_reference(pos2, tri, (40, 56), ranges=ranges)
    layer, _ = _compare_with_reference(pos, tri, (40, 56))
    for _ in range(3):
        layer, _ = _compare_with_reference(pos, tri, (40, 56), prev=layer)


@pytest.mark.skipif(rr is None, reason="reference rasterizer not available")
@pytest.mark.parametrize("batch,mesh,res", [
    (2, {}, (256, 320)),
    (20, {"n_lat": 40, "n_lon": 90, "extra_big": False}, (256, 256)),
])
def test_matches_reference_at_low_depth_complexity(batch, mesh, res):
    """Far fewer triangles than pixels (atomics without the read-first filter), once with a warp per
    triangle (few instances, queued large triangles) and once with a triangle per lane (> 65536)."""
    pos, tri = _scene(batch, **mesh)
    _compare_with_reference(pos, tri, res)


def test_deterministic_forward():
    pos, tri = _scene(4, n_lat=60, n_lon=100)
    a = cr.rasterize_fwd(pos, tri, (256, 256), None, None)
    b = cr.rasterize_fwd(pos, tri, (256, 256), None, None)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_closest_wins_and_ties_go_to_later_triangle():
    q = [[-1.0, -1.0], [3.0, -1.0], [-1.0, 3.0]]
    verts = [[x, y, z, 1.0] for z in (0.5, -0.25, 0.5, -0.25) for x, y in q]
    pos = torch.tensor([verts], device=DEV)
    tri = torch.arange(12, dtype=torch.int32, device=DEV).reshape(4, 3)
    rast, _ = cr.rasterize_fwd(pos, tri, (16, 16), None, None)
    ids = _ids(rast)
    assert (ids == 4).all()  # triangles 1 and 3 tie at the closest depth; the later one wins
    torch.testing.assert_close(rast[..., 2].cpu(), torch.full((1, 16, 16), -0.25))


def test_depth_peeling_layers():
    q = [[-1.0, -1.0], [3.0, -1.0], [-1.0, 3.0]]
    verts = [[x, y, z, 1.0] for z in (0.5, -0.25, 0.1, -0.25) for x, y in q]
    pos = torch.tensor([verts], device=DEV)
    tri = torch.arange(12, dtype=torch.int32, device=DEV).reshape(4, 3)
    l1, _ = cr.rasterize_fwd(pos, tri, (8, 8), None, None)
    l2, _ = cr.rasterize_fwd(pos, tri, (8, 8), None, l1)
    l3, _ = cr.rasterize_fwd(pos, tri, (8, 8), None, l2)
    l4, _ = cr.rasterize_fwd(pos, tri, (8, 8), None, l3)
    assert (_ids(l1) == 4).all() and (_ids(l2) == 3).all() and (_ids(l3) == 1).all()
    assert (l4 == 0).all()  # triangle 2, coincident with 4, is never separated from it


# --------------------------------------------------------------------------------------- robustness
def test_bad_indices_and_non_finite_positions_are_skipped():
    pos = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0],
                         [float("nan"), 0.0, 0.0, 1.0], [0.0, float("inf"), 0.0, 1.0], [0.0, 0.0, 0.0, -float("inf")]]],
                       device=DEV)
    bad = [[0, 1, 6], [-1, 0, 1], [0, 2**31 - 1, 1], [-(2**31), 1, 2], [0, 1, 3], [4, 1, 2], [5, 0, 1], [0, 0, 1],
           [1, 1, 1]]
    tri = torch.tensor(bad + [[0, 1, 2]], dtype=torch.int32, device=DEV)
    rast, db = cr.rasterize_fwd(pos, tri, (16, 16), None, None)
    torch.cuda.synchronize()
    ids = _ids(rast)
    assert set(ids.unique().tolist()) == {0, len(bad) + 1}
    assert torch.isfinite(rast).all() and torch.isfinite(db).all()
    # the backward pass also tolerates a rast whose ids point at garbage triangles
    dy = torch.ones_like(rast)
    fake = rast.clone()
    fake[..., 3] = torch.randint(1, len(bad) + 50, fake.shape[:-1], device=DEV).float()
    g = cr.rasterize_bwd(pos, tri, fake, dy, torch.ones_like(rast))
    torch.cuda.synchronize()
    assert g.shape == pos.shape


def test_all_garbage_random_input_does_not_crash():
    gen = torch.Generator(device="cpu").manual_seed(5)
    pos = torch.randn(2, 300, 4, generator=gen) * torch.tensor([1e3, 1e-3, 1e30, 1.0])
    pos[0, ::7] = float("nan")
    pos[1, ::5, 3] = 0.0
    tri = torch.randint(-400, 400, (2000, 3), generator=gen, dtype=torch.int32)
    rast, db = cr.rasterize_fwd(pos.to(DEV), tri.to(DEV), (33, 17), None, None)
    torch.cuda.synchronize()
    assert torch.isfinite(rast).all() and torch.isfinite(db).all()


def test_zero_area_and_huge_triangles():
    pos = torch.tensor([[[-0.5, -0.5, 0.0, 1.0], [0.5, 0.5, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0],   # collinear
                         [-1e30, -1e30, 0.2, 1.0], [1e30, -1e30, 0.2, 1.0], [0.0, 1e30, 0.2, 1.0]]], device=DEV)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32, device=DEV)
    rast, db = cr.rasterize_fwd(pos, tri, (31, 29), None, None)
    ids = _ids(rast)
    assert (ids == 2).all()
    assert torch.isfinite(rast).all() and torch.isfinite(db).all()
    torch.testing.assert_close(rast[..., 2].cpu(), torch.full((1, 31, 29), 0.2))


def test_one_by_one_output():
    pos = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [3.0, -1.0, 0.0, 1.0], [-1.0, 3.0, 0.0, 1.0]]], device=DEV)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=DEV)
    rast, db = cr.rasterize_fwd(pos, tri, (1, 1), None, None)
    assert rast.shape == (1, 1, 1, 4)
    torch.testing.assert_close(rast[0, 0, 0].cpu(), torch.tensor([0.5, 0.25, 0.0, 1.0]))


def test_8192_square_output():
    pos = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]]],
                       device=DEV)
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32, device=DEV)
    rast, db = cr.rasterize_fwd(pos, tri, (8192, 8192), None, None)
    ids = rast[0, ..., 3]
    assert bool((ids > 0).all())
    # pixel (r, c) lies in triangle 1 iff c > r, in triangle 2 iff c < r; the diagonal goes to one side
    r = torch.arange(8192, device=DEV)
    assert bool((ids[r[:, None] < r[None, :]] == 1).all())
    assert bool((ids[r[:, None] > r[None, :]] == 2).all())
    del rast, db
    torch.cuda.empty_cache()


def test_batch_1024_matches_single_images():
    pos, tri = _scene(1024, n_lat=8, n_lon=12, extra_big=False)
    rast, db = cr.rasterize_fwd(pos, tri, (24, 24), None, None)
    for n in (0, 1, 511, 1023):
        one, one_db = cr.rasterize_fwd(pos[n:n + 1].contiguous(), tri, (24, 24), None, None)
        assert torch.equal(rast[n], one[0]) and torch.equal(db[n], one_db[0])


def test_ten_million_triangles():
    n = 2238  # 2 (n - 1)^2 > 10M triangles
    lin = torch.linspace(-1.2, 1.2, n, device=DEV)
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    pos = torch.stack([x, y, 0.1 * x * y, torch.ones_like(x)], -1).reshape(1, -1, 4).contiguous()
    i = torch.arange(n - 1, device=DEV, dtype=torch.int32)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    tri = torch.cat([torch.stack([a, a + 1, a + n + 1], 1), torch.stack([a, a + n + 1, a + n], 1)]).contiguous()
    assert tri.shape[0] >= 10_000_000
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    rast, _ = cr.rasterize_fwd(pos, tri, (1024, 1024), None, None)
    end.record()
    torch.cuda.synchronize()
    print(f"10M triangles at 1024^2: {start.elapsed_time(end):.2f} ms")
    ids = rast[0, ..., 3]
    assert bool((ids > 0).all())  # watertight grid covering the whole screen


def test_queue_overflow_falls_back_to_serial_path():
    T = 70000  # more large triangles than the tile queue holds (65536)
    pos = torch.tensor([[[-1.0, -1.0, 0.3, 1.0], [3.0, -1.0, 0.3, 1.0], [-1.0, 3.0, 0.3, 1.0]]], device=DEV)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=DEV).repeat(T, 1)
    rast, _ = cr.rasterize_fwd(pos, tri, (64, 64), None, None)
    assert (_ids(rast) == T).all()


def test_inputs_on_other_devices_raise_clearly():
    pos = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]]], device=DEV)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="tri"):
        cr.rasterize_fwd(pos, tri, (4, 4), None, None)
    with pytest.raises(RuntimeError, match="float32"):
        cr.rasterize_fwd(pos.double(), tri.to(DEV), (4, 4), None, None)
    with pytest.raises(RuntimeError, match="resolution"):
        cr.rasterize_fwd(pos, tri.to(DEV), (0, 4), None, None)
    if torch.cuda.device_count() >= 2:
        d1 = torch.device("cuda", 1)
        rast, _ = cr.rasterize_fwd(pos.to(d1), tri.to(d1), (4, 4), None, None)
        assert rast.device == d1 and (_ids(rast) > 0).any()
        with pytest.raises(RuntimeError, match="same GPU device"):
            cr.rasterize_fwd(pos.to(d1), tri.to(DEV), (4, 4), None, None)


def test_meta_kernels_for_tracing():
    pos = torch.empty(3, 10, 4, device="meta")
    tri = torch.empty(5, 3, dtype=torch.int32, device="meta")
    rast, db = torch.ops.nvdiffrast.rasterize_fwd(pos, tri, 7, 9, None, None)
    assert rast.shape == (3, 7, 9, 4) and db.shape == (3, 7, 9, 4) and rast.device.type == "meta"
    g = torch.ops.nvdiffrast.rasterize_bwd(pos, tri, rast, rast, db)
    assert g.shape == pos.shape


# ----------------------------------------------------------------------------------------- gradients
def _autograd_grad(pos, tri, rast, dy, ddb):
    """float64 autograd of spec §4.1's formulas for the triangles recorded in rast."""
    N, H, W, _ = rast.shape
    ids = decode_triangle_ids(rast[..., 3].cpu()).reshape(-1)
    pix = torch.nonzero(ids > 0).squeeze(1)
    t = tri.cpu().long()[ids[pix] - 1]
    n = pix // (H * W)
    rem = pix % (H * W)
    X = ((2.0 * (rem % W).double() + 1.0) / W - 1.0)[:, None]
    Y = ((2.0 * (rem // W).double() + 1.0) / H - 1.0)[:, None]
    V = pos.shape[-2]
    leaf = pos.cpu().double().reshape(-1, 4).requires_grad_(True)
    p = leaf[t + (n[:, None] * V if pos.dim() == 3 else 0)]
    x, y, w = p[..., 0], p[..., 1], p[..., 3]
    qx, qy = x - X * w, y - Y * w
    j, k = [1, 2, 0], [2, 0, 1]
    A = qx[:, j] * qy[:, k] - qy[:, j] * qx[:, k]
    S = A.sum(1)
    S = S + 1e-6 * torch.sign(S).detach()
    u, v = A[:, 0] / S, A[:, 1] / S
    g = dy.cpu().double().reshape(-1, 4)[pix]
    loss = (g[:, 0] * u + g[:, 1] * v).sum()
    if ddb is not None:
        b = w[:, k] * y[:, j] - w[:, j] * y[:, k]
        c = w[:, j] * x[:, k] - w[:, k] * x[:, j]
        sb, sc = b.sum(1), c.sum(1)
        ch = torch.stack([(b[:, 0] - u * sb) / S * (2.0 / W), (c[:, 0] - u * sc) / S * (2.0 / H),
                          (b[:, 1] - v * sb) / S * (2.0 / W), (c[:, 1] - v * sc) / S * (2.0 / H)], 1)
        loss = loss + (ddb.cpu().double().reshape(-1, 4)[pix] * ch).sum()
    (gp,) = torch.autograd.grad(loss, leaf)
    gp[:, 2] = 0
    return gp.reshape(pos.shape).float()


@pytest.mark.parametrize("with_db", [False, True])
def test_backward_matches_autograd(with_db):
    pos, tri = _scene(2, n_lat=12, n_lon=20)
    rast, _ = cr.rasterize_fwd(pos, tri, (40, 48), None, None)
    gen = torch.Generator(device="cpu").manual_seed(1)
    dy = torch.randn(rast.shape, generator=gen).to(DEV)
    ddb = torch.randn(rast.shape, generator=gen).to(DEV) if with_db else None
    got = cr.rasterize_bwd(pos, tri, rast, dy, ddb).cpu()
    want = _autograd_grad(pos, tri, rast, dy, ddb)
    assert (got[..., 2] == 0).all()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_backward_finite_difference():
    pos = torch.tensor([[[-0.9, -0.8, 0.1, 1.0], [0.8, -0.7, 0.2, 1.3], [-0.5, 0.9, 0.3, 0.9]]], device=DEV)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=DEV)
    rast, _ = cr.rasterize_fwd(pos, tri, (16, 16), None, None)
    mask = (rast[..., 3:] > 0).float()
    dy = torch.zeros_like(rast)
    dy[..., 0:1] = mask  # d(sum of u over covered pixels)
    g = cr.rasterize_bwd(pos, tri, rast, dy, None)
    eps = 1e-3
    for comp in (0, 1, 3):
        p1, p2 = pos.clone(), pos.clone()
        p1[0, 1, comp] += eps
        p2[0, 1, comp] -= eps
        # hold the coverage fixed: evaluate u with the original triangle assignment
        u1 = (cr.rasterize_fwd(p1, tri, (16, 16), None, None)[0][..., 0] * mask[..., 0]).double().sum()
        u2 = (cr.rasterize_fwd(p2, tri, (16, 16), None, None)[0][..., 0] * mask[..., 0]).double().sum()
        fd = (u1 - u2).item() / (2 * eps)
        assert abs(fd - g[0, 1, comp].item()) < 0.05 * max(1.0, abs(fd)), (comp, fd, g[0, 1, comp].item())


def test_deterministic_backward():
    pos, tri = _scene(2, n_lat=30, n_lon=50)
    rast, _ = cr.rasterize_fwd(pos, tri, (128, 128), None, None)
    gen = torch.Generator(device="cpu").manual_seed(2)
    dy = torch.randn(rast.shape, generator=gen).to(DEV)
    ddb = torch.randn(rast.shape, generator=gen).to(DEV)
    atomic = cr.rasterize_bwd(pos, tri, rast, dy, ddb)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        a = cr.rasterize_bwd(pos, tri, rast, dy, ddb)
        b = cr.rasterize_bwd(pos, tri, rast, dy, ddb)
    finally:
        torch.use_deterministic_algorithms(prev)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, atomic, rtol=1e-4, atol=1e-4 * atomic.abs().max().item())
