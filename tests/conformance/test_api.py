"""Package surface: exported names, contexts, device handling, log level."""

from __future__ import annotations

import inspect

import pytest
import torch

import nvdiffrast.torch as dr

EXPORTS = [
    "RasterizeCudaContext", "RasterizeGLContext", "rasterize", "DepthPeeler", "interpolate", "texture",
    "texture_construct_mip", "antialias", "antialias_construct_topology_hash", "get_log_level", "set_log_level",
]


def test_exports_and_ops_module():
    assert dr.__all__ == EXPORTS
    assert "ops" in dir(dr)
    import nvdiffrast.torch.ops as ops

    for name in EXPORTS:
        assert getattr(dr, name) is getattr(ops, name)


@pytest.mark.parametrize(
    "func, params",
    [
        ("rasterize", ["glctx", "pos", "tri", "resolution", "ranges", "grad_db"]),
        ("DepthPeeler", ["glctx", "pos", "tri", "resolution", "ranges", "grad_db"]),
        ("interpolate", ["attr", "rast", "tri", "rast_db", "diff_attrs"]),
        ("antialias", ["color", "rast", "pos", "tri", "topology_hash", "pos_gradient_boost"]),
        ("antialias_construct_topology_hash", ["tri"]),
        ("RasterizeCudaContext", ["device"]),
        ("set_log_level", ["level"]),
    ],
)
def test_signatures(func, params):
    sig = inspect.signature(getattr(dr, func))
    assert list(sig.parameters) == params
    defaults = {k: v.default for k, v in sig.parameters.items() if v.default is not inspect.Parameter.empty}
    expected = {
        "rasterize": {"ranges": None, "grad_db": True},
        "DepthPeeler": {"ranges": None, "grad_db": True},
        "interpolate": {"rast_db": None, "diff_attrs": None},
        "antialias": {"topology_hash": None, "pos_gradient_boost": 1.0},
        "RasterizeCudaContext": {"device": None},
    }.get(func, {})
    assert defaults == expected


def test_context_attributes_and_devices():
    for arg in ("cpu", torch.device("cpu")):
        ctx = dr.RasterizeCudaContext(device=arg)
        assert ctx.device == torch.device("cpu")
        assert ctx.output_db is True and ctx.active_depth_peeler is None
        assert ctx.cpp_wrapper is not None
    default = dr.RasterizeCudaContext()
    expect = "cuda" if torch.cuda.is_available() else "cpu"
    assert default.device.type == expect
    for bad in ("tpu", "not a device", True, 1.5):
        with pytest.raises(ValueError, match="device"):
            dr.RasterizeCudaContext(device=bad)
    if not torch.cuda.is_available():
        for arg in ("cuda", "cuda:0", 0):
            with pytest.raises(RuntimeError, match="CUDA is not available"):
                dr.RasterizeCudaContext(device=arg)
    else:
        with pytest.raises(RuntimeError, match="does not exist"):
            dr.RasterizeCudaContext(device=torch.cuda.device_count())


def test_topology_hash_object():
    h = dr.antialias_construct_topology_hash(torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32))
    assert type(h).__name__ == "TopologyHashWrapper"
    assert not isinstance(h, torch.Tensor)


def test_log_level_roundtrip():
    old = dr.get_log_level()
    assert isinstance(old, int) and 0 <= old <= 3
    try:
        for level in (0, 2, 3, 1):
            dr.set_log_level(level)
            assert dr.get_log_level() == level
    finally:
        dr.set_log_level(old)
    with pytest.raises(TypeError, match="level"):
        dr.set_log_level("info")
