"""Loads the native modules and explains every way that can go wrong.

``import nvdiffrast.torch`` calls :func:`ensure_loaded`. Each failure becomes an ``ImportError`` that
names the cause and the fix: the wheel was built for another torch minor or CUDA major, the NVIDIA
driver is too old, the GPU's architecture is not compiled in, a shared library / DLL is missing.
A machine with no GPU (or no driver) still imports: CPU tensors use the reference backend.
Nothing here ever invokes a compiler.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Optional

_cache: dict[str, ModuleType] = {}
_errors: dict[str, ImportError] = {}
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))

# Oldest driver (as cuDriverGetVersion reports it) each CUDA major runs on through minor-version
# compatibility; the numbers follow NVIDIA's CUDA compatibility tables.
MIN_DRIVER_FOR_CUDA_MAJOR = {11: 11000, 12: 12000, 13: 13000}
DRIVER_RELEASE_FOR_CUDA_MAJOR = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}

INDEX_HINT = (
    "Install the nvdiffrast wheel built for your torch and CUDA: "
    "pip install --force-reinstall nvdiffrast --extra-index-url <index>/{variant}/simple"
)


class BuildMismatchError(ImportError):
    """The installed wheel does not fit the running torch / CUDA / GPU."""


@dataclass
class RuntimeFacts:
    """What the running process offers (gathered by :func:`runtime_facts`; tests build their own)."""

    torch_version: str
    torch_cuda: Optional[str]
    driver_version: Optional[int] = None  # cuDriverGetVersion, e.g. 13000; None = no driver
    gpus: list[tuple[str, tuple[int, int]]] = field(default_factory=list)  # (name, (major, minor))


@dataclass
class Problem:
    severity: str  # "error" | "warning"
    message: str


def build_info() -> dict[str, Any]:
    from . import build_info as _bi

    return _bi()


def _variant_for(torch_version: str, torch_cuda: Optional[str]) -> str:
    mm = torch_version.split("+")[0].split(".")[:2]
    cu = "cu" + torch_cuda.replace(".", "") if torch_cuda else "cpu"
    return f"pt{mm[0]}{mm[1]}{cu}"


def _driver_lib() -> Optional[ctypes.CDLL]:
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def driver_version() -> Optional[int]:
    """The CUDA driver's version (e.g. 13000) read through the driver library, or None."""
    lib = _driver_lib()
    v = ctypes.c_int(0)
    try:
        if lib is not None and lib.cuDriverGetVersion(ctypes.byref(v)) == 0:
            return v.value
    except AttributeError:
        pass
    return None


def driver_gpu_count() -> int:
    """GPUs the driver itself sees (cuInit + cuDeviceGetCount), independent of the CUDA runtime's
    version: a driver too old for torch's runtime still counts its GPUs here. 0 without a driver."""
    lib = _driver_lib()
    n = ctypes.c_int(0)
    try:
        if lib is None or lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(n)) != 0:
            return 0
    except AttributeError:
        return 0
    return n.value


def runtime_facts() -> RuntimeFacts:
    import torch

    gpus: list[tuple[str, tuple[int, int]]] = []
    # A driver library without any GPU (e.g. a CUDA toolkit package on a CPU machine) is no driver.
    drv = driver_version() if driver_gpu_count() > 0 else None
    if torch.version.cuda and drv is not None:
        try:
            for i in range(torch.cuda.device_count()):
                gpus.append((torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i)))
        except Exception:  # noqa: BLE001 - a broken driver shows up as the driver check below
            gpus = []
    return RuntimeFacts(torch.__version__, torch.version.cuda, drv, gpus)


def _cc_num(cc: tuple[int, int]) -> int:
    return cc[0] * 10 + cc[1]


def _arch_num(name: str) -> int:
    return int(re.sub(r"[^0-9]", "", name.split("_", 1)[1]))


def diagnose(info: dict[str, Any], facts: RuntimeFacts) -> list[Problem]:
    """Compare the build info with the running process; return the problems found (pure function)."""
    problems: list[Problem] = []
    if not info:
        return [Problem("error", "nvdiffrast/_build_info.json is missing: this is not a built nvdiffrast "
                                 "installation. Install a prebuilt wheel from the nvdiffrast index.")]
    want_variant = _variant_for(facts.torch_version, facts.torch_cuda)
    hint = INDEX_HINT.format(variant=want_variant)
    running_minor = ".".join(facts.torch_version.split("+")[0].split(".")[:2])
    built_minor = info.get("torch_minor", "?")
    if built_minor != running_minor:
        problems.append(Problem("error", (
            f"this nvdiffrast wheel ({info.get('version')}) was built for torch {built_minor}, but torch "
            f"{facts.torch_version} is installed. Binary compatibility holds only within one torch minor. {hint}")))
    built_cuda = str(info.get("cuda_version", ""))
    if not facts.torch_cuda:
        problems.append(Problem("warning", (
            f"the installed torch {facts.torch_version} has no CUDA support; only CPU tensors will work "
            f"(this wheel was built for CUDA {built_cuda}).")))
    elif built_cuda.split(".")[0] != facts.torch_cuda.split(".")[0]:
        problems.append(Problem("error", (
            f"this nvdiffrast wheel was built with CUDA {built_cuda}, but torch uses CUDA {facts.torch_cuda}; "
            f"the CUDA major versions must match. {hint}")))
    if facts.torch_cuda and facts.driver_version is not None:
        major = int(built_cuda.split(".")[0]) if built_cuda[:1].isdigit() else 0
        need = MIN_DRIVER_FOR_CUDA_MAJOR.get(major)
        if need and facts.driver_version < need:
            have = f"{facts.driver_version // 1000}.{(facts.driver_version % 1000) // 10}"
            problems.append(Problem("error", (
                f"the NVIDIA driver supports CUDA {have}, but this wheel needs a driver for CUDA {major}.x "
                f"(release {DRIVER_RELEASE_FOR_CUDA_MAJOR[major]} or newer). Update the NVIDIA driver, or "
                f"install torch and nvdiffrast built for an older CUDA (e.g. the cu118 variant).")))
    sass = [_arch_num(a) for a in info.get("sass", [])]
    ptx = [_arch_num(a) for a in info.get("ptx", [])]
    for name, cc in facts.gpus:
        num = _cc_num(cc)
        if num in sass:
            continue
        usable_ptx = [p for p in ptx if p <= num]
        if usable_ptx:
            problems.append(Problem("warning", (
                f"GPU '{name}' (sm_{num}) has no native code in this wheel (built for "
                f"{', '.join(info.get('sass', []))}); the driver will JIT-compile PTX compute_{max(usable_ptx)} "
                f"on first use, which is slow once and may be slower to run.")))
        else:
            problems.append(Problem("error", (
                f"GPU '{name}' (compute capability {cc[0]}.{cc[1]}) is not supported by this wheel, which "
                f"holds code for {', '.join(info.get('sass', [])) or 'no architecture'} and PTX "
                f"{', '.join(info.get('ptx', [])) or 'none'}. Use a wheel whose arch list includes sm_{num}.")))
    return problems


def _elf_needed(path: str) -> list[str]:
    """DT_NEEDED entries of an ELF shared object (little-endian 64-bit), read without tools."""
    import struct

    with open(path, "rb") as fh:
        data = fh.read()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return []
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    out = []
    for sh in sections:
        if sh[1] != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[sh[6]]
        str_off = strtab[4]
        for off in range(sh[4], sh[4] + sh[5], 16):
            tag, val = struct.unpack_from("<qQ", data, off)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", str_off + val)
                out.append(data[str_off + val:end].decode())
    return out


def module_path(name: str) -> Optional[str]:
    """File of the native module ``nvdiffrast.<name>`` (without importing it)."""
    import importlib.machinery as m

    for f in sorted(os.listdir(_PKG_DIR)):
        if f.startswith(name + ".") and any(f.endswith(s) for s in m.EXTENSION_SUFFIXES):
            return os.path.join(_PKG_DIR, f)
    return None


def dependencies(name: str) -> list[str]:
    """The shared libraries / DLLs the native module ``nvdiffrast.<name>`` links against."""
    path = module_path(name)
    if path is None:
        return []
    if path.endswith(".pyd"):
        from ._pe import pe_imports

        return pe_imports(path)
    return _elf_needed(path)


def _explain_load_failure(name: str, exc: BaseException) -> ImportError:
    path = module_path(name)
    if path is None:
        return ImportError(
            f"nvdiffrast.{name} is not in the installation ({_PKG_DIR}); the wheel is incomplete or this is a "
            "source checkout. Install a prebuilt nvdiffrast wheel (nvdiffrast never compiles on import).")
    text = str(exc)
    missing = None
    m = re.search(r"([\w.+-]+\.so[.\d]*): cannot open shared object file", text)
    if m:
        missing = m.group(1)
    if missing is None and sys.platform == "win32":
        from ._pe import find_missing_dlls

        miss = find_missing_dlls(path)
        missing = ", ".join(miss) if miss else None
    deps = dependencies(name)
    if missing:
        fix = {
            "libcudart": "torch's CUDA runtime is missing: reinstall torch (its nvidia-cuda-runtime dependency).",
            "libc10": "torch's libraries are missing: reinstall torch for this Python.",
            "libtorch": "torch's libraries are missing: reinstall torch for this Python.",
        }
        hint = next((v for k, v in fix.items() if missing.startswith(k)), "install the package that provides it")
        return ImportError(
            f"nvdiffrast.{name} ({os.path.basename(path)}) cannot load because the shared library '{missing}' "
            f"was not found. It links against: {', '.join(deps)}. Fix: {hint}")
    if "undefined symbol" in text or "procedure could not be found" in text.lower():
        return BuildMismatchError(
            f"nvdiffrast.{name} does not match the installed torch ({text}). "
            + INDEX_HINT.format(variant=_variant_for(*_torch_versions())))
    return ImportError(f"nvdiffrast.{name} failed to load: {text}. It links against: {', '.join(deps)}")


def _torch_versions() -> tuple[str, Optional[str]]:
    import torch

    return torch.__version__, torch.version.cuda


def _load(name: str) -> ModuleType:
    if name in _cache:
        return _cache[name]
    if name in _errors:
        raise _errors[name]
    import torch  # noqa: F401  - torch's shared libraries must be loaded first

    try:
        mod = importlib.import_module(f"nvdiffrast.{name}")
    except ImportError as exc:
        err = _explain_load_failure(name, exc)
        _errors[name] = err
        raise err from exc
    _cache[name] = mod
    return mod


_checked = False


def check_build() -> None:
    """Run :func:`diagnose` once: raise BuildMismatchError on errors, warn on warnings."""
    global _checked
    if _checked:
        return
    problems = diagnose(build_info(), runtime_facts())
    errors = [p.message for p in problems if p.severity == "error"]
    if errors:
        raise BuildMismatchError("nvdiffrast cannot be used here:\n  - " + "\n  - ".join(errors))
    for p in problems:
        warnings.warn("nvdiffrast: " + p.message, RuntimeWarning, stacklevel=3)
    _checked = True


def preload_llvm_users() -> None:
    """Import torch's compiler stack (Triton, which carries its own LLVM) before a GL driver loads.

    With Mesa's llvmpipe in the process, importing ``torch._dynamo`` *after* the GL driver was loaded
    crashed (two LLVMs in one process; it happens e.g. when an optimizer is created after a GL
    context). Called before anything initializes EGL/WGL: ``RasterizeGLContext`` and the doctor.
    """
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # noqa: BLE001 - an optional ordering fix, never fatal
        pass


def load_cuda() -> ModuleType:
    """Import ``nvdiffrast._C`` (registers ``torch.ops.nvdiffrast.*``) or raise an explaining ImportError."""
    check_build()
    return _load("_C")


def load_gl() -> ModuleType:
    """Import ``nvdiffrast._gl`` or raise an explaining ImportError."""
    check_build()
    return _load("_gl")


def is_source_checkout() -> bool:
    """True when imported from the repository (setup.py and csrc/ beside the package)."""
    parent = os.path.dirname(_PKG_DIR)
    return os.path.isfile(os.path.join(parent, "setup.py")) and os.path.isdir(os.path.join(parent, "csrc"))


def ensure_loaded() -> None:
    """Called by ``import nvdiffrast.torch``: both native modules must load (GL needs no driver to load).

    In a source checkout a module that was not built in place is tolerated (the CPU reference backend
    works without any); CUDA and GL calls then raise the explaining ImportError of
    :func:`load_cuda` / :func:`load_gl`. A module that is present must load.
    """
    dev = is_source_checkout()
    if not dev or module_path("_C") is not None:
        load_cuda()
    if build_info().get("gl_module", True) and (not dev or module_path("_gl") is not None):
        load_gl()
