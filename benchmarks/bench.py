"""Times our nvdiffrast on the shared workloads and compares with upstream on the same card.

Usage (on a GPU machine, with this checkout built in place or installed)::

    python benchmarks/bench.py [--ctx cuda|gl] [--out DIR] [--quick] [--iters N] [--ops rasterize_fwd,...]
                               [--workloads small_5k_512_b1,...]

Workloads, scenes and timing come from ``bench_api.py`` (a copy of ``../shared/bench/bench_api.py``).
Each (workload, op) line prints our median time, upstream nvdiffrast 0.4.0's median on the same
card model (with ``--ctx gl``: upstream 0.3.5's OpenGL rasterizer; the other ops then run on our CUDA
backend as upstream's did) (``upstream-h100.json`` / ``upstream-h200.json``, picked by the GPU's name), and the
ratio ours ÷ upstream (below 1 = faster). An op that raises is reported as an error and the rest
still run, so a partly finished backend can be measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, Callable, Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.append(os.path.dirname(HERE))  # an installed nvdiffrast wins; else this checkout (built in place)
import bench_api  # noqa: E402

OPS = ["rasterize_fwd", "rasterize_fwd_bwd", "interpolate_fwd_bwd", "texture_mip_fwd_bwd", "antialias_fwd_bwd"]
# Also selectable with --ops: the CUDA backend's rasterize_fwd without the public API layer on top.
EXTRA_OPS = ["rasterize_fwd_native"]


UPSTREAM_KEY = {"cuda": "cuda_0.4.0", "gl": "gl_0.3.5"}


def upstream_table(gpu_name: str, ctx: str = "cuda") -> tuple[Optional[str], dict[str, float]]:
    """Upstream figures for the card model in ``gpu_name`` (H100 or H200), else empty: the 0.4.0 CUDA
    rasterizer for ``ctx='cuda'``, the 0.3.5 OpenGL rasterizer for ``ctx='gl'``."""
    for tag in ("H200", "H100"):
        if tag in gpu_name.upper():
            path = os.path.join(HERE, f"upstream-{tag.lower()}.json")
            with open(path) as fh:
                return os.path.basename(path), json.load(fh)[UPSTREAM_KEY[ctx]]
    return None, {}


def make_ops(dr: Any, ctx: Any, sd: int, batch: int, res: int) -> dict[str, Callable[[], Any]]:
    """The five measured closures of bench_api.bench for one workload (same scenes and losses)."""
    pos, tri, uv, attr = bench_api.make_scene(sd, batch)
    tex = torch.rand(1, 1024, 1024, 3, device="cuda")
    resolution = [res, res]
    posg = pos.clone().requires_grad_(True)
    attrg = attr.clone().requires_grad_(True)
    texg = tex.clone().requires_grad_(True)
    posg2 = pos.clone().requires_grad_(True)
    state: dict[str, Any] = {}

    def prep() -> dict[str, Any]:
        if not state:
            rast, db = dr.rasterize(ctx, pos, tri, resolution=resolution)
            state["rast"], state["db"] = rast, db
            texc, uvda = dr.interpolate(uv, rast, tri, rast_db=db, diff_attrs="all")
            state["texc"], state["uvda"] = texc, uvda
            col = dr.interpolate(attr[:, :3].contiguous(), rast, tri)[0]
            state["colg"] = col.clone().requires_grad_(True)
        return state

    def r_fwd() -> Any:
        return dr.rasterize(ctx, pos, tri, resolution=resolution)

    def r_native() -> Any:
        from nvdiffrast.torch import _cuda_backend

        return _cuda_backend.rasterize_fwd(pos, tri, (res, res), None, None)

    def r_fb() -> None:
        rast, db = dr.rasterize(ctx, posg, tri, resolution=resolution)
        (rast[..., :2].sum() + db.sum()).backward()

    def i_fb() -> None:
        s = prep()
        o, da = dr.interpolate(attrg, s["rast"], tri, rast_db=s["db"], diff_attrs="all")
        (o.sum() + da.sum()).backward()

    def t_fb() -> None:
        s = prep()
        o = dr.texture(texg.expand(batch, -1, -1, -1).contiguous(), s["texc"], s["uvda"],
                       filter_mode="linear-mipmap-linear")
        o.sum().backward()

    def a_fb() -> None:
        s = prep()
        o = dr.antialias(s["colg"], s["rast"], posg2, tri)
        o.sum().backward()

    return {"rasterize_fwd": r_fwd, "rasterize_fwd_bwd": r_fb, "interpolate_fwd_bwd": i_fb,
            "texture_mip_fwd_bwd": t_fb, "antialias_fwd_bwd": a_fb, "rasterize_fwd_native": r_native}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ctx", choices=("cuda", "gl"), default="cuda",
                    help="rasterizer context; gl compares with upstream 0.3.5's OpenGL figures")
    ap.add_argument("--out", default=".", help="directory for bench_ours_<ctx>.json")
    ap.add_argument("--quick", action="store_true", help="first two workloads, 5 iterations")
    ap.add_argument("--iters", type=int, default=0, help="timed iterations (default 20, 5 with --quick)")
    ap.add_argument("--ops", default="", help="comma-separated subset of: " + ", ".join(OPS + EXTRA_OPS))
    ap.add_argument("--workloads", default="", help="comma-separated subset of workload names")
    a = ap.parse_args()

    import nvdiffrast.torch as dr

    ctx = dr.RasterizeCudaContext() if a.ctx == "cuda" else dr.RasterizeGLContext()
    gpu = torch.cuda.get_device_name()
    src, upstream = upstream_table(gpu, a.ctx)
    ops = [o for o in a.ops.split(",") if o] or OPS
    unknown = set(ops) - set(OPS) - set(EXTRA_OPS)
    if unknown:
        ap.error(f"--ops: unknown {sorted(unknown)}; expected names from {OPS + EXTRA_OPS}")
    workloads = bench_api.WORKLOADS[:2] if a.quick else bench_api.WORKLOADS
    if a.workloads:
        wanted = set(a.workloads.split(","))
        workloads = [w for w in bench_api.WORKLOADS if w[0] in wanted]
    iters = a.iters or (5 if a.quick else 20)

    label = "0.4.0 (CUDA)" if a.ctx == "cuda" else "0.3.5 (OpenGL)"
    print(f"# ours ({a.ctx}) vs upstream nvdiffrast {label} — gpu={gpu} torch={torch.__version__} "
          f"upstream={src or 'n/a (no figures for this card)'}")
    print(f"{'workload':22s} {'op':22s} {'ours ms':>9s} {'upstream':>9s} {'ratio':>7s}")
    rows = []
    for name, sd, batch, res in workloads:
        fns = make_ops(dr, ctx, sd, batch, res)
        for op in ops:
            up = upstream.get(f"{name}/{op}")
            try:
                ms: Optional[float] = bench_api.timeit(fns[op], iters)
                err = None
            except Exception as exc:  # noqa: BLE001 - report and go on with the other ops
                ms, err = None, f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
                traceback.print_exc(limit=3, file=sys.stderr)
            ratio = ms / up if (ms is not None and up) else None
            rows.append({"workload": name, "op": op, "ms": ms, "upstream_ms": up, "ratio": ratio, "error": err})
            ours_s = f"{ms:9.3f}" if ms is not None else f"{'ERROR':>9s}"
            up_s = f"{up:9.3f}" if up else f"{'-':>9s}"
            ratio_s = f"{ratio:6.2f}x" if ratio is not None else f"{'-':>7s}"
            print(f"{name:22s} {op:22s} {ours_s} {up_s} {ratio_s}" + (f"  {err}" if err else ""), flush=True)
        del fns
        torch.cuda.empty_cache()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"bench_ours_{a.ctx}.json"), "w") as fh:
        json.dump({"gpu": gpu, "torch": torch.__version__, "ctx": a.ctx, "upstream_file": src, "results": rows},
                  fh, indent=1)
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
