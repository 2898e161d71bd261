"""RasterizeGLContext as an object: arguments, attributes, automatic/manual modes, threads, device
checks, context lifetime, and the error a process gets when no OpenGL is available (spec §3.2)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading

import pytest
import torch
from glsupport import require_gl

import nvdiffrast
import nvdiffrast.torch as dr

pytestmark = pytest.mark.gl

RES = (24, 32)


def _inputs(dev):
    pos = torch.tensor([[[-0.9, -0.8, 0.1, 1.0], [0.8, -0.7, 0.3, 1.2], [-0.2, 0.9, -0.2, 0.9],
                         [0.9, 0.9, 0.5, 1.5]]], dtype=torch.float32, device=dev)
    tri = torch.tensor([[0, 1, 2], [1, 3, 2]], dtype=torch.int32, device=dev)
    return pos, tri


def test_attributes(make_gl, gl_device):
    ctx = make_gl()
    assert ctx.output_db is True and ctx.mode == "automatic" and ctx.active_depth_peeler is None
    assert ctx.device.type == gl_device.type and ctx.cpp_wrapper is not None
    assert "OpenGL" in ctx.gl_info() and "RasterizeGLContext" in repr(ctx)
    manual = make_gl(output_db=False, mode="manual")
    assert manual.output_db is False and manual.mode == "manual"


@pytest.mark.parametrize("kwargs", [{"output_db": 1}, {"output_db": None}, {"mode": "auto"}, {"mode": None}])
def test_bad_arguments_assert(kwargs):
    with pytest.raises(AssertionError, match="output_db|mode"):
        dr.RasterizeGLContext(device="cpu", **kwargs)


def test_set_and_release_only_in_manual_mode(make_gl):
    ctx = make_gl()
    with pytest.raises(AssertionError, match="manual"):
        ctx.set_context()
    with pytest.raises(AssertionError, match="manual"):
        ctx.release_context()


def test_manual_mode(make_gl, gl_device):
    pos, tri = _inputs(gl_device)
    expected, _ = dr.rasterize(make_gl(), pos, tri, RES)
    ctx = make_gl(mode="manual")
    with pytest.raises(RuntimeError, match="set_context"):
        dr.rasterize(ctx, pos, tri, RES)
    ctx.set_context()
    for _ in range(3):
        got, _ = dr.rasterize(ctx, pos, tri, RES)
        assert torch.equal(got, expected)
    ctx.release_context()
    with pytest.raises(RuntimeError, match="not current on this thread"):
        dr.rasterize(ctx, pos, tri, RES)


def _in_thread(fn):
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test thread
            box["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return box


def test_manual_mode_is_bound_to_one_thread(make_gl, gl_device):
    pos, tri = _inputs(gl_device)
    ctx = make_gl(mode="manual")
    ctx.set_context()
    expected, _ = dr.rasterize(ctx, pos, tri, RES)
    # While the main thread holds it, another thread can neither take it nor rasterize with it.
    box = _in_thread(ctx.set_context)
    assert isinstance(box.get("error"), RuntimeError) and "another thread" in str(box["error"])
    box = _in_thread(lambda: dr.rasterize(ctx, pos, tri, RES))
    assert isinstance(box.get("error"), RuntimeError) and "not current on this thread" in str(box["error"])
    # Once released here, a worker thread can take it over.
    ctx.release_context()

    def worker():
        ctx.set_context()
        try:
            return dr.rasterize(ctx, pos, tri, RES)[0]
        finally:
            ctx.release_context()

    box = _in_thread(worker)
    assert "error" not in box, box.get("error")
    assert torch.equal(box["value"], expected)


def test_automatic_mode_serves_many_threads(make_gl, gl_device):
    pos, tri = _inputs(gl_device)
    shared = make_gl()
    expected, expected_db = dr.rasterize(shared, pos, tri, RES)
    results, errors = [], []

    def worker(own: bool):
        try:
            ctx = make_gl() if own else shared
            for _ in range(5):
                results.append(dr.rasterize(ctx, pos, tri, RES))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i % 2 == 1,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 30
    for rast, db in results:
        assert torch.equal(rast, expected) and torch.equal(db, expected_db)


def test_inputs_must_be_on_the_context_device():
    require_gl("cuda")  # needs both kinds of tensors
    for ctx_dev, in_dev in (("cpu", "cuda"), ("cuda", "cpu")):
        pos, tri = _inputs(in_dev)
        ctx = dr.RasterizeGLContext(device=ctx_dev)
        with pytest.raises(RuntimeError, match="device|reside"):
            dr.rasterize(ctx, pos, tri, RES)
        with pytest.raises(RuntimeError, match="must"):
            ctx.cpp_wrapper.rasterize(pos, tri, RES[0], RES[1], None, None)


def test_native_checks_reject_bad_inputs(make_gl, gl_device):
    pos, tri = _inputs(gl_device)
    native = make_gl().cpp_wrapper
    with pytest.raises(RuntimeError, match="tri must be a int32"):
        native.rasterize(pos, tri.to(torch.int64), RES[0], RES[1], None, None)
    with pytest.raises(RuntimeError, match="pos must be a contiguous"):
        native.rasterize(pos.transpose(1, 2).contiguous().transpose(1, 2), tri, RES[0], RES[1], None, None)
    with pytest.raises(RuntimeError, match="resolution"):
        native.rasterize(pos, tri, 0, RES[1], None, None)
    with pytest.raises(RuntimeError, match="ranges"):
        native.rasterize(pos[0], tri, RES[0], RES[1], None, None)


def test_contexts_can_be_created_and_destroyed_repeatedly(make_gl, gl_device):
    pos, tri = _inputs(gl_device)
    alive = [make_gl() for _ in range(3)]
    for _ in range(6):
        ctx = make_gl(output_db=False)
        dr.rasterize(ctx, pos, tri, RES)
        del ctx
    outs = [dr.rasterize(c, pos, tri, RES)[0] for c in alive]
    assert all(torch.equal(o, outs[0]) for o in outs)


def test_depth_peeler_blocks_plain_rasterize(make_gl, gl_device):
    pos, tri = _inputs(gl_device)
    ctx = make_gl()
    with dr.DepthPeeler(ctx, pos, tri, RES) as peeler:
        peeler.rasterize_next_layer()
        with pytest.raises(RuntimeError, match="depth peeling"):
            dr.rasterize(ctx, pos, tri, RES)
    dr.rasterize(ctx, pos, tri, RES)


def _run_isolated(env_update: dict) -> subprocess.CompletedProcess:
    code = textwrap.dedent(
        """
        import nvdiffrast.torch as dr
        try:
            dr.RasterizeGLContext(device="cpu")
            print("CREATED")
        except RuntimeError as exc:
            print("RUNTIMEERROR:", exc)
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(nvdiffrast.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_update)
    # cwd outside the repo: `python -c` puts cwd first on sys.path, which would shadow the installed wheel
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir())


@pytest.mark.skipif(sys.platform != "linux", reason="EGL (Linux) loader behavior")
def test_missing_egl_library_is_a_clear_runtime_error():
    from nvdiffrast import _loader

    _loader.load_gl()
    proc = _run_isolated({"NVDIFFRAST_EGL_LIBRARY": "/nonexistent/libEGL.so.1"})
    assert proc.returncode == 0, proc.stderr  # never aborts the process
    assert "RUNTIMEERROR:" in proc.stdout, proc.stdout + proc.stderr
    assert "libegl1" in proc.stdout and "NVIDIA_DRIVER_CAPABILITIES" in proc.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="EGL (Linux) driver discovery")
def test_missing_driver_is_a_clear_runtime_error():
    from nvdiffrast import _loader

    _loader.load_gl()
    # GLVND with a vendor list naming nothing that exists: libEGL loads but finds no driver.
    proc = _run_isolated({"__EGL_VENDOR_LIBRARY_FILENAMES": "/nonexistent/vendor.json", "EGL_PLATFORM": ""})
    assert proc.returncode == 0, proc.stderr
    assert "RUNTIMEERROR:" in proc.stdout, proc.stdout + proc.stderr
    assert "What was tried" in proc.stdout and "NVIDIA_DRIVER_CAPABILITIES" in proc.stdout
    assert len(proc.stdout) < 4000  # one readable message, not a dump


def test_optimizer_after_gl_context_does_not_crash():
    # Creating an optimizer imports torch._dynamo (and Triton's LLVM); with Mesa's llvmpipe already in
    # the process that crashed until RasterizeGLContext preloaded it. Run in a child: a crash is rc < 0.
    require_gl("cpu")
    code = textwrap.dedent("""
        import torch, nvdiffrast.torch as dr
        ctx = dr.RasterizeGLContext(device="cpu")
        p = torch.nn.Parameter(torch.zeros(4))
        torch.optim.Adam([p], lr=0.1).step()
        pos = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1]]], dtype=torch.float32)
        tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
        rast, _ = dr.rasterize(ctx, pos, tri, (4, 4))
        print(rast[0, 1, 0].tolist())
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(nvdiffrast.__file__)))  # the nvdiffrast under test
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=tempfile.gettempdir(), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[0.5, 0.125, 0.0, 1.0]"
