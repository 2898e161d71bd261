"""Helpers for the conformance suite: reference renders and cross-backend comparisons.

The tolerances are explained in ``tests/conformance/README.md``; keep the two in sync.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

# Cross-backend tolerances (backend under test vs the float64-internal reference backend).
ID_MISMATCH_FRACTION = 0.03  # pixels whose triangle id differs (1/16-pixel vertex snapping on CUDA/GL)
BARY_ABS = 2e-3  # |Δu|, |Δv| on pixels with equal ids, 99.9th percentile
BARY_ABS_MAX = 2e-2  # … and maximum
DEPTH_ABS = 1e-4  # |Δ z/w|
DB_REL = 2e-2  # rast_db: |Δ| ≤ DB_REL·|ref| + DB_ABS
DB_ABS = 2e-3
ATTR_REL = 1e-3  # interpolate / antialias values on pixels with equal ids: |Δ| ≤ ATTR_REL·scale


def cpu(x: Any) -> Any:
    return x.detach().cpu() if isinstance(x, torch.Tensor) else x


def reference_rasterize(pos: torch.Tensor, tri: torch.Tensor, resolution, ranges: Optional[torch.Tensor] = None):
    import nvdiffrast.torch as dr

    ctx = dr.RasterizeCudaContext(device="cpu")
    return dr.rasterize(ctx, cpu(pos).contiguous(), cpu(tri).contiguous(), resolution, ranges=ranges)


def ids_of(rast: torch.Tensor) -> torch.Tensor:
    from nvdiffrast.torch._ids import decode_triangle_ids

    return decode_triangle_ids(cpu(rast)[..., 3])


def compare_rast(got_rast, got_db, ref_rast, ref_db, exact: bool = False, label: str = "") -> None:
    """Assert that a backend's rasterization agrees with the reference within the tolerances."""
    got_rast, ref_rast = cpu(got_rast).double(), cpu(ref_rast).double()
    gi, ri = ids_of(got_rast), ids_of(ref_rast)
    mismatch = (gi != ri).double().mean().item()
    if exact:
        assert mismatch == 0.0, f"{label}: {mismatch:.4%} of pixels have a different triangle id"
    else:
        assert mismatch <= ID_MISMATCH_FRACTION, f"{label}: {mismatch:.4%} of pixels have a different triangle id"
    same = (gi == ri) & (ri > 0)
    if same.sum() == 0:
        return
    d_uv = (got_rast[..., :2] - ref_rast[..., :2]).abs()[same]
    d_z = (got_rast[..., 2] - ref_rast[..., 2]).abs()[same]
    tol = 1e-6 if exact else BARY_ABS
    assert torch.quantile(d_uv.flatten(), 0.999) <= tol, f"{label}: barycentrics differ: {d_uv.max():.3g}"
    assert d_uv.max() <= (1e-6 if exact else BARY_ABS_MAX), f"{label}: barycentrics differ: {d_uv.max():.3g}"
    assert d_z.max() <= (1e-6 if exact else DEPTH_ABS), f"{label}: depth differs by {d_z.max():.3g}"
    if got_db is not None and ref_db is not None and cpu(got_db).shape[-1] == 4:
        g, r = cpu(got_db).double()[same], cpu(ref_db).double()[same]
        bad = (g - r).abs() > (DB_REL * r.abs() + (1e-6 if exact else DB_ABS))
        assert bad.double().mean() <= (0.0 if exact else 0.001), f"{label}: rast_db differs at {int(bad.sum())} values"


def pixel_centers(H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """NDC (X, Y) of every pixel centre, arrays [H, W] (row 0 at the bottom)."""
    X = (2 * np.arange(W) + 1) / W - 1
    Y = (2 * np.arange(H) + 1) / H - 1
    return np.meshgrid(X, Y)


def raycast_triangle(clip: np.ndarray, H: int, W: int) -> dict[str, np.ndarray]:
    """Independent oracle for one triangle given by clip-space vertices [3, 4] (float64).

    Solves, per pixel centre, for the point of the triangle's plane seen through the pixel
    (Σ bᵢ(xᵢ − X wᵢ) = 0, Σ bᵢ(yᵢ − Y wᵢ) = 0, Σ bᵢ = 1) with a dense linear solve — a different
    computation from the rasterizer's edge functions. Returns the hit mask (inside, w > 0,
    −1 ≤ z/w ≤ 1), barycentrics, z/w, and ``margin``: the smallest of the barycentrics and of the
    near/far slack, for skipping pixels too close to a boundary to compare.
    """
    X, Y = pixel_centers(H, W)
    x, y, z, w = clip[:, 0], clip[:, 1], clip[:, 2], clip[:, 3]
    M = np.zeros((H, W, 3, 3))
    M[..., 0, :] = x[None, None, :] - X[..., None] * w[None, None, :]
    M[..., 1, :] = y[None, None, :] - Y[..., None] * w[None, None, :]
    M[..., 2, :] = 1.0
    rhs = np.zeros((H, W, 3))
    rhs[..., 2] = 1.0
    b = np.linalg.solve(M, rhs[..., None])[..., 0]
    pw = (b * w).sum(-1)
    pz = (b * z).sum(-1)
    d = pz / pw
    hit = (b >= 0).all(-1) & (pw > 0) & (d >= -1) & (d <= 1)
    margin = np.minimum(b.min(-1), np.minimum(1 - np.abs(d), pw / np.abs(w).max()))
    return {"hit": hit, "b": b, "depth": d, "margin": np.abs(margin)}
