"""Every error of spec §6 for rasterize, DepthPeeler, interpolate, antialias and the topology hash:
the exception type users may catch, and a message naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nvdiffrast.torch as dr

POS = [[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]]]


@pytest.fixture
def inputs(backend):
    ctx = backend.make_context()
    pos = backend.tensor(POS)
    tri = backend.tensor([[0, 1, 2]], torch.int32)
    rast, db = dr.rasterize(ctx, pos, tri, (4, 4))
    attr = backend.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    color = backend.tensor(torch.ones(1, 4, 4, 3))
    return backend, ctx, pos, tri, rast, db, attr, color


def _noncontig(t):
    out = t.repeat_interleave(2, dim=-1)[..., ::2]
    assert not out.is_contiguous()
    return out


# ---------------------------------------------------------------------------------------- rasterize
def test_rasterize_python_level_asserts(inputs):
    backend, ctx, pos, tri, *_ = inputs
    with pytest.raises(AssertionError, match="glctx"):
        dr.rasterize("not a context", pos, tri, (4, 4))
    with pytest.raises(AssertionError, match="grad_db"):
        dr.rasterize(ctx, pos, tri, (4, 4), grad_db=1)
    with pytest.raises(AssertionError, match="pos"):
        dr.rasterize(ctx, POS, tri, (4, 4))
    with pytest.raises(AssertionError, match="tri"):
        dr.rasterize(ctx, pos, [[0, 1, 2]], (4, 4))
    with pytest.raises(AssertionError, match="ranges"):
        dr.rasterize(ctx, pos[0].contiguous(), tri, (4, 4), ranges=[[0, 1]])


def test_rasterize_dtype_contiguity(inputs):
    backend, ctx, pos, tri, *_ = inputs
    with pytest.raises(RuntimeError, match="float32"):
        dr.rasterize(ctx, pos.double(), tri, (4, 4))
    with pytest.raises(RuntimeError, match="float32"):
        dr.rasterize(ctx, pos.half(), tri, (4, 4))
    with pytest.raises(RuntimeError, match="int32"):
        dr.rasterize(ctx, pos, tri.long(), (4, 4))
    with pytest.raises(RuntimeError, match="int32"):
        dr.rasterize(ctx, pos, tri, (4, 4), ranges=torch.tensor([[0, 1]], dtype=torch.int64))
    with pytest.raises(RuntimeError, match="contiguous"):
        dr.rasterize(ctx, _noncontig(pos), tri, (4, 4))
    with pytest.raises(RuntimeError, match="contiguous"):
        dr.rasterize(ctx, pos, _noncontig(tri), (4, 4))


def test_rasterize_shapes(inputs):
    backend, ctx, pos, tri, *_ = inputs
    with pytest.raises(RuntimeError, match=r"pos must have shape \[>0, >0, 4\]"):
        dr.rasterize(ctx, pos[..., :3].contiguous(), tri, (4, 4))
    with pytest.raises(RuntimeError, match=r"pos must have shape \[>0, >0, 4\]"):
        dr.rasterize(ctx, pos[:, :0].contiguous(), tri, (4, 4))
    with pytest.raises(RuntimeError, match=r"pos must have shape \[>0, >0, 4\]"):
        dr.rasterize(ctx, pos[None].contiguous(), tri, (4, 4))
    with pytest.raises(RuntimeError, match=r"pos must have shape \[>0, 4\]"):
        dr.rasterize(ctx, pos[0, :, :3].contiguous(), tri, (4, 4), ranges=torch.tensor([[0, 1]], dtype=torch.int32))
    with pytest.raises(RuntimeError, match=r"ranges must have shape \[>0, 2\]"):
        dr.rasterize(ctx, pos[0].contiguous(), tri, (4, 4))
    with pytest.raises(RuntimeError, match=r"ranges must have shape \[>0, 2\]"):
        dr.rasterize(ctx, pos[0].contiguous(), tri, (4, 4), ranges=torch.tensor([[0, 1, 2]], dtype=torch.int32))
    with pytest.raises(RuntimeError, match=r"ranges must have shape \[>0, 2\]"):
        dr.rasterize(ctx, pos[0].contiguous(), tri, (4, 4), ranges=torch.zeros(0, 2, dtype=torch.int32))
    for bad_tri in (tri[:, :2], tri[:0], tri[0]):
        with pytest.raises(RuntimeError, match=r"tri must have shape \[>0, 3\]"):
            dr.rasterize(ctx, pos, bad_tri.contiguous(), (4, 4))
    for res in ((0, 4), (4, -1), (4,), (4, 4, 4), "44", (4.5, 4), (4.0, 4), (True, 4), None, np.array([4.0, 4.0])):
        with pytest.raises(RuntimeError, match="resolution must be"):
            dr.rasterize(ctx, pos, tri, res)


def test_rasterize_accepts_resolution_forms(inputs):
    backend, ctx, pos, tri, *_ = inputs
    for res in ((4, 6), [4, 6], torch.Size([4, 6]), torch.tensor([4, 6]), np.array([4, 6]), (np.int64(4), 6)):
        rast, _ = dr.rasterize(ctx, pos, tri, res)
        assert rast.shape == (1, 4, 6, 4)


def test_ranges_must_be_on_cpu(inputs):
    backend, ctx, pos, tri, *_ = inputs
    if backend.device.type != "cuda":
        pytest.skip("needs a CUDA device for a non-CPU ranges tensor")
    ranges = torch.tensor([[0, 1]], dtype=torch.int32, device=backend.device)
    with pytest.raises(RuntimeError, match="ranges must reside on CPU"):
        dr.rasterize(ctx, pos[0].contiguous(), tri, (4, 4), ranges=ranges)
    with pytest.raises(RuntimeError, match="ranges must reside on CPU"):  # even in instanced mode
        dr.rasterize(ctx, pos, tri, (4, 4), ranges=ranges)


def test_device_mismatches(inputs):
    backend, ctx, pos, tri, *_ = inputs
    if backend.device.type != "cuda":
        pytest.skip("needs a CUDA device to mix devices")
    with pytest.raises(RuntimeError, match="same device"):
        dr.rasterize(ctx, pos, tri.cpu(), (4, 4))
    cpu_ctx = dr.RasterizeCudaContext(device="cpu")
    with pytest.raises(RuntimeError, match="context"):
        dr.rasterize(cpu_ctx, pos, tri, (4, 4))


def test_cpu_context_rejects_nothing_on_cpu_and_cuda_context_rejects_cpu(inputs):
    backend, ctx, pos, tri, *_ = inputs
    if not torch.cuda.is_available():
        # device=None resolves to the CPU here and accepts CPU tensors
        rast, _ = dr.rasterize(dr.RasterizeCudaContext(), pos.cpu(), tri.cpu(), (4, 4))
        assert rast.shape == (1, 4, 4, 4)
        return
    cuda_ctx = dr.RasterizeCudaContext(device="cuda")
    with pytest.raises(RuntimeError, match="context"):
        dr.rasterize(cuda_ctx, pos.cpu(), tri.cpu(), (4, 4))
    # device=None follows CPU inputs (documented), so this one works
    rast, _ = dr.rasterize(dr.RasterizeCudaContext(), pos.cpu(), tri.cpu(), (4, 4))
    assert rast.device.type == "cpu"


def test_depth_peeler_constructor_asserts(inputs):
    backend, ctx, pos, tri, *_ = inputs
    with pytest.raises(AssertionError):
        dr.DepthPeeler(object(), pos, tri, (4, 4))
    with pytest.raises(AssertionError):
        dr.DepthPeeler(ctx, pos, tri, (4, 4), grad_db="yes")
    with pytest.raises(AssertionError):
        dr.DepthPeeler(ctx, POS, tri, (4, 4))
    with dr.DepthPeeler(ctx, pos.double(), tri, (4, 4)) as peeler:  # native checks run per layer
        with pytest.raises(RuntimeError, match="float32"):
            peeler.rasterize_next_layer()


# -------------------------------------------------------------------------------------- interpolate
def test_interpolate_errors(inputs):
    backend, ctx, pos, tri, rast, db, attr, _ = inputs
    with pytest.raises(AssertionError, match="attr"):
        dr.interpolate([[1.0]], rast, tri)
    with pytest.raises(AssertionError, match="rast"):
        dr.interpolate(attr, None, tri)
    with pytest.raises(AssertionError, match="tri"):
        dr.interpolate(attr, rast, [[0, 1, 2]])
    with pytest.raises(AssertionError, match="rast_db"):
        dr.interpolate(attr, rast, tri, diff_attrs="all")
    with pytest.raises(AssertionError, match="rast_db"):
        dr.interpolate(attr, rast, tri, diff_attrs=[0])
    with pytest.raises(AssertionError, match="1-D"):
        dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs=[[0, 1]])
    with pytest.raises(RuntimeError, match="too many entries in diff_attrs"):
        dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs=list(range(33)))
    dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs=[0] * 32)  # 32 is fine
    with pytest.raises(RuntimeError, match=r"rast must have shape"):
        dr.interpolate(attr, rast[..., :3].contiguous(), tri)
    with pytest.raises(RuntimeError, match=r"rast must have shape"):
        dr.interpolate(attr, rast[0], tri)
    for bad in (attr[0], attr[None, None], attr[:, :0], attr[None, :0]):
        with pytest.raises(RuntimeError, match=r"attr must have shape \[>0, >0, >0\] or \[>0, >0\]"):
            dr.interpolate(bad.contiguous(), rast, tri)
    with pytest.raises(RuntimeError, match="minibatch size mismatch between inputs rast, attr"):
        dr.interpolate(torch.stack([attr] * 3).contiguous(), torch.cat([rast, rast]).contiguous(), tri)
    with pytest.raises(RuntimeError, match=r"rast_db must have shape"):
        dr.interpolate(attr, rast, tri, rast_db=db[..., :2].contiguous(), diff_attrs="all")
    with pytest.raises(RuntimeError, match="spatial size mismatch between inputs rast and rast_db"):
        dr.interpolate(attr, rast, tri, rast_db=db[:, :2].contiguous(), diff_attrs="all")
    with pytest.raises(RuntimeError, match=r"tri must have shape \[>0, 3\]"):
        dr.interpolate(attr, rast, tri[:, :2].contiguous())
    with pytest.raises(RuntimeError, match="float32"):
        dr.interpolate(attr.double(), rast, tri)
    with pytest.raises(RuntimeError, match="float32"):
        dr.interpolate(attr, rast, tri, rast_db=db.half(), diff_attrs="all")
    with pytest.raises(RuntimeError, match="int32"):
        dr.interpolate(attr, rast, tri.long())
    with pytest.raises(RuntimeError, match="contiguous"):
        dr.interpolate(_noncontig(attr), rast, tri)
    with pytest.raises(ValueError, match="diff_attrs"):
        dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs="some")
    if backend.device.type == "cuda":
        with pytest.raises(RuntimeError, match="same device"):
            dr.interpolate(attr.cpu(), rast, tri)


# ---------------------------------------------------------------------------------------- antialias
def test_antialias_errors(inputs):
    backend, ctx, pos, tri, rast, db, attr, color = inputs
    with pytest.raises(AssertionError, match="color"):
        dr.antialias(None, rast, pos, tri)
    with pytest.raises(AssertionError, match="pos"):
        dr.antialias(color, rast, POS, tri)
    with pytest.raises(AssertionError, match="topology_hash"):
        dr.antialias(color, rast, pos, tri, topology_hash=object())
    other = dr.antialias_construct_topology_hash(torch.cat([tri, tri]).contiguous())
    with pytest.raises(RuntimeError, match="topology_hash"):
        dr.antialias(color, rast, pos, tri, topology_hash=other)
    with pytest.raises(RuntimeError, match=r"color must have shape"):
        dr.antialias(color[0], rast, pos, tri)
    with pytest.raises(RuntimeError, match=r"color must have shape"):
        dr.antialias(color[..., :0].contiguous(), rast, pos, tri)
    with pytest.raises(RuntimeError, match="color and rast inputs must have same spatial dimensions"):
        dr.antialias(color[:, :3].contiguous(), rast, pos, tri)
    with pytest.raises(RuntimeError, match=r"pos must have shape \[>0, >0, 4\] or \[>0, 4\]"):
        dr.antialias(color, rast, pos[..., :3].contiguous(), tri)
    with pytest.raises(RuntimeError, match="minibatch size mismatch between inputs color, rast, pos"):
        dr.antialias(color, rast, torch.cat([pos, pos]).contiguous(), tri)
    with pytest.raises(RuntimeError, match="minibatch size mismatch between inputs color, rast"):
        dr.antialias(torch.cat([color, color]).contiguous(), rast, pos[0].contiguous(), tri)
    with pytest.raises(RuntimeError, match=r"tri must have shape \[>0, 3\]"):
        dr.antialias(color, rast, pos, tri[:0].contiguous())
    with pytest.raises(RuntimeError, match="float32"):
        dr.antialias(color.double(), rast, pos, tri)
    with pytest.raises(RuntimeError, match="int32"):
        dr.antialias(color, rast, pos, tri.long())
    with pytest.raises(RuntimeError, match="contiguous"):
        dr.antialias(_noncontig(color), rast, pos, tri)
    with pytest.raises(TypeError, match="pos_gradient_boost"):
        dr.antialias(color, rast, pos, tri, pos_gradient_boost="x")


def test_topology_hash_errors(inputs):
    backend, ctx, pos, tri, *_ = inputs
    with pytest.raises(AssertionError, match="tri"):
        dr.antialias_construct_topology_hash([[0, 1, 2]])
    with pytest.raises(RuntimeError, match=r"tri must have shape \[>0, 3\]"):
        dr.antialias_construct_topology_hash(tri[:, :2].contiguous())
    with pytest.raises(RuntimeError, match="int32"):
        dr.antialias_construct_topology_hash(tri.long())
    with pytest.raises(RuntimeError, match="contiguous"):
        dr.antialias_construct_topology_hash(_noncontig(tri))
    # triangles with negative or repeated indices are skipped, not an error
    bad = backend.tensor([[0, 1, 2], [-1, 0, 1], [2, 2, 0]], torch.int32)
    dr.antialias_construct_topology_hash(bad)
