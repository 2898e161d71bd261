"""GPU tests of the flat mip-stack path of ``texture`` (CUDA, internal stack).

``dr.texture`` on CUDA tensors builds the whole pyramid in one tensor (``mip_build_flat``) and samples it
with ``texture_fwd_flat`` / ``texture_bwd_mip_flat``. These must agree with the per-level path
(``mip_build`` + ``texture_fwd`` / ``texture_bwd_mip``): bitwise in the forward and in deterministic
mode, to float tolerance with atomics. Channel counts cover the compact (C <= 4, 32-bit keys) and the
general scatter of the backward kernel. Run on a GPU machine:
``python -m pytest tests/gpu/texture_flat_test.py -q``.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


from gpu_env import cuda_skip_reason  # noqa: E402 - tests/gpu is on sys.path (pytest rootdir insertion)

_REASON = cuda_skip_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import nvdiffrast.torch as dr  # noqa: E402
from nvdiffrast.torch import _mip  # noqa: E402
from nvdiffrast.torch._cuda import texture as cu_tex  # noqa: E402

DEV = torch.device("cuda")


def _inputs(cube: bool, channels: int, tex_batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, h, w = 2, 24, 40
    side = 32
    shape = (tex_batch, 6, side, side, channels) if cube else (tex_batch, side, 2 * side, channels)
    tex = torch.rand(shape, generator=g).to(DEV)
    uv = (torch.rand(n, h, w, 3 if cube else 2, generator=g) * 2.0 - (1.0 if cube else 0.25)).to(DEV)
    uv_da = (torch.randn(n, h, w, 6 if cube else 4, generator=g) * 0.05).to(DEV)
    bias = (torch.randn(n, h, w, generator=g) * 0.5).to(DEV)
    dy = torch.randn(n, h, w, channels, generator=g).to(DEV)
    return tex, uv, uv_da, bias, dy


def _list_path(tex, uv, uv_da, bias, dy, filter_mode, boundary_mode, cube):
    th, tw = (tex.shape[2], tex.shape[3]) if cube else (tex.shape[1], tex.shape[2])
    sizes = _mip.mip_level_sizes(tw, th, None)
    mips = cu_tex.mip_build(tex, len(sizes), cube)
    out = cu_tex.texture_fwd([tex, *mips], uv, uv_da, bias, filter_mode, boundary_mode)
    grads = cu_tex.texture_bwd_mip([tex, *mips], uv, uv_da, bias, dy, filter_mode, boundary_mode, True)
    return out, grads


def _flat_path(tex, uv, uv_da, bias, dy, filter_mode, boundary_mode):
    texg, uvg, dag, bg = (t.clone().requires_grad_(True) for t in (tex, uv, uv_da, bias))
    out = dr.texture(texg, uvg, dag, bg, filter_mode=filter_mode, boundary_mode=boundary_mode)
    out.backward(dy)
    return out.detach(), (texg.grad, uvg.grad, dag.grad, bg.grad)


@pytest.mark.parametrize("cube", [False, True])
@pytest.mark.parametrize("channels", [1, 3, 4, 5])
@pytest.mark.parametrize("filter_mode", ["linear-mipmap-linear", "linear-mipmap-nearest"])
def test_flat_stack_matches_level_list(cube, channels, filter_mode):
    boundary = "cube" if cube else "wrap"
    tex, uv, uv_da, bias, dy = _inputs(cube, channels, tex_batch=2)
    ref_out, ref_grads = _list_path(tex, uv, uv_da, bias, dy, filter_mode, boundary, cube)
    out, grads = _flat_path(tex, uv, uv_da, bias, dy, filter_mode, boundary)
    assert torch.equal(out, ref_out)
    for got, want in zip(grads, ref_grads):
        if want is None:
            assert got is None or not torch.any(got)
            continue
        assert got is not None and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cube", [False, True])
@pytest.mark.parametrize("channels", [3, 5])
def test_flat_stack_deterministic_matches_level_list(cube, channels):
    boundary = "cube" if cube else "clamp"
    tex, uv, uv_da, bias, dy = _inputs(cube, channels, tex_batch=1, seed=1)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        ref_out, ref_grads = _list_path(tex, uv, uv_da, bias, dy, "linear-mipmap-linear", boundary, cube)
        out, grads = _flat_path(tex, uv, uv_da, bias, dy, "linear-mipmap-linear", boundary)
        out2, grads2 = _flat_path(tex, uv, uv_da, bias, dy, "linear-mipmap-linear", boundary)
    finally:
        torch.use_deterministic_algorithms(prev)
    assert torch.equal(out, ref_out) and torch.equal(out, out2)
    for got, again, want in zip(grads, grads2, ref_grads):
        assert torch.equal(got, again)
        assert torch.equal(got, want)


def test_flat_stack_single_texel_and_level_limit():
    tex = torch.rand(1, 1, 1, 3, device=DEV)
    uv = torch.rand(1, 4, 4, 2, device=DEV)
    uv_da = torch.full((1, 4, 4, 4), 0.3, device=DEV)
    out = dr.texture(tex, uv, uv_da, filter_mode="linear-mipmap-linear")
    torch.testing.assert_close(out, tex.expand(1, 4, 4, 3))
    tex = torch.rand(1, 64, 64, 2, device=DEV)
    full = dr.texture(tex, uv, uv_da * 0 + 1.0, filter_mode="linear-mipmap-linear", max_mip_level=2)
    mips = cu_tex.mip_build(tex, 2, False)
    want = cu_tex.texture_fwd([tex, *mips], uv, uv_da * 0 + 1.0, None, "linear-mipmap-linear", "wrap")
    assert torch.equal(full, want)


_REJECT_SCRIPT = r"""
import torch
from nvdiffrast.torch._cuda import texture as cu_tex
tex = torch.rand(1, 16, 16, 3, device="cuda")
uv = torch.rand(1, 4, 4, 2, device="cuda")
flat = cu_tex.mip_build_flat(tex, 4, False)
for mips, levels in ((flat[:-3].clone(), 5), (flat, 0)):
    try:
        cu_tex.texture_fwd_flat(tex, mips, levels, uv, None, None, "linear-mipmap-linear", "wrap")
        print("NO ERROR")
    except RuntimeError as exc:
        print("RuntimeError:", str(exc).splitlines()[0])
"""


def test_flat_ops_reject_a_wrong_stack():
    # In a child process: an error raised inside a native op must reach Python as a RuntimeError, and a
    # crash there must fail this test rather than end the test session.
    import os
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", _REJECT_SCRIPT], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ))
    assert res.returncode == 0, f"child exited with {res.returncode}: {res.stderr[-2000:]}"
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2, res.stdout
    assert "mip pyramid holds" in lines[0], lines[0]
    assert "num_levels" in lines[1], lines[1]
