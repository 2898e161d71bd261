# ruff: noqa  -- verbatim copy of the shared benchmark (../shared/bench/bench_api.py); bench.py drives it.
"""Benchmark for any package exposing the nvdiffrast.torch API (ours or upstream), same workloads.

Usage (on a GPU machine, with the package under test importable as nvdiffrast):
    python bench_api.py --out DIR [--ctx cuda|gl] [--quick] [--label NAME]

Prints one line per (workload, op): median ms over timed iterations (CUDA events), and writes
DIR/bench_<label>.json. upstream-h200.json and upstream-h100.json beside this file hold the figures
of the upstream nvdiffrast 0.4.0 CUDA rasterizer (and 0.3.5 OpenGL) for these workloads on one NVIDIA
H200 and one H100 (torch 2.11.0+cu130). Compare only with the file of the same card.
"""
import argparse, json, math, os, sys, time
import numpy as np
import torch


def icosphere(n):
    t = (1.0 + 5 ** 0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=np.float64)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                  [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                  [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], dtype=np.int64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for _ in range(n):
        e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        es = np.sort(e, axis=1)
        uniq, inv = np.unique(es, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        mid = v[uniq[:, 0]] + v[uniq[:, 1]]
        mid /= np.linalg.norm(mid, axis=1, keepdims=True)
        base = len(v)
        v = np.concatenate([v, mid])
        T = len(f)
        m01, m12, m20 = inv[:T] + base, inv[T:2 * T] + base, inv[2 * T:] + base
        a, b, c = f[:, 0], f[:, 1], f[:, 2]
        f = np.concatenate([np.stack([a, m01, m20], 1), np.stack([b, m12, m01], 1),
                            np.stack([c, m20, m12], 1), np.stack([m01, m12, m20], 1)])
    return v.astype(np.float32), f.astype(np.int32)


def perspective(fovy=0.8, aspect=1.0, n=0.1, f=100.0):
    y = 1.0 / math.tan(fovy / 2)
    return np.array([[y / aspect, 0, 0, 0], [0, y, 0, 0], [0, 0, -(f + n) / (f - n), -(2 * f * n) / (f - n)],
                     [0, 0, -1, 0]], dtype=np.float32)


def random_rot(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w), 0],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w), 0],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y), 0],
                     [0, 0, 0, 1]], dtype=np.float32)


def make_scene(subdiv, batch, seed=0, dist=2.5, device='cuda'):
    rng = np.random.default_rng(seed)
    v, f = icosphere(subdiv)
    v = v * (1.0 + 0.05 * rng.standard_normal((len(v), 1)).astype(np.float32))  # bumpy
    P = perspective()
    mvps = []
    for b in range(batch):
        T = np.eye(4, dtype=np.float32)
        T[2, 3] = -dist
        mvps.append(P @ T @ random_rot(rng))
    mvp = torch.tensor(np.stack(mvps), device=device)
    vh = torch.cat([torch.tensor(v, device=device), torch.ones(len(v), 1, device=device)], 1)
    pos = torch.matmul(vh[None], mvp.transpose(1, 2)).contiguous()
    tri = torch.tensor(f, device=device)
    uv = np.stack([0.5 + np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi), np.arccos(np.clip(v[:, 1], -1, 1)) / np.pi], 1)
    uv = torch.tensor(uv.astype(np.float32), device=device)
    attr = torch.tensor(rng.standard_normal((len(v), 8)).astype(np.float32), device=device)
    return pos, tri, uv, attr


def timeit(fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    return float(np.median(ts))


WORKLOADS = [
    # name, icosphere subdiv, batch, resolution
    ('small_5k_512_b1', 4, 1, 512),
    ('mid_20k_1024_b8', 5, 8, 1024),
    ('big_1.3M_1024_b4', 8, 4, 1024),
    ('hires_80k_2048_b2', 6, 2, 2048),
]


def bench(dr, ctx, out, quick):
    results = []
    wl = WORKLOADS[:2] if quick else WORKLOADS
    iters = 5 if quick else 20
    for name, sd, B, R in wl:
        pos, tri, uv, attr = make_scene(sd, B)
        tex = torch.rand(1, 1024, 1024, 3, device='cuda')
        res = [R, R]

        def r_fwd():
            return dr.rasterize(ctx, pos, tri, resolution=res)

        results.append((name, 'rasterize_fwd', timeit(r_fwd, iters)))
        posg = pos.clone().requires_grad_(True)

        def r_fb():
            rast, db = dr.rasterize(ctx, posg, tri, resolution=res)
            (rast[..., :2].sum() + db.sum()).backward()

        results.append((name, 'rasterize_fwd_bwd', timeit(r_fb, iters)))
        rast, db = dr.rasterize(ctx, pos, tri, resolution=res)
        attrg = attr.clone().requires_grad_(True)

        def i_fb():
            o, da = dr.interpolate(attrg, rast, tri, rast_db=db, diff_attrs='all')
            (o.sum() + da.sum()).backward()

        results.append((name, 'interpolate_fwd_bwd', timeit(i_fb, iters)))
        texc, uvda = dr.interpolate(uv, rast, tri, rast_db=db, diff_attrs='all')
        texg = tex.clone().requires_grad_(True)
        texB = texg.expand(B, -1, -1, -1) if B > 1 else texg

        def t_fb():
            o = dr.texture(texg.expand(B, -1, -1, -1).contiguous(), texc, uvda, filter_mode='linear-mipmap-linear')
            o.sum().backward()

        results.append((name, 'texture_mip_fwd_bwd', timeit(t_fb, iters)))
        col = dr.interpolate(attr[:, :3].contiguous(), rast, tri)[0]
        colg = col.clone().requires_grad_(True)
        posg2 = pos.clone().requires_grad_(True)

        def a_fb():
            o = dr.antialias(colg, rast, posg2, tri)
            o.sum().backward()

        results.append((name, 'antialias_fwd_bwd', timeit(a_fb, iters)))
        del pos, tri, uv, attr, tex, rast, db
        torch.cuda.empty_cache()
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default='.')
    ap.add_argument('--ctx', default='cuda')
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--label', default='')
    a = ap.parse_args()
    import nvdiffrast.torch as dr
    ctx = dr.RasterizeCudaContext() if a.ctx == 'cuda' else dr.RasterizeGLContext()
    os.makedirs(a.out, exist_ok=True)
    res = bench(dr, ctx, a.out, a.quick)
    gpu = torch.cuda.get_device_name()
    with open(os.path.join(a.out, f'bench_{a.label or a.ctx}.json'), 'w') as fh:
        json.dump({'gpu': gpu, 'torch': torch.__version__, 'label': a.label, 'ctx': a.ctx, 'results': res}, fh, indent=1)
    print(f'# {a.label} ctx={a.ctx} gpu={gpu} torch={torch.__version__}')
    for r in res:
        print(f'{r[0]:22s} {r[1]:22s} {r[2]:9.3f} ms')


if __name__ == '__main__':
    main()
