"""``python -m nvdiffrast.doctor``: what this machine offers and whether nvdiffrast works on it.

Prints the OS, Python, torch and its CUDA, the driver, the GPUs, EGL/OpenGL, the build info, whether
each native module loads and whether each backend renders a tiny scene correctly. Exits 0 when
everything present works, 1 with a diagnosis otherwise. On Windows it walks the import tables of the
native modules and names any DLL missing from the search path.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import sys
import traceback
from typing import Any, Callable, Optional

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, status: str, what: str, detail: str = "") -> None:
        self.rows.append((status, what, detail))
        print(f"[{status:>4}] {what}" + (f": {detail}" if detail else ""), flush=True)

    @property
    def failed(self) -> list[tuple[str, str, str]]:
        return [r for r in self.rows if r[0] == FAIL]


def egl_probe() -> tuple[str, str]:
    """EGL availability through the system loader (independent of nvdiffrast._gl)."""
    if sys.platform == "win32":
        try:
            ctypes.WinDLL("opengl32.dll")
            return OK, "opengl32.dll present (WGL)"
        except OSError as exc:
            return FAIL, f"opengl32.dll cannot be loaded: {exc}"
    try:
        egl = ctypes.CDLL("libEGL.so.1")
    except OSError:
        return WARN, "libEGL.so.1 not found: the OpenGL backend is unavailable (install libegl1, or run the " \
                     "container with NVIDIA_DRIVER_CAPABILITIES including 'graphics')"
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    addr = egl.eglGetProcAddress(b"eglGetPlatformDisplayEXT")
    egl.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
    egl.eglQueryString.restype = ctypes.c_char_p
    egl.eglQueryString.argtypes = [ctypes.c_void_p, ctypes.c_int]
    displays = []
    if addr:
        get_disp = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p)(addr)
        displays.append(("surfaceless", get_disp(0x31DD, None, None)))
    egl.eglGetDisplay.restype = ctypes.c_void_p
    displays.append(("default", egl.eglGetDisplay(None)))
    for label, disp in displays:
        if not disp:
            continue
        major, minor = ctypes.c_int(), ctypes.c_int()
        if egl.eglInitialize(disp, ctypes.byref(major), ctypes.byref(minor)):
            vendor = (egl.eglQueryString(disp, 0x3053) or b"?").decode()
            apis = (egl.eglQueryString(disp, 0x308D) or b"?").decode()
            return OK, f"EGL {major.value}.{minor.value} ({label} display), vendor {vendor}, APIs {apis}"
    return WARN, "libEGL.so.1 loads but no EGL display initializes (no GPU/Mesa driver for EGL)"


def _triangle_case(device: str) -> tuple[Any, Any]:
    import torch

    pos = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]]], device=device)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=device)
    return pos, tri


def render_check(make_ctx: Callable[[], Any], device: str) -> str:
    """Rasterize the spec's 4x4 example and interpolate; compare with the hand-computed values."""
    import torch

    import nvdiffrast.torch as dr

    pos, tri = _triangle_case(device)
    ctx = make_ctx()
    rast, db = dr.rasterize(ctx, pos, tri, resolution=[4, 4])
    px = rast[0, 1, 0].cpu()
    want = torch.tensor([0.5, 0.125, 0.0, 1.0])
    if not torch.allclose(px, want, atol=1e-5):
        raise AssertionError(f"rast[0,1,0] = {px.tolist()}, expected {want.tolist()}")
    attr = torch.tensor([[100.0], [200.0], [300.0]], device=device)
    out, _ = dr.interpolate(attr, rast, tri)
    val = float(out[0, 1, 0, 0])
    if abs(val - 187.5) > 1e-3:  # 0.5*100 + 0.125*200 + 0.375*300
        raise AssertionError(f"interpolate gave {val}, expected 187.5")
    return f"4x4 triangle: u,v,z,id = {[round(float(x), 4) for x in px]}; interpolate = {val:.3f}"


def main(argv: Optional[list[str]] = None) -> int:
    rep = Report()
    print("nvdiffrast doctor\n-----------------")
    rep.add(OK, "OS", f"{platform.platform()} ({platform.machine()})")
    rep.add(OK, "Python", f"{sys.version.split()[0]} at {sys.executable}")
    try:
        import torch
    except ImportError as exc:
        rep.add(FAIL, "torch", f"not importable: {exc}. Install torch first.")
        return _finish(rep)
    rep.add(OK, "torch", f"{torch.__version__}, CUDA {torch.version.cuda or 'none (CPU build)'}")

    from nvdiffrast import _loader, build_info

    drv = _loader.driver_version()
    n_drv = _loader.driver_gpu_count()
    if drv and n_drv:
        rep.add(OK, "NVIDIA driver", f"supports CUDA {drv // 1000}.{(drv % 1000) // 10}; {n_drv} GPU(s)")
    elif drv:
        rep.add(WARN, "NVIDIA driver", "the driver library is installed but sees no GPU (CPU tensors only)")
        drv = None
    else:
        rep.add(WARN, "NVIDIA driver", "not found (CPU tensors only)")
    gpus: list[tuple[str, tuple[int, int]]] = []
    if drv and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            cc = torch.cuda.get_device_capability(i)
            gpus.append((torch.cuda.get_device_name(i), cc))
            rep.add(OK, f"GPU {i}", f"{gpus[-1][0]}, compute capability {cc[0]}.{cc[1]}")
    elif drv:
        rep.add(WARN, "GPU", "driver present but torch sees no GPU (CUDA_VISIBLE_DEVICES? container without --gpus?)")
    _loader.preload_llvm_users()  # before the EGL probe loads a GL driver (see the function's note)
    st, detail = egl_probe()
    rep.add(st, "EGL/OpenGL", detail)

    info = build_info()
    rep.add(OK if info else FAIL, "build info", json.dumps(info, sort_keys=True) if info else "missing")
    for p in _loader.diagnose(info, _loader.runtime_facts()):
        rep.add(FAIL if p.severity == "error" else WARN, "compatibility", p.message)

    if sys.platform == "win32":
        from nvdiffrast._pe import find_missing_dlls

        for name in ("_C", "_gl"):
            path = _loader.module_path(name)
            if path:
                miss = find_missing_dlls(path)
                rep.add(FAIL if miss else OK, f"DLLs of {os.path.basename(path)}",
                        ("missing: " + "; ".join(miss)) if miss else "all found on the DLL search path")

    loaded: dict[str, bool] = {}
    for name, fn in (("_C", _loader.load_cuda), ("_gl", _loader.load_gl)):
        if name == "_gl" and info and not info.get("gl_module", True):
            rep.add(SKIP, f"module nvdiffrast.{name}", "built without the OpenGL module")
            continue
        try:
            fn()
            loaded[name] = True
            deps = ", ".join(_loader.dependencies(name))
            rep.add(OK, f"module nvdiffrast.{name}", f"loads ({_loader.module_path(name)}; links {deps})")
        except ImportError as exc:
            loaded[name] = False
            rep.add(FAIL, f"module nvdiffrast.{name}", str(exc))

    try:
        import nvdiffrast.torch as dr
    except ImportError as exc:
        rep.add(FAIL, "import nvdiffrast.torch", str(exc))
        return _finish(rep)

    def attempt(label: str, fn: Callable[[], str]) -> None:
        try:
            rep.add(OK, label, fn())
        except Exception as exc:  # noqa: BLE001 - the doctor reports every failure
            rep.add(FAIL, label, f"{type(exc).__name__}: {exc}")
            if os.environ.get("NVDR_DOCTOR_TRACE"):
                traceback.print_exc()

    attempt("render: reference backend (CPU)",
            lambda: render_check(lambda: dr.RasterizeCudaContext(device="cpu"), "cpu"))
    if gpus and loaded.get("_C"):
        attempt("render: CUDA backend", lambda: render_check(lambda: dr.RasterizeCudaContext(), "cuda"))
    else:
        rep.add(SKIP, "render: CUDA backend", "no GPU" if not gpus else "nvdiffrast._C did not load")
    if loaded.get("_gl"):
        gl_dev = "cuda" if gpus else "cpu"
        if st == OK:
            attempt(f"render: OpenGL backend ({gl_dev} tensors)",
                    lambda: render_check(lambda: dr.RasterizeGLContext(device=gl_dev), gl_dev))
        else:
            rep.add(SKIP, "render: OpenGL backend", "no usable EGL/OpenGL driver (see above)")
    return _finish(rep)


def _finish(rep: Report) -> int:
    print("-----------------")
    if rep.failed:
        print("Diagnosis: nvdiffrast is NOT working here:")
        for _, what, detail in rep.failed:
            print(f"  - {what}: {detail}")
        return 1
    print("Diagnosis: everything present works.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
