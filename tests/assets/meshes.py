"""Procedural test meshes and scenes (our own; no external data).

Every function returns NumPy arrays: object-space vertices ``[V, 3]`` float64 and triangles
``[T, 3]`` int32 with consistent outward (counter-clockwise seen from outside) winding and shared
vertex indices, so the closed meshes are watertight for the rasterizer and the antialias topology.
``scene(name)`` builds the clip-space scenes used by the conformance tests and golden files.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


# ------------------------------------------------------------------------------------------- meshes
def sphere(n_lat: int = 10, n_lon: int = 16, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """UV sphere with single pole vertices (closed, 2·n_lon·(n_lat−1) triangles)."""
    verts = [(0.0, 0.0, radius)]
    for i in range(1, n_lat):
        th = math.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * math.pi * j / n_lon
            verts.append((radius * math.sin(th) * math.cos(ph), radius * math.sin(th) * math.sin(ph),
                          radius * math.cos(th)))
    verts.append((0.0, 0.0, -radius))
    south = len(verts) - 1

    def ring(i: int, j: int) -> int:
        return 1 + (i - 1) * n_lon + (j % n_lon)

    tris = []
    for j in range(n_lon):
        tris.append((0, ring(1, j), ring(1, j + 1)))
        tris.append((south, ring(n_lat - 1, j + 1), ring(n_lat - 1, j)))
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            tris.append((a, c, d))
            tris.append((a, d, b))
    return np.array(verts, dtype=np.float64), np.array(tris, dtype=np.int32)


def cube(size: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned cube centred at the origin: 8 shared vertices, 12 triangles."""
    h = size / 2
    v = np.array([[x, y, z] for x in (-h, h) for y in (-h, h) for z in (-h, h)], dtype=np.float64)
    # vertex index = 4*ix + 2*iy + iz
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tris = []
    for a, b, c, d in quads:
        tris += [(a, b, c), (a, c, d)]
    return v, np.array(tris, dtype=np.int32)


def torus(
    major: float = 0.7, minor: float = 0.28, n_major: int = 16, n_minor: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Closed torus around the z axis."""
    verts = []
    for i in range(n_major):
        u = 2 * math.pi * i / n_major
        for j in range(n_minor):
            w = 2 * math.pi * j / n_minor
            r = major + minor * math.cos(w)
            verts.append((r * math.cos(u), r * math.sin(u), minor * math.sin(w)))
    tris = []
    for i in range(n_major):
        for j in range(n_minor):
            a = i * n_minor + j
            b = ((i + 1) % n_major) * n_minor + j
            c = ((i + 1) % n_major) * n_minor + (j + 1) % n_minor
            d = i * n_minor + (j + 1) % n_minor
            tris += [(a, b, c), (a, c, d)]
    return np.array(verts, dtype=np.float64), np.array(tris, dtype=np.int32)


def slivers(count: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A fan of very thin triangles around a common centre (covers a disc) plus isolated needles."""
    verts = [(0.0, 0.0, 0.0)]
    for j in range(count):
        a = 2 * math.pi * j / count
        verts.append((0.9 * math.cos(a), 0.9 * math.sin(a), 0.0))
    tris = [(0, 1 + j, 1 + (j + 1) % count) for j in range(count)]
    base = len(verts)
    for k in range(4):  # needles: a few pixels long, far below a pixel wide
        y = -0.95 + 0.02 * k
        verts += [(-0.95, y, 0.1), (0.95, y + 0.004, 0.1), (0.95, y + 0.0045, 0.1)]
        tris.append((base + 3 * k, base + 3 * k + 1, base + 3 * k + 2))
    return np.array(verts, dtype=np.float64), np.array(tris, dtype=np.int32)


def grid_plane(n: int = 8, extent: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Flat n×n quad grid in the xz plane (y = 0), spanning [−extent, extent]²."""
    xs = np.linspace(-extent, extent, n + 1)
    verts = [(x, 0.0, z) for z in xs for x in xs]
    tris = []
    for i in range(n):
        for j in range(n):
            a = i * (n + 1) + j
            b, c, d = a + 1, a + n + 2, a + n + 1
            tris += [(a, d, c), (a, c, b)]
    return np.array(verts, dtype=np.float64), np.array(tris, dtype=np.int32)


# ------------------------------------------------------------------------------------------- camera
def perspective(fovy_deg: float = 45.0, aspect: float = 1.0, near: float = 0.1, far: float = 10.0) -> np.ndarray:
    """OpenGL-style projection: view space looks down −z, NDC z/w grows away from the viewer."""
    f = 1.0 / math.tan(math.radians(fovy_deg) / 2)
    return np.array([
        [f / aspect, 0, 0, 0],
        [0, f, 0, 0],
        [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
        [0, 0, -1, 0],
    ], dtype=np.float64)


def translate(x: float, y: float, z: float) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = (x, y, z)
    return m


def rotate(ax: float, ay: float) -> np.ndarray:
    """Rotation about x by ax, then about y by ay (radians)."""
    cx, sx, cy, sy = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay)
    rx = np.array([[1, 0, 0, 0], [0, cx, -sx, 0], [0, sx, cx, 0], [0, 0, 0, 1]])
    ry = np.array([[cy, 0, sy, 0], [0, 1, 0, 0], [-sy, 0, cy, 0], [0, 0, 0, 1]])
    return ry @ rx


def to_clip(verts: np.ndarray, mvp: np.ndarray) -> np.ndarray:
    """[V, 3] object space → [V, 4] float32 clip space."""
    h = np.concatenate([verts, np.ones((verts.shape[0], 1))], axis=1)
    return (h @ mvp.T).astype(np.float32)


def vertex_colors(verts: np.ndarray) -> np.ndarray:
    """A smooth per-vertex RGB colour from the object-space position (for interpolate/antialias)."""
    c = 0.5 + 0.5 * np.tanh(verts)
    return c.astype(np.float32)


# ------------------------------------------------------------------------------------------- scenes
def _camera(dist: float, ax: float, ay: float, near: float = 0.1, far: float = 10.0) -> np.ndarray:
    return perspective(45.0, 1.0, near, far) @ translate(0, 0, -dist) @ rotate(ax, ay)


def scene(name: str) -> dict[str, Any]:
    """A named clip-space scene: dict with pos ([N,V,4] or [V,4]), tri, ranges (or None), colors.

    Names: sphere, cube, torus, slivers (instanced, batch 2 with two poses); range_multi (three
    objects in range mode, one image each plus one image of all); depth_complex (three nested
    spheres: six depth layers at the centre); clipped (a ground grid passing under and behind the
    camera, cut by the near plane and by w = 0).
    """
    if name in ("sphere", "cube", "torus", "slivers"):
        v, t = {"sphere": sphere, "cube": cube, "torus": torus, "slivers": slivers}[name]()
        poses = [_camera(3.0, 0.4, 0.3), _camera(2.5, -0.7, 1.9)]
        if name == "slivers":
            poses = [_camera(2.2, 0.0, 0.0), _camera(2.4, 0.3, 0.5)]
        pos = np.stack([to_clip(v, m) for m in poses])
        return {"pos": pos, "tri": t, "ranges": None, "colors": vertex_colors(v)}
    if name == "range_multi":
        parts = [
            (sphere(8, 12, 0.5)[0] + (-0.6, 0.3, 0.0), sphere(8, 12)[1]),
            (cube(0.7)[0] + (0.6, 0.2, 0.3), cube()[1]),
            (torus(0.45, 0.15, 12, 6)[0] + (0.0, -0.6, -0.2), torus(0.45, 0.15, 12, 6)[1]),
        ]
        verts, tris, ranges, off = [], [], [], 0
        for v, t in parts:
            ranges.append((sum(len(x) for x in tris), len(t)))
            verts.append(v)
            tris.append(t + off)
            off += len(v)
        v = np.concatenate(verts)
        t = np.concatenate(tris).astype(np.int32)
        ranges.append((0, len(t)))
        return {"pos": to_clip(v, _camera(3.2, 0.3, 0.4)), "tri": t,
                "ranges": np.array(ranges, dtype=np.int32), "colors": vertex_colors(v)}
    if name == "depth_complex":
        vs, ts, off = [], [], 0
        for r, n_lat, n_lon in ((1.0, 10, 16), (0.7, 8, 14), (0.4, 7, 12)):
            v, t = sphere(n_lat, n_lon, r)
            vs.append(v)
            ts.append(t + off)
            off += len(v)
        v = np.concatenate(vs)
        return {"pos": to_clip(v, _camera(3.0, 0.2, 0.1))[None], "tri": np.concatenate(ts).astype(np.int32),
                "ranges": None, "colors": vertex_colors(v)}
    if name == "clipped":
        v, t = grid_plane(8, 4.0)
        m = perspective(60.0, 1.0, 0.5, 6.0) @ translate(0.0, -0.6, 0.0) @ rotate(0.15, 0.2)
        return {"pos": to_clip(v, m)[None], "tri": t, "ranges": None, "colors": vertex_colors(v)}
    raise KeyError(f"unknown scene {name!r}")


SCENES = ("sphere", "cube", "torus", "slivers", "range_multi", "depth_complex", "clipped")
