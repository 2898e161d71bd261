"""Per-kernel breakdown of the benchmark ops (where the time of ``bench.py``'s figures goes).

Usage (on a GPU machine, with this checkout built in place or installed)::

    python benchmarks/profile_ops.py [--ops antialias_fwd_bwd,...] [--workloads mid_20k_1024_b8,...] [--iters N]

For each (workload, op): the median time as ``bench.py`` measures it (CUDA events around one call), the
summed GPU time of the kernels and copies of one call (so ``event - gpu`` is the part spent waiting on the
host), and the kernels ranked by their GPU time per call.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402
import bench_api  # noqa: E402


def kernel_times(fn, iters: int) -> dict[str, float]:  # noqa: ANN001 - a benchmark closure
    """GPU microseconds per call of every kernel / memcpy / memset that ``fn`` launches."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    per: dict[str, float] = defaultdict(float)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            per[ev.name] += ev.device_time / iters  # device_time: microseconds
    return dict(per)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default="antialias_fwd_bwd,texture_mip_fwd_bwd")
    ap.add_argument("--workloads", default="")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--top", type=int, default=12, help="kernels listed per (workload, op)")
    a = ap.parse_args()

    import nvdiffrast.torch as dr

    ctx = dr.RasterizeCudaContext()
    print(f"# gpu={torch.cuda.get_device_name()} torch={torch.__version__}")
    wanted = set(filter(None, a.workloads.split(",")))
    for name, sd, batch, res in bench_api.WORKLOADS:
        if wanted and name not in wanted:
            continue
        fns = bench.make_ops(dr, ctx, sd, batch, res)
        for op in filter(None, a.ops.split(",")):
            fn = fns[op]
            event_ms = bench_api.timeit(fn, 20)
            per = kernel_times(fn, a.iters)
            gpu_us = sum(per.values())
            print(f"\n## {name} {op}: event {event_ms * 1e3:8.1f} us, GPU busy {gpu_us:8.1f} us, "
                  f"{len(per)} kernels")
            for k, us in sorted(per.items(), key=lambda kv: -kv[1])[: a.top]:
                print(f"  {us:8.1f} us  {k[:110]}")
        del fns
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
