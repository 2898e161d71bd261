"""Reference scenes for artifact validation: procedural meshes, cameras and one render function per scene.

This file is copied next to the validation worker and imported inside the fresh venv that holds only the
wheel under test and torch, so it depends on nothing but ``torch`` and the standard library (no numpy,
no ``ci`` package, no test assets). All geometry is generated from formulas with fixed seeds, so every
backend and every machine renders exactly the same inputs.

Images follow the API convention (row 0 = bottom); ``to_display`` flips them for pictures.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

# ------------------------------------------------------------------------------------------------ meshes


@functools.lru_cache(maxsize=8)
def icosphere(level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit icosphere: 20·4^level triangles, consistently wound, shared vertices (watertight).

    Cached: callers must not modify the returned tensors in place.
    """
    t = (1.0 + 5.0**0.5) / 2.0
    v = torch.tensor(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
         [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=torch.float64)
    f = torch.tensor(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
         [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], dtype=torch.int64)
    v = v / v.norm(dim=1, keepdim=True)
    for _ in range(level):
        n_f = f.shape[0]
        edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(dim=1).values
        uniq, inv = torch.unique(edges, dim=0, return_inverse=True)
        mid = v[uniq[:, 0]] + v[uniq[:, 1]]
        mid = mid / mid.norm(dim=1, keepdim=True)
        base = v.shape[0]
        v = torch.cat([v, mid])
        m01, m12, m20 = inv[:n_f] + base, inv[n_f:2 * n_f] + base, inv[2 * n_f:] + base
        a, b, c = f[:, 0], f[:, 1], f[:, 2]
        f = torch.cat([torch.stack([a, m01, m20], 1), torch.stack([b, m12, m01], 1),
                       torch.stack([c, m20, m12], 1), torch.stack([m01, m12, m20], 1)])
    return v.float(), f.int()


def cube() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cube [-0.5, 0.5]^3 with per-face vertices (24), uvs and normals; 12 triangles."""
    faces = [  # (normal axis, sign)
        (0, 1.0), (0, -1.0), (1, 1.0), (1, -1.0), (2, 1.0), (2, -1.0)]
    pos, uv, nrm, tri = [], [], [], []
    for fi, (ax, sgn) in enumerate(faces):
        u_ax, v_ax = [a for a in range(3) if a != ax]
        for su, sv in [(0, 0), (1, 0), (1, 1), (0, 1)]:
            p = [0.0, 0.0, 0.0]
            p[ax] = 0.5 * sgn
            p[u_ax] = su - 0.5
            p[v_ax] = sv - 0.5
            pos.append(p)
            uv.append([(fi % 3 + su) / 3.0, (fi // 3 + sv) / 2.0])  # 3×2 atlas
            n = [0.0, 0.0, 0.0]
            n[ax] = sgn
            nrm.append(n)
        b = 4 * fi
        tri += [[b, b + 1, b + 2], [b, b + 2, b + 3]]
    return (torch.tensor(pos), torch.tensor(tri, dtype=torch.int32), torch.tensor(uv), torch.tensor(nrm))


def torus(major: float = 0.65, minor: float = 0.28, nu: int = 40, nv: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Torus around the z axis, shared vertices, 2·nu·nv triangles."""
    u = torch.arange(nu, dtype=torch.float64) * (2 * math.pi / nu)
    w = torch.arange(nv, dtype=torch.float64) * (2 * math.pi / nv)
    uu, ww = torch.meshgrid(u, w, indexing="ij")
    r = major + minor * torch.cos(ww)
    pos = torch.stack([r * torch.cos(uu), r * torch.sin(uu), minor * torch.sin(ww)], -1).reshape(-1, 3)
    i = torch.arange(nu).view(-1, 1)
    j = torch.arange(nv).view(1, -1)
    a = i * nv + j
    b = ((i + 1) % nu) * nv + j
    c = ((i + 1) % nu) * nv + (j + 1) % nv
    d = i * nv + (j + 1) % nv
    tri = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([a, c, d], -1).reshape(-1, 3)])
    return pos.float(), tri.int()


def slivers(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """A fan of needle-thin triangles (0.02 rad wide) plus long horizontal slivers: coverage stress."""
    pos, tri = [[0.0, 0.0, 0.0]], []
    for k in range(n):
        a = 2 * math.pi * k / n
        for da in (0.0, 0.02):
            pos.append([0.9 * math.cos(a + da), 0.9 * math.sin(a + da), 0.1 * math.sin(3 * a)])
        tri.append([0, len(pos) - 2, len(pos) - 1])
    for k in range(8):
        y = -0.9 + 0.05 * k
        base = len(pos)
        pos += [[-0.95, y, 0.0], [0.95, y + 0.004 * (k + 1), 0.0], [-0.95, y + 0.003, 0.0]]
        tri.append([base, base + 1, base + 2])
    return torch.tensor(pos), torch.tensor(tri, dtype=torch.int32)


# ------------------------------------------------------------------------------------------------ cameras


def perspective(fovy: float = 0.9, near: float = 0.2, far: float = 20.0) -> torch.Tensor:
    """OpenGL-style projection (square aspect)."""
    y = 1.0 / math.tan(fovy / 2)
    return torch.tensor([[y, 0, 0, 0], [0, y, 0, 0],
                         [0, 0, -(far + near) / (far - near), -(2 * far * near) / (far - near)], [0, 0, -1, 0]])


def translate(x: float, y: float, z: float) -> torch.Tensor:
    m = torch.eye(4)
    m[:3, 3] = torch.tensor([x, y, z])
    return m


def rotate_x(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1.0]])


def rotate_y(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1.0]])


def mvp(rx: float, ry: float, dist: float = 3.0) -> torch.Tensor:
    return perspective() @ translate(0, 0, -dist) @ rotate_x(rx) @ rotate_y(ry)


def to_clip(pos: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[V,3] object-space points → [V,4] clip-space with matrix ``m``."""
    ph = torch.cat([pos, torch.ones_like(pos[:, :1])], dim=1)
    return (ph @ m.t()).contiguous()


def checker_texture(size: int = 64, squares: int = 8) -> torch.Tensor:
    """[1, size, size, 3] colored checkerboard with a smooth gradient (distinct at every mip level)."""
    ii = torch.arange(size, dtype=torch.float32)
    y, x = torch.meshgrid(ii, ii, indexing="ij")
    chk = ((torch.div(x, size // squares, rounding_mode="floor") + torch.div(y, size // squares, rounding_mode="floor"))
           % 2)
    r = 0.2 + 0.6 * chk
    g = x / (size - 1)
    b = y / (size - 1) * (1 - 0.5 * chk)
    return torch.stack([r, g, b], -1)[None].contiguous()


def env_cube(size: int = 16) -> torch.Tensor:
    """[1, 6, size, size, 3] cube map: one hue per face plus a per-face gradient."""
    hues = torch.tensor([[1, 0.2, 0.2], [0.2, 1, 0.2], [0.2, 0.2, 1], [1, 1, 0.2], [0.2, 1, 1], [1, 0.2, 1.0]])
    ii = torch.arange(size, dtype=torch.float32) / (size - 1)
    y, x = torch.meshgrid(ii, ii, indexing="ij")
    shade = (0.5 + 0.5 * x * y)[None, :, :, None]
    return (hues[:, None, None, :] * shade)[None].contiguous()


# ------------------------------------------------------------------------------------------------ scenes


@dataclass
class Scene:
    """A named scene: ``render(dr, ctx, device, res)`` returns {'image': [N,H,W,C], 'rast': [N,H,W,4]}."""

    name: str
    description: str
    render: Callable[[Any, Any, torch.device, int], dict[str, torch.Tensor]]
    res: int = 96
    reference_ok: bool = True  # small enough for the CPU reference backend
    gpu_only: bool = False  # rendered only with CUDA tensors (too slow through a software GL driver)


def _dev(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t.to(device).contiguous()


def _vertex_colors(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g)


def render_triangle(dr: Any, ctx: Any, device: torch.device, res: int) -> dict[str, torch.Tensor]:
    pos = torch.tensor([[[-0.8, -0.8, 0, 1], [0.8, -0.8, 0, 1], [-0.8, 0.8, 0, 1]]], dtype=torch.float32)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    col = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float32)
    rast, _ = dr.rasterize(ctx, _dev(pos, device), _dev(tri, device), resolution=[res, res])
    img, _ = dr.interpolate(_dev(col, device)[None], rast, _dev(tri, device))
    return {"image": img, "rast": rast}


def _shaded_mesh(dr: Any, ctx: Any, device: torch.device, res: int, pos3: torch.Tensor, tri: torch.Tensor,
                 mats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    clip = torch.stack([to_clip(pos3, m) for m in mats])  # instanced: [N, V, 4]
    nrm = pos3 / pos3.norm(dim=1, keepdim=True).clamp_min(1e-6)
    col = (nrm * 0.5 + 0.5) * 0.7 + 0.3 * _vertex_colors(pos3.shape[0])
    pos_d, tri_d = _dev(clip, device), _dev(tri, device)
    rast, _ = dr.rasterize(ctx, pos_d, tri_d, resolution=[res, res])
    img, _ = dr.interpolate(_dev(col, device), rast, tri_d)
    img = dr.antialias(img.contiguous(), rast, pos_d, tri_d)
    return {"image": img, "rast": rast}


def render_sphere(dr: Any, ctx: Any, device: torch.device, res: int) -> dict[str, torch.Tensor]:
    v, f = icosphere(3)
    return _shaded_mesh(dr, ctx, device, res, v, f, [mvp(0.3, 0.5)])


def render_big_mesh(dr: Any, ctx: Any, device: torch.device, res: int) -> dict[str, torch.Tensor]:
    v, f = icosphere(8)  # 1,310,720 triangles
    return _shaded_mesh(dr, ctx, device, res, v, f, [mvp(0.2, 0.1, 2.6)])


def render_torus(dr: Any, ctx: Any, device: torch.device, res: int) -> dict[str, torch.Tensor]:
    v, f = torus()
    return _shaded_mesh(dr, ctx, device, res, v, f, [mvp(0.9, 0.3, 2.6), mvp(-0.4, 1.2, 2.6)])


def render_slivers(dr: Any, ctx: Any, device: torch.device, res: int) -> dict[str, torch.Tensor]:
    v, f = slivers()
    clip = to_clip(v, mvp(0.0, 0.0, 2.2))[None]
    col = _vertex_colors(v.shape[0], seed=7)
    pos_d, tri_d = _dev(clip, device), _dev(f, device)
    rast, _ = dr.rasterize(ctx, pos_d, tri_d, resolution=[res, res])
    img, _ = dr.interpolate(_dev(col, device), rast, tri_d)
    return {"image": img, "rast": rast}


def render_textured_cube(dr: Any, ctx: Any, device: torch.device, res: int) -> dict[str, torch.Tensor]:
    pos, tri, uv, _ = cube()
    clip = to_clip(pos, mvp(0.6, 0.7, 2.4))[None]
    pos_d, tri_d = _dev(clip, device), _dev(tri, device)
    rast, rast_db = dr.rasterize(ctx, pos_d, tri_d, resolution=[res, res])
    texc, texd = dr.interpolate(_dev(uv, device)[None], rast, tri_d, rast_db=rast_db, diff_attrs="all")
    tex = _dev(checker_texture(), device)
    img = dr.texture(tex, texc.contiguous(), texd.contiguous(), filter_mode="linear-mipmap-linear")
    img = img * (rast[..., 3:] > 0).float()
    img = dr.antialias(img.contiguous(), rast, pos_d, tri_d)
    return {"image": img, "rast": rast}


def render_range_multi(dr: Any, ctx: Any, device: torch.device, res: int) -> dict[str, torch.Tensor]:
    """Range mode: three objects in one position buffer, one image each."""
    parts = []
    cv, ct, _, _ = cube()
    tv, tt = torus(nu=24, nv=12)
    sv, sf = icosphere(2)
    for k, (v, f) in enumerate([(cv, ct), (tv, tt), (sv * 0.8, sf)]):
        parts.append((to_clip(v, mvp(0.4 + 0.3 * k, 0.5 * k, 2.5)), f))
    pos, tri, ranges, base_v = [], [], [], 0
    for clip, f in parts:
        ranges.append([sum(x.shape[0] for x in tri), f.shape[0]])
        pos.append(clip)
        tri.append(f + base_v)
        base_v += clip.shape[0]
    pos_all = torch.cat(pos)
    tri_all = torch.cat(tri).int()
    col = _vertex_colors(pos_all.shape[0], seed=3)
    pos_d, tri_d = _dev(pos_all, device), _dev(tri_all, device)
    rng = torch.tensor(ranges, dtype=torch.int32)  # ranges stay on the CPU by contract
    rast, _ = dr.rasterize(ctx, pos_d, tri_d, resolution=[res, res], ranges=rng)
    img, _ = dr.interpolate(_dev(col, device), rast, tri_d)
    img = dr.antialias(img.contiguous(), rast, pos_d, tri_d)
    return {"image": img, "rast": rast}


def render_depth_peel(dr: Any, ctx: Any, device: torch.device, res: int) -> dict[str, torch.Tensor]:
    """Five overlapping tilted quads; the first three depth layers side by side."""
    pos, tri = [], []
    for k in range(5):
        z = -0.6 + 0.3 * k
        ox = -0.3 + 0.15 * k
        b = len(pos)
        pos += [[ox - 0.6, -0.6, z - 0.2], [ox + 0.6, -0.6, z + 0.2], [ox + 0.6, 0.6, z + 0.1],
                [ox - 0.6, 0.6, z - 0.1]]
        tri += [[b, b + 1, b + 2], [b, b + 2, b + 3]]
    v = torch.tensor(pos)
    f = torch.tensor(tri, dtype=torch.int32)
    clip = to_clip(v, mvp(0.2, 0.3, 3.0))[None]
    col = _vertex_colors(v.shape[0], seed=5)
    pos_d, tri_d, col_d = _dev(clip, device), _dev(f, device), _dev(col, device)
    imgs, rasts = [], []
    with dr.DepthPeeler(ctx, pos_d, tri_d, [res, res]) as peeler:
        for _ in range(3):
            rast, _ = peeler.rasterize_next_layer()
            img, _ = dr.interpolate(col_d, rast, tri_d)
            imgs.append(img)
            rasts.append(rast)
    return {"image": torch.cat(imgs, dim=0), "rast": torch.cat(rasts, dim=0)}


def render_cubemap_env(dr: Any, ctx: Any, device: torch.device, res: int) -> dict[str, torch.Tensor]:
    """Mirror sphere reflecting a cube-map environment (cube texture, trilinear with 6-channel uv_da)."""
    v, f = icosphere(3)
    m_view = translate(0, 0, -3.0) @ rotate_x(0.3) @ rotate_y(0.4)
    clip = to_clip(v, perspective() @ m_view)[None]
    # Reflect the view direction about the normal, in world space (camera sits at the view origin).
    cam = torch.linalg.inv(m_view)[:3, 3]
    d = v - cam
    d = d / d.norm(dim=1, keepdim=True)
    refl = d - 2 * (d * v).sum(1, keepdim=True) * v
    pos_d, tri_d = _dev(clip, device), _dev(f, device)
    rast, rast_db = dr.rasterize(ctx, pos_d, tri_d, resolution=[res, res])
    r, r_da = dr.interpolate(_dev(refl, device)[None], rast, tri_d, rast_db=rast_db, diff_attrs="all")
    env = _dev(env_cube(), device)
    img = dr.texture(env, r.contiguous(), r_da.contiguous(), filter_mode="linear-mipmap-linear", boundary_mode="cube")
    img = img * (rast[..., 3:] > 0).float()
    img = dr.antialias(img.contiguous(), rast, pos_d, tri_d)
    return {"image": img, "rast": rast}


SCENES: list[Scene] = [
    Scene("triangle", "one triangle, vertex colors (red lower-left, green lower-right, blue upper-left)",
          render_triangle, 64),
    Scene("sphere", "icosphere (1280 tris), normal colors, antialiased", render_sphere, 96),
    Scene("textured_cube", "cube, 3×2 checker atlas, trilinear mipmaps with uv_da, antialiased",
          render_textured_cube, 96),
    Scene("torus", "torus, instanced batch of 2 poses, antialiased", render_torus, 96),
    Scene("slivers", "needle-thin triangles (coverage stress)", render_slivers, 96),
    Scene("range_multi", "range mode: cube, torus, sphere in one buffer, one image each", render_range_multi, 64),
    Scene("depth_peel", "DepthPeeler: first three layers of five overlapping quads", render_depth_peel, 64),
    Scene("cubemap_env", "mirror sphere reflecting a cube map (cube mode, trilinear)", render_cubemap_env, 96),
    Scene("big_mesh", "1.3M-triangle icosphere (GPU backends only)", render_big_mesh, 512, reference_ok=False,
          gpu_only=True),
]


def to_display(img: torch.Tensor) -> torch.Tensor:
    """[N,H,W,C] (row 0 bottom) → [H, N·W, 3] top-down strip in [0, 1], for pictures."""
    img = img.detach().float().cpu()
    if img.shape[-1] == 1:
        img = img.expand(*img.shape[:-1], 3)
    img = img[..., :3].clamp(0, 1).flip(1)
    return torch.cat(list(img), dim=1)
