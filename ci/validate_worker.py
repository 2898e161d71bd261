"""The part of ``ci validate`` that runs *inside* the fresh venv holding the wheel under test.

It imports nothing from the repository except its two sibling files (``scenes.py``, ``report.py``), which
``ci validate`` copies next to it; ``nvdiffrast`` must come from the installed wheel. It writes
``results.json`` and PNG pictures into ``--out``; the caller turns them into ``validation.json`` and
``report.html``. Every check is recorded with a status: passed, failed, pending (needs a GPU that is not
here) or skipped (with the reason).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import report  # sibling copy: PNG writer
import scenes  # sibling copy: meshes and scenes
import torch

PUBLIC_NAMES = ["RasterizeCudaContext", "RasterizeGLContext", "rasterize", "DepthPeeler", "interpolate", "texture",
                "texture_construct_mip", "antialias", "antialias_construct_topology_hash", "get_log_level",
                "set_log_level"]
COMPILERS = ["nvcc", "gcc", "g++", "cc", "c++", "clang", "clang++", "cl", "x86_64-linux-gnu-gcc",
             "x86_64-linux-gnu-g++"]

# Conformance tolerances for whole-image comparisons across backends (edge ownership, depth quantization
# and float atomics are implementation-defined, so a few silhouette pixels may differ).
TOL_COVERAGE = 0.01  # fraction of pixels whose covered/empty state differs
TOL_BAD_PIXELS = 0.02  # fraction of pixels with a channel differing by more than TOL_PIXEL
TOL_PIXEL = 0.1
TOL_MAE = 0.01  # mean absolute difference
TOL_GRAD_LINEAR = 1e-3  # relative error, ops linear in the checked input
TOL_GRAD = 3e-2  # relative error, piecewise-smooth inputs
TOL_GRAD_AA = 0.1  # relative error, antialias position gradients


class Recorder:
    """Collects checks, pictures and timings; prints one line per check as it goes."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.checks: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self.timings: list[dict[str, Any]] = []

    def add(self, name: str, status: str, backend: str | None = None, detail: str = "",
            metrics: dict[str, Any] | None = None, category: str = "", duration: float | None = None) -> None:
        self.checks.append({"name": name, "category": category, "backend": backend, "status": status,
                            "detail": detail, "metrics": metrics or {}, "duration_s": duration})
        tag = f"[{backend}] " if backend else ""
        print(f"  {status:>8}  {tag}{name}  {detail}", flush=True)

    def guarded(self, name: str, backend: str | None, category: str,
                fn: Callable[[], tuple[str, str, dict[str, Any]]]) -> None:
        """Run ``fn`` → (status, detail, metrics); an exception is a failed check with its message."""
        t0 = time.perf_counter()
        try:
            status, detail, metrics = fn()
        except Exception as exc:  # noqa: BLE001 - any error is the check's result
            status, detail, metrics = "failed", f"{type(exc).__name__}: {exc}", {}
            traceback.print_exc(limit=4)
        self.add(name, status, backend, detail, metrics, category, time.perf_counter() - t0)


@dataclass
class Backend:
    name: str
    device: torch.device
    make_ctx: Callable[[], Any]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# ------------------------------------------------------------------------------------------ pictures
def save_png(path: Path, img: torch.Tensor) -> None:
    """[H, W, 3] float in [0, 1], top-down → PNG."""
    u8 = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).contiguous()
    h, w = u8.shape[:2]
    try:
        raw = u8.numpy().tobytes()
    except Exception:  # noqa: BLE001 - torch without numpy
        raw = bytes(u8.flatten().tolist())
    path.write_bytes(report.png_bytes(w, h, raw))


def heat(diff: torch.Tensor, scale: float) -> torch.Tensor:
    """[H, W] non-negative → [H, W, 3] black→red→yellow→white heat map, ``scale`` maps to white."""
    x = (diff / max(scale, 1e-12)).clamp(0, 1)
    r = (x * 3).clamp(0, 1)
    g = (x * 3 - 1).clamp(0, 1)
    b = (x * 3 - 2).clamp(0, 1)
    return torch.stack([r, g, b], -1)


# ------------------------------------------------------------------------------------------ comparisons
def compare(art: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, Any]:
    a, r = art["image"].float(), ref["image"].float()
    if a.shape != r.shape:
        return {"shape_mismatch": f"{tuple(a.shape)} vs {tuple(r.shape)}"}
    d = (a - r).abs().amax(-1)
    cov = ((art["rast"][..., 3] > 0) != (ref["rast"][..., 3] > 0)).float().mean().item()
    return {
        "coverage_mismatch": cov,
        "bad_pixels": (d > TOL_PIXEL).float().mean().item(),
        "mae": (a - r).abs().mean().item(),
        "max_abs": d.max().item(),
        "finite": bool(torch.isfinite(a).all().item()),
    }


def verdict(m: dict[str, Any]) -> tuple[str, str]:
    if "shape_mismatch" in m:
        return "failed", f"shape mismatch {m['shape_mismatch']}"
    problems = []
    if not m["finite"]:
        problems.append("non-finite values")
    if m["coverage_mismatch"] > TOL_COVERAGE:
        problems.append(f"coverage differs on {m['coverage_mismatch']:.2%} of pixels (> {TOL_COVERAGE:.0%})")
    if m["bad_pixels"] > TOL_BAD_PIXELS:
        problems.append(f"{m['bad_pixels']:.2%} pixels differ by > {TOL_PIXEL} (> {TOL_BAD_PIXELS:.0%})")
    if m["mae"] > TOL_MAE:
        problems.append(f"mean abs diff {m['mae']:.4f} > {TOL_MAE}")
    if problems:
        return "failed", "; ".join(problems)
    return "passed", f"within tolerances (mae {m['mae']:.2e}, coverage diff {m['coverage_mismatch']:.2%})"


def holes(rast: torch.Tensor) -> int:
    """Empty pixels whose four neighbours are all covered: cracks in a closed mesh."""
    cov = rast[..., 3] > 0
    inner = cov[:, 1:-1, 1:-1]
    nb = cov[:, :-2, 1:-1] & cov[:, 2:, 1:-1] & cov[:, 1:-1, :-2] & cov[:, 1:-1, 2:]
    return int((nb & ~inner).sum().item())


def sanity(scene: str, out: dict[str, torch.Tensor]) -> tuple[str, str, dict[str, Any]]:
    """Scene-specific invariants that hold on every backend."""
    img, rast = out["image"].float().cpu(), out["rast"].cpu()
    if not torch.isfinite(img).all():
        return "failed", "non-finite pixels", {}
    cov = (rast[..., 3] > 0).float().mean().item()
    if scene == "triangle":
        h = img.shape[1]
        q = max(2, h // 8)
        ll, lr, ul = img[0, q, q], img[0, q, h - 4 * q], img[0, h - 4 * q, q]  # row 0 = bottom
        ok = ll.argmax().item() == 0 and lr.argmax().item() == 1 and ul.argmax().item() == 2
        ok = ok and img[0, -1, -1].abs().sum().item() == 0
        return ("passed" if ok else "failed",
                "red lower-left, green lower-right, blue upper-left, empty upper-right" if ok else
                f"corner colors wrong: ll={ll.tolist()} lr={lr.tolist()} ul={ul.tolist()}",
                {"coverage": cov})
    if scene in ("sphere", "big_mesh", "cubemap_env"):
        n = holes(rast)
        return ("passed" if n == 0 and cov > 0.05 else "failed",
                f"closed mesh: {n} crack pixels, coverage {cov:.1%}", {"holes": n, "coverage": cov})
    if scene == "depth_peel":
        covs = [(rast[i, ..., 3] > 0) for i in range(rast.shape[0])]
        nested = all(bool((covs[i + 1] & ~covs[i]).sum() == 0) for i in range(len(covs) - 1))
        distinct = all(bool(((rast[i + 1, ..., 3] == rast[i, ..., 3]) & covs[i + 1]).sum() == 0)
                       for i in range(len(covs) - 1))
        ok = nested and distinct and covs[1].any()
        return ("passed" if ok else "failed",
                f"layers nested={nested}, a triangle never repeats at a pixel={distinct}",
                {"coverage_layers": [c.float().mean().item() for c in covs]})
    return ("passed" if cov > 0.01 else "failed", f"coverage {cov:.1%}", {"coverage": cov})


# ------------------------------------------------------------------------------------------ gradients
def directional_check(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor,
                      eps: float, weight: torch.Tensor | None = None) -> dict[str, Any]:
    """Autograd vs central finite difference of L = Σ w·f(x) along direction v (loss in float64)."""
    x0 = x.detach().clone().requires_grad_(True)
    y = f(x0)
    w = weight if weight is not None else torch.randn(y.shape, generator=torch.Generator().manual_seed(11))
    w = w.to(y.device, torch.float64)
    loss = (y.double() * w).sum()
    (g,) = torch.autograd.grad(loss, x0)
    an = (g.double() * v.double()).sum().item()
    with torch.no_grad():
        lp = (f((x + eps * v).contiguous()).double() * w).sum().item()
        lm = (f((x - eps * v).contiguous()).double() * w).sum().item()
    fd = (lp - lm) / (2 * eps)
    err = abs(fd - an) / max(abs(fd), abs(an), 1e-8)
    return {"analytic": an, "finite_diff": fd, "rel_err": err}


def grad_checks(rec: Recorder, be: Backend, dr: Any) -> None:
    dev = be.device
    g = torch.Generator().manual_seed(5)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    # A small two-triangle scene with perspective (w ≠ 1) so barycentrics are perspective-correct.
    pos = torch.tensor([[[-0.7, -0.6, 0.1, 1.0], [0.8, -0.7, 0.2, 1.3], [-0.5, 0.8, 0.3, 1.1],
                         [0.9, 0.75, 0.4, 1.4]]])
    tri = torch.tensor([[0, 1, 2], [2, 1, 3]], dtype=torch.int32)
    attr = rnd(1, 4, 3)
    res = [32, 32]
    pos_d, tri_d = pos.to(dev).contiguous(), tri.to(dev).contiguous()
    ctx = be.make_ctx()
    rast, rast_db = dr.rasterize(ctx, pos_d, tri_d, resolution=res)

    def judge(name: str, m: dict[str, Any], tol: float) -> tuple[str, str, dict[str, Any]]:
        ok = m["rel_err"] <= tol and abs(m["analytic"]) > 1e-6
        return ("passed" if ok else "failed",
                f"autograd {m['analytic']:.6g} vs finite difference {m['finite_diff']:.6g} "
                f"(rel err {m['rel_err']:.2e}, tol {tol:g})", m)

    only_raster = be.name == "gl"  # gl differs from cuda only in rasterization
    if not only_raster:
        rec.guarded("grad: interpolate wrt attr", be.name, "gradients", lambda: judge(
            "attr", directional_check(lambda a: dr.interpolate(a, rast, tri_d)[0], attr.to(dev),
                                      rnd(1, 4, 3).to(dev) - 0.5, 1.0), TOL_GRAD_LINEAR))

    # Position gradient through rasterize → interpolate, on interior pixels only (coverage is not smooth).
    cov = (rast[..., 3] > 0).float().cpu()
    interior = cov[:, 1:-1, 1:-1] * cov[:, :-2, 1:-1] * cov[:, 2:, 1:-1] * cov[:, 1:-1, :-2] * cov[:, 1:-1, 2:]
    mask = torch.zeros_like(cov)
    mask[:, 1:-1, 1:-1] = interior
    wpos = torch.randn(1, 32, 32, 3, generator=torch.Generator().manual_seed(3)) * mask[..., None]
    vpos = torch.zeros(1, 4, 4)
    vpos[..., :2] = rnd(1, 4, 2) - 0.5
    vpos[..., 3] = (rnd(1, 4) - 0.5) * 0.2
    attr_d = attr.to(dev)

    def through_raster(p: torch.Tensor) -> torch.Tensor:
        r, _ = dr.rasterize(ctx, p, tri_d, resolution=res)
        return dr.interpolate(attr_d, r, tri_d)[0]

    rec.guarded("grad: rasterize+interpolate wrt pos", be.name, "gradients", lambda: judge(
        "pos", directional_check(through_raster, pos_d, vpos.to(dev), 1e-3, wpos), TOL_GRAD))

    # Antialias: color (linear) and position (silhouette edges), rast held fixed.
    col = dr.interpolate(attr_d, rast, tri_d)[0].detach().contiguous()
    if not only_raster:
        rec.guarded("grad: antialias wrt color", be.name, "gradients", lambda: judge(
            "color", directional_check(lambda c: dr.antialias(c, rast, pos_d, tri_d), col,
                                       (rnd(*col.shape) - 0.5).to(dev), 1.0), TOL_GRAD_LINEAR))
    vaa = torch.zeros(1, 4, 4)
    vaa[..., :2] = rnd(1, 4, 2) - 0.5
    # Silhouette gradients are an estimate by design (slope epsilon, clamped crossing distance): looser bound.
    rec.guarded("grad: antialias wrt pos", be.name, "gradients", lambda: judge(
        "aapos", directional_check(lambda p: dr.antialias(col, rast, p, tri_d), pos_d, vaa.to(dev), 1e-5),
        TOL_GRAD_AA))

    if only_raster:
        return
    # Texture: texel values under trilinear filtering (linear) and uv under bilinear filtering, with uvs kept
    # at least 0.1 texel away from texel centers (the kinks of the bilinear weights).
    tex = rnd(1, 16, 16, 3).to(dev)
    jj = torch.arange(8, dtype=torch.float32)
    base = (jj * 2 + 0.5 + 0.1 + 0.3 * rnd(8)) / 16
    uv = torch.stack(torch.meshgrid(base, base.flip(0), indexing="xy"), -1)[None].contiguous()  # [1, 8, 8, 2]
    uv_da = (rnd(1, 8, 8, 4) * 0.1).to(dev)
    rec.guarded("grad: texture (trilinear) wrt tex", be.name, "gradients", lambda: judge(
        "tex", directional_check(lambda t: dr.texture(t, uv.to(dev), uv_da, filter_mode="linear-mipmap-linear"),
                                 tex, (rnd(1, 16, 16, 3) - 0.5).to(dev), 1.0), TOL_GRAD_LINEAR))
    rec.guarded("grad: texture (bilinear) wrt uv", be.name, "gradients", lambda: judge(
        "uv", directional_check(lambda u: dr.texture(tex, u, filter_mode="linear", boundary_mode="clamp"),
                                uv.to(dev), (rnd(1, 8, 8, 2) - 0.5).to(dev), 1e-3), TOL_GRAD))


# ------------------------------------------------------------------------------------------ fit
def fit_check(rec: Recorder, be: Backend, dr: Any, iters: int) -> None:
    """Recover vertex colors and a screen offset of a small sphere from a target render (must converge)."""

    def run() -> tuple[str, str, dict[str, Any]]:
        dev = be.device
        ctx = be.make_ctx()
        v, f = scenes.icosphere(1)
        clip = scenes.to_clip(v, scenes.mvp(0.3, 0.2, 3.2))[None].to(dev)
        tri = f.to(dev)
        target_col = torch.rand(v.shape[0], 3, generator=torch.Generator().manual_seed(9)).to(dev)
        res = [48, 48]

        def render(col: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
            shift = torch.cat([offset, torch.zeros(2, device=dev)]) * clip[..., 3:4]
            p = (clip + shift).contiguous()
            rast, _ = dr.rasterize(ctx, p, tri, resolution=res)
            img, _ = dr.interpolate(col[None].contiguous(), rast, tri)
            return dr.antialias(img.contiguous(), rast, p, tri)

        with torch.no_grad():
            target = render(target_col, torch.zeros(2, device=dev))
        col = torch.full_like(target_col, 0.5).requires_grad_(True)
        off0 = torch.tensor([0.12, -0.08], device=dev)
        off = off0.clone().requires_grad_(True)
        opt = torch.optim.Adam([{"params": [col], "lr": 0.05}, {"params": [off], "lr": 0.01}])
        losses = []
        for _ in range(iters):
            opt.zero_grad()
            loss = ((render(col, off) - target) ** 2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        with torch.no_grad():
            final = ((render(col, off) - target) ** 2).mean().item()
        ratio = final / max(losses[0], 1e-12)
        off_ratio = off.detach().norm().item() / off0.norm().item()
        ok = ratio < 0.05 and off_ratio < 0.5 and all(map(lambda x: x == x, losses))
        return ("passed" if ok else "failed",
                f"loss {losses[0]:.4g} → {final:.4g} (×{ratio:.3f}, need < 0.05); offset error ×{off_ratio:.3f} "
                f"(need < 0.5) in {iters} Adam steps",
                {"loss_start": losses[0], "loss_end": final, "loss_ratio": ratio, "offset_ratio": off_ratio,
                 "iters": iters})

    rec.guarded("fit: colors + offset converge", be.name, "fit", run)


# ------------------------------------------------------------------------------------------ timings
def timings(rec: Recorder, be: Backend, dr: Any, quick: bool) -> None:
    gpu = be.device.type == "cuda"
    level, res, batch, reps = (6, 1024, 4, 20) if gpu and not quick else (3, 128, 1, 3)
    dev = be.device
    v, f = scenes.icosphere(level)
    mats = [scenes.mvp(0.3 * i, 0.5 * i, 3.0) for i in range(batch)]
    pos = torch.stack([scenes.to_clip(v, m) for m in mats]).to(dev).contiguous()
    tri = f.to(dev)
    uv = ((v[:, :2] * 0.5 + 0.5)[None]).to(dev).contiguous()
    tex = scenes.checker_texture(256).to(dev)
    ctx = be.make_ctx()
    workload = f"{f.shape[0]} tris, {batch}×{res}²"

    def timed(fn: Callable[[], Any]) -> float:
        for _ in range(2):
            fn()
        be.sync()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            be.sync()
            ts.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ts)

    def fwd_bwd(make: Callable[[], torch.Tensor]) -> tuple[float, float]:
        fwd = timed(make)
        out = make()
        grad = torch.ones_like(out)
        bwd = timed(lambda: out.backward(grad, retain_graph=True))
        return fwd, bwd

    def run() -> tuple[str, str, dict[str, Any]]:
        rast, rast_db = dr.rasterize(ctx, pos, tri, resolution=[res, res])
        t_r = timed(lambda: dr.rasterize(ctx, pos, tri, resolution=[res, res]))
        p_req = pos.clone().requires_grad_(True)
        uvq = uv.clone().requires_grad_(True)
        f_i, b_i = fwd_bwd(lambda: dr.interpolate(uvq, rast, tri, rast_db=rast_db, diff_attrs="all")[0])
        texc, texd = dr.interpolate(uv, rast, tri, rast_db=rast_db, diff_attrs="all")
        texc, texd = texc.contiguous(), texd.contiguous()
        tq = tex.clone().requires_grad_(True)
        f_t, b_t = fwd_bwd(lambda: dr.texture(tq, texc, texd, filter_mode="linear-mipmap-linear"))
        color = dr.texture(tex, texc, texd, filter_mode="linear-mipmap-linear").contiguous().requires_grad_(True)
        hsh = dr.antialias_construct_topology_hash(tri)
        f_a, b_a = fwd_bwd(lambda: dr.antialias(color, rast, p_req, tri, topology_hash=hsh))
        rows = [("rasterize", t_r, None), ("interpolate(+db)", f_i, b_i), ("texture trilinear", f_t, b_t),
                ("antialias", f_a, b_a)]
        for op, fw, bw in rows:
            rec.timings.append({"backend": be.name, "op": op, "workload": workload, "fwd_ms": fw, "bwd_ms": bw})
        return "passed", "; ".join(f"{op} {fw:.2f} ms" + (f" / bwd {bw:.2f} ms" if bw is not None else "")
                                   for op, fw, bw in rows), {"workload": workload}

    rec.guarded("timings", be.name, "timings", run)


# ------------------------------------------------------------------------------------------ goldens
GOLDEN_RES = (48, 48)  # the resolution tests/assets/make_golden.py renders at


def golden_checks(rec: Recorder, backends: list[Backend], dr: Any, golden_dir: Path, meshes_file: Path) -> None:
    """Compare every backend with the golden files of the conformance suite (tests/assets/golden/*.npz).

    Each golden holds the reference backend's rasterize → interpolate(colors) → antialias of one scene of
    tests/assets/meshes.py; the same pipeline runs here and must agree within the conformance tolerances.
    """
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("nvdr_golden_meshes", meshes_file)
    meshes = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(meshes)
    for path in sorted(golden_dir.glob("*.npz")):
        name = path.stem
        gold = np.load(path)
        ref = {"image": torch.from_numpy(gold["aa"].astype("float32")),
               "rast": torch.from_numpy((gold["ids"] > 0).astype("float32"))[..., None].expand(
                   *gold["ids"].shape, 4).contiguous()}
        for be in backends:
            def run(be: Backend = be, name: str = name, ref: dict[str, torch.Tensor] = ref,
                    gold: Any = gold, path: Path = path) -> tuple[str, str, dict[str, Any]]:
                s = meshes.scene(name)
                pos = torch.from_numpy(np.ascontiguousarray(s["pos"], dtype=np.float32)).to(be.device)
                tri = torch.from_numpy(np.ascontiguousarray(s["tri"], dtype=np.int32)).to(be.device)
                ranges = None if s["ranges"] is None else torch.from_numpy(np.asarray(s["ranges"], dtype=np.int32))
                col = torch.from_numpy(np.ascontiguousarray(s["colors"], dtype=np.float32)).to(be.device)
                ctx = be.make_ctx()
                rast, db = dr.rasterize(ctx, pos, tri, GOLDEN_RES, ranges=ranges)
                color, _ = dr.interpolate(col, rast, tri, rast_db=db, diff_attrs=[0])
                aa = dr.antialias(color, rast, pos, tri)
                art = {"image": aa.detach().cpu(), "rast": rast.detach().cpu()}
                m = compare(art, ref)
                ids = rast[..., 3].detach().cpu()
                same = (ids.round().to(torch.int64) == torch.from_numpy(gold["ids"]).to(torch.int64))
                m["triangle_id_mismatch"] = 1.0 - same.float().mean().item()
                stem = f"golden-{name}__{be.name}"
                refd, artd = scenes.to_display(ref["image"]), scenes.to_display(art["image"])
                if refd.shape == artd.shape:
                    diff = (artd - refd).abs().amax(-1)
                    scale = max(float(diff.max()), 0.05)
                    save_png(rec.out / "images" / f"{stem}__reference.png", refd)
                    save_png(rec.out / "images" / f"{stem}__artifact.png", artd)
                    save_png(rec.out / "images" / f"{stem}__diff.png", heat(diff, scale))
                    rec.images.append({"scene": f"golden {name}", "backend": be.name,
                                       "reference": f"images/{stem}__reference.png",
                                       "artifact": f"images/{stem}__artifact.png", "diff": f"images/{stem}__diff.png",
                                       "reference_backend": f"golden {path.name}", "diff_scale": scale})
                st, det = verdict(m)
                return st, det, m

            rec.guarded(f"matches golden: {name}", be.name, "goldens", run)


# ------------------------------------------------------------------------------------------ main
def _gpu_info() -> tuple[str | None, str | None]:
    if not torch.cuda.is_available():
        return None, None
    name = torch.cuda.get_device_name(0)
    driver = None
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            driver = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                    text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            driver = None
    return name, driver


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--venv", required=True, help="prefix the installed nvdiffrast must live under")
    ap.add_argument("--expect-version", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--fit-iters", type=int, default=120)
    ap.add_argument("--goldens", help="directory of golden .npz files (tests/assets/golden)")
    ap.add_argument("--meshes", help="the meshes.py that made the goldens (tests/assets/meshes.py)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rec = Recorder(out)
    t_start = time.time()
    gpu, driver = _gpu_info()
    env = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "cuda_available": torch.cuda.is_available(), "gpu": gpu, "driver": driver,
           "platform": platform.platform(), "host": platform.node()}
    print(f"validation worker: torch {torch.__version__}, GPU {gpu or 'none'}", flush=True)
    # torch.optim imports torch._dynamo (and with it triton's bundled LLVM) on first use; doing that after Mesa's
    # llvmpipe (its own LLVM) is loaded by a GL context crashed the process here, so import it up front.
    try:
        importlib.import_module("torch._dynamo")
    except Exception:  # noqa: BLE001 - absent in minimal torch builds; the optimizer then needs no import
        pass

    # --- installation -------------------------------------------------------------------------
    import nvdiffrast

    loc = Path(nvdiffrast.__file__).resolve()
    venv = Path(args.venv).resolve()
    inside = venv in loc.parents
    rec.add("installed from the wheel", "passed" if inside else "failed", None,
            f"nvdiffrast imported from {loc.parent}", category="install")
    bi = nvdiffrast.build_info()
    vers_ok = bi.get("version") == args.expect_version and nvdiffrast.__version__ == args.expect_version
    rec.add("build info", "passed" if vers_ok else "failed", None,
            f"version {bi.get('version')!r} (expected {args.expect_version!r}), variant {bi.get('variant')!r}",
            {k: bi.get(k) for k in ("torch_version", "cuda_version", "arch_list")}, "install")
    t_minor = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    rec.add("torch matches the build", "passed" if bi.get("torch_minor") == t_minor else "failed", None,
            f"running torch {torch.__version__}, built against {bi.get('torch_version')}", category="install")

    import nvdiffrast.torch as dr

    missing = [n for n in PUBLIC_NAMES if not hasattr(dr, n)]
    rec.add("public API", "failed" if missing else "passed", None,
            f"missing: {missing}" if missing else "all 11 public names present", category="install")

    from nvdiffrast import _loader

    cuda_native = False
    try:
        _loader.load_cuda()
        cuda_native = True
        rec.add("native module _C loads", "passed", None, "torch.ops.nvdiffrast registered", category="install")
    except Exception as exc:  # noqa: BLE001
        msg = f"{type(exc).__name__}: {exc}"
        no_driver = not torch.cuda.is_available() and ("libcuda" in msg or "driver" in msg.lower())
        rec.add("native module _C loads", "pending" if no_driver else "failed", None, msg, category="install")
    if bi.get("gl_module", True):
        try:
            _loader.load_gl()
            rec.add("native module _gl loads", "passed", None, "imports (GL entry points are resolved at run time)",
                    category="install")
        except Exception as exc:  # noqa: BLE001
            rec.add("native module _gl loads", "failed", None, f"{type(exc).__name__}: {exc}", category="install")

    found = {c: shutil.which(c) for c in COMPILERS}
    usable = {c: p for c, p in found.items() if p and "nvdr-no-compiler" not in p}
    rec.add("no compiler reachable", "failed" if usable else "passed", None,
            f"compilers on PATH: {usable}" if usable else "nvcc/gcc/cc/c++ are blocked; CUDA_HOME unset",
            category="no-compiler")

    # --- backends -------------------------------------------------------------------------------
    backends: list[Backend] = [Backend("reference", torch.device("cpu"),
                                       lambda: dr.RasterizeCudaContext(device="cpu"))]
    bstat: dict[str, dict[str, Any]] = {"reference": {"status": "available"}}
    if not torch.cuda.is_available():
        bstat["cuda"] = {"status": "pending", "reason": "no CUDA GPU on this machine"}
    elif not cuda_native:
        bstat["cuda"] = {"status": "failed", "reason": "nvdiffrast._C does not load"}
    else:
        cdev = torch.device("cuda", 0)
        backends.append(Backend("cuda", cdev, lambda: dr.RasterizeCudaContext(device=cdev)))
        bstat["cuda"] = {"status": "available"}
    gl_dev = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        ctx = dr.RasterizeGLContext(device=gl_dev)
        del ctx
        backends.append(Backend("gl", gl_dev, lambda: dr.RasterizeGLContext(device=gl_dev)))
        bstat["gl"] = {"status": "available", "reason": f"{gl_dev.type} tensors"}
    except Exception as exc:  # noqa: BLE001
        bstat["gl"] = {"status": "unavailable" if torch.cuda.is_available() else "pending",
                       "reason": f"no OpenGL context: {type(exc).__name__}: {exc}"}
    print("backends: " + ", ".join(f"{k}={v['status']}" for k, v in bstat.items()), flush=True)

    # --- scenes ---------------------------------------------------------------------------------
    for sc in scenes.SCENES:
        res = sc.res if not args.quick else max(32, sc.res // 2)
        outs: dict[str, dict[str, torch.Tensor]] = {}
        for be in backends:
            if be.name == "reference" and not sc.reference_ok:
                rec.add(f"render {sc.name}", "skipped", be.name, "too large for the CPU reference backend",
                        category="render")
                continue
            if sc.gpu_only and be.device.type != "cuda":
                rec.add(f"render {sc.name}", "skipped", be.name, "GPU-only scene (CPU tensors here)",
                        category="render")
                continue

            def do(be: Backend = be, sc: scenes.Scene = sc, res: int = res,
                   outs: dict[str, dict[str, torch.Tensor]] = outs) -> tuple[str, str, dict[str, Any]]:
                t0 = time.perf_counter()
                o = sc.render(dr, be.make_ctx(), be.device, res)
                be.sync()
                dt = time.perf_counter() - t0
                outs[be.name] = {k: v.detach().cpu() for k, v in o.items()}
                st, det, met = sanity(sc.name, outs[be.name])
                met["render_s"] = dt
                return st, f"{sc.description}: {det}", met

            rec.guarded(f"render {sc.name}", be.name, "render", do)
        if sc.name == "slivers" and outs:  # forward rasterize + interpolate must be deterministic (spec §2.8)
            for be in backends:
                if be.name not in outs:
                    continue

                def again(be: Backend = be, sc: scenes.Scene = sc, res: int = res,
                          first: dict[str, torch.Tensor] = outs[be.name]) -> tuple[str, str, dict[str, Any]]:
                    o = sc.render(dr, be.make_ctx(), be.device, res)
                    same = all(torch.equal(o[k].detach().cpu(), first[k]) for k in ("image", "rast"))
                    return ("passed" if same else "failed",
                            "a second render is bit-identical" if same else "a second render differs", {})

                rec.guarded("deterministic forward (slivers twice)", be.name, "render", again)
        golden_name = "reference" if "reference" in outs else ("cuda" if "cuda" in outs else None)
        for name, o in outs.items():
            stem = f"{sc.name}__{name}"
            art = scenes.to_display(o["image"])
            save_png(out / "images" / f"{stem}__artifact.png", art)
            entry: dict[str, Any] = {"scene": sc.name, "backend": name, "artifact": f"images/{stem}__artifact.png"}
            if golden_name and name != golden_name:
                ref = outs[golden_name]
                refd = scenes.to_display(ref["image"])
                diff = (art - refd).abs().amax(-1) if art.shape == refd.shape else torch.ones(art.shape[:2])
                scale = max(float(diff.max()), 0.05)
                save_png(out / "images" / f"{stem}__reference.png", refd)
                save_png(out / "images" / f"{stem}__diff.png", heat(diff, scale))
                entry.update(reference=f"images/{stem}__reference.png", diff=f"images/{stem}__diff.png",
                             reference_backend=golden_name, diff_scale=scale)
                m = compare(o, ref)
                st, det = verdict(m)
                rec.add(f"matches {golden_name}: {sc.name}", st, name, det, m, "agreement")
            rec.images.append(entry)

    # --- goldens of the conformance suite ---------------------------------------------------------
    if args.goldens and args.meshes:
        try:
            golden_checks(rec, backends, dr, Path(args.goldens), Path(args.meshes))
        except ImportError as exc:  # numpy is what the golden files need; torch does not require it
            rec.add("goldens", "skipped", None, f"cannot read the golden files here: {exc}", category="goldens")

    # --- gradients, fit, timings per backend ----------------------------------------------------
    for be in backends:
        grad_checks(rec, be, dr)
        fit_check(rec, be, dr, args.fit_iters if not args.quick else max(40, args.fit_iters // 2))
        timings(rec, be, dr, args.quick)

    ext_dir = os.environ.get("TORCH_EXTENSIONS_DIR")
    if ext_dir:
        left = sorted(os.listdir(ext_dir)) if os.path.isdir(ext_dir) else []
        rec.add("TORCH_EXTENSIONS_DIR stays empty", "failed" if left else "passed", None,
                f"found {left}" if left else f"{ext_dir} is empty: nothing was JIT-compiled", category="no-compiler")

    results = {"environment": env, "backends": bstat, "checks": rec.checks, "images": rec.images,
               "timings": rec.timings, "worker_seconds": time.time() - t_start}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
