"""Regenerate the golden outputs in ``tests/assets/golden/`` with the CPU reference backend.

    python tests/assets/make_golden.py

Each scene of ``meshes.SCENES`` is rendered at ``RES``: rasterize (instanced or range mode), then
interpolate of the per-vertex colours with derivatives, then antialias; the depth-complex scene also
stores its first depth-peeling layers. Stored compactly: triangle ids as int32, z/w as float32 (depth
tolerances are tight), barycentrics, derivatives and colours as float16 (their cross-backend
tolerances are far above float16 rounding). ``test_golden.py`` compares every backend with these.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import meshes  # noqa: E402

RES = (48, 48)
PEEL_LAYERS = 4
GOLDEN_DIR = HERE / "golden"


def render(name: str, ctx, device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Render one scene with the given context; returns the arrays stored in the golden file."""
    import nvdiffrast.torch as dr
    from nvdiffrast.torch._ids import decode_triangle_ids

    s = meshes.scene(name)
    pos = torch.from_numpy(s["pos"]).to(device)
    tri = torch.from_numpy(s["tri"]).to(device)
    ranges = None if s["ranges"] is None else torch.from_numpy(s["ranges"])
    rast, db = dr.rasterize(ctx, pos, tri, RES, ranges=ranges)
    color, color_da = dr.interpolate(torch.from_numpy(s["colors"]).to(device), rast, tri, rast_db=db, diff_attrs=[0])
    aa = dr.antialias(color, rast, pos, tri)
    out = {
        "ids": decode_triangle_ids(rast.cpu()[..., 3]).to(torch.int32).numpy(),
        "uv": rast.cpu()[..., :2].numpy(),
        "z": rast.cpu()[..., 2].numpy(),
        "db": db.cpu().numpy(),
        "color": color.cpu().numpy(),
        "color_da": color_da.cpu().numpy(),
        "aa": aa.cpu().numpy(),
    }
    if name == "depth_complex":
        ids, zs = [], []
        with dr.DepthPeeler(ctx, pos, tri, RES) as peeler:
            for _ in range(PEEL_LAYERS):
                r, _ = peeler.rasterize_next_layer()
                ids.append(decode_triangle_ids(r.cpu()[..., 3]).to(torch.int32).numpy())
                zs.append(r.cpu()[..., 2].numpy())
        out["peel_ids"] = np.stack(ids)
        out["peel_z"] = np.stack(zs)
    return out


def _compact(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keep = ("z", "peel_z")
    return {k: (v if v.dtype == np.int32 or k in keep else v.astype(np.float16)) for k, v in arrays.items()}


def main() -> int:
    import nvdiffrast.torch as dr

    GOLDEN_DIR.mkdir(exist_ok=True)
    ctx = dr.RasterizeCudaContext(device="cpu")
    total = 0
    for name in meshes.SCENES:
        path = GOLDEN_DIR / f"{name}.npz"
        np.savez_compressed(path, **_compact(render(name, ctx)))
        total += path.stat().st_size
        print(f"{path.relative_to(HERE.parents[1])}: {path.stat().st_size / 1024:.1f} KiB")
    print(f"total {total / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
