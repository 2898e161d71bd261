"""Builds nvdiffrast's two native modules ahead of time.

* ``nvdiffrast._C``  — CUDA kernels (csrc/kernels) + torch dispatcher bindings (csrc/torch).
* ``nvdiffrast._gl`` — the OpenGL rasterizer (csrc/gl); GL/EGL/WGL resolved at run time.

Environment knobs (all optional):
  TORCH_CUDA_ARCH_LIST   arch list; default: what the installed torch builds for, + PTX of the newest
  NVDIFFRAST_LOCAL_LABEL local version label (default ``pt{maj}{min}cu{NNN}`` from the build torch;
                         empty string for none)
  NVDIFFRAST_VARIANT     variant name recorded in build info (default = the label)
  NVDIFFRAST_NO_GL=1     skip the OpenGL module
  MAX_JOBS               parallel compile jobs (default: sized by free memory)
  SOURCE_DATE_EPOCH      build time recorded in build info
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import os
import platform
import subprocess
import sys
import sysconfig

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
BASE_VERSION = "0.5.0"


def _log(msg: str) -> None:
    print(f"[nvdiffrast setup] {msg}", flush=True)


# torch's CUDA_HOME guess from an `nvcc` wrapper on PATH can point at /usr/local; prefer a real toolkit.
if not os.environ.get("CUDA_HOME") and not os.environ.get("CUDA_PATH"):
    for cand in ("/usr/local/cuda",):
        if os.path.isfile(os.path.join(cand, "include", "cuda_runtime.h")):
            os.environ["CUDA_HOME"] = cand
            break

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

TORCH_MM = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
CUDA_VER = torch.version.cuda  # e.g. "13.0"
if CUDA_VER is None:
    sys.exit("nvdiffrast: the torch in the build environment has no CUDA; install a CUDA build of torch.")
CU_TAG = "cu" + CUDA_VER.replace(".", "")
LIMITED_API = TORCH_MM >= (2, 6)


def _default_arch_list() -> str:
    """What the build torch targets (sm_XX list), ending with +PTX of the newest arch."""
    arches = []
    for a in torch.cuda.get_arch_list():  # e.g. ['sm_75', 'sm_80', ..., 'sm_120']
        if a.startswith("sm_"):
            num = a[3:].rstrip("a")
            arches.append(f"{int(num) // 10}.{int(num) % 10}")
    if not arches:
        sys.exit("nvdiffrast: cannot infer the arch list from torch; set TORCH_CUDA_ARCH_LIST.")
    arches = sorted(set(arches), key=lambda s: tuple(int(p) for p in s.split(".")))
    return ";".join(arches[:-1] + [arches[-1] + "+PTX"])


ARCH_LIST = os.environ.get("TORCH_CUDA_ARCH_LIST") or _default_arch_list()
os.environ["TORCH_CUDA_ARCH_LIST"] = ARCH_LIST

LABEL = os.environ.get("NVDIFFRAST_LOCAL_LABEL", f"pt{TORCH_MM[0]}{TORCH_MM[1]}{CU_TAG}")
VERSION = BASE_VERSION + (f"+{LABEL}" if LABEL else "")

if "MAX_JOBS" not in os.environ:
    try:
        with open("/proc/meminfo") as fh:
            avail_kb = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable"))
        by_mem = max(1, avail_kb // (3 * 1024 * 1024))  # nvcc + cicc peak near 3 GB per job
    except (OSError, StopIteration):
        by_mem = 2
    os.environ["MAX_JOBS"] = str(max(1, min(os.cpu_count() or 1, by_mem)))


def _git_commit() -> str:
    if os.environ.get("NVDIFFRAST_GIT_COMMIT"):  # set by `ci build` when it builds from a source snapshot
        return os.environ["NVDIFFRAST_GIT_COMMIT"]
    try:
        out = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=HERE, stderr=subprocess.DEVNULL)
        return out.decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _compiler() -> str:
    try:
        nvcc = os.path.join(cpp_extension.CUDA_HOME or "", "bin", "nvcc")
        out = subprocess.check_output([nvcc, "--version"]).decode()
        nv = out.strip().splitlines()[-1]
    except (OSError, subprocess.CalledProcessError):
        nv = "nvcc unknown"
    return f"{nv}; host {platform.python_compiler()}"


def _arch_fields(arch_list: str) -> tuple[list[str], list[str]]:
    sass, ptx = [], []
    for item in arch_list.replace(" ", ";").split(";"):
        if not item:
            continue
        base = item.replace("+PTX", "")
        num = base.replace(".", "")
        sass.append(f"sm_{num}")
        if item.endswith("+PTX"):
            ptx.append(f"compute_{num}")
    return sass, ptx


def write_build_info() -> dict:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch else _dt.datetime.now(_dt.timezone.utc)
    sass, ptx = _arch_fields(ARCH_LIST)
    info = {
        "version": VERSION,
        "variant": os.environ.get("NVDIFFRAST_VARIANT", LABEL or "local"),
        "torch_version": torch.__version__,
        "torch_minor": f"{TORCH_MM[0]}.{TORCH_MM[1]}",
        "cuda_version": CUDA_VER,
        "arch_list": ARCH_LIST,
        "sass": sass,
        "ptx": ptx,
        "python_tag": "cp310-abi3" if LIMITED_API else f"cp{sys.version_info[0]}{sys.version_info[1]}",
        "limited_api": LIMITED_API,
        "platform": sysconfig.get_platform(),
        "compiler": _compiler(),
        "git_commit": _git_commit(),
        "build_time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gl_module": os.environ.get("NVDIFFRAST_NO_GL", "0") != "1",
    }
    with open(os.path.join(HERE, "nvdiffrast", "_build_info.json"), "w") as fh:
        json.dump(info, fh, indent=1, sort_keys=True)
        fh.write("\n")
    return info


def _rel(paths: list[str]) -> list[str]:
    return sorted(os.path.relpath(p, HERE) for p in paths)


IS_WIN = sys.platform == "win32"
# The language standard is torch's choice (C++17 up to torch 2.9, C++20 after): its headers decide.
# Kernels under csrc/kernels stay C++17 so every toolkit from CUDA 11.8 on compiles them.
# No -fvisibility=hidden: with gcc 13 it made template statics of libstdc++ (locale facet ids) local to
# the module, and ostream number formatting then crashed (seen on the GPU machine).
CXX_FLAGS = ["/O2"] if IS_WIN else ["-O3"]
NVCC_FLAGS = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
DEFINES = [("Py_LIMITED_API", "0x030A0000")] if LIMITED_API else []

# Link the shared C++ runtime by file name (Linux). A compiler wrapper that links libstdc++ statically (one
# was the default CXX of our GPU machine; a plain -lstdc++ stayed static there) gives the module a private
# copy of the runtime, and errors raised in the bindings crashed while formatting their messages. Named
# before the driver's own libraries, the shared object satisfies every reference; ci.repair checks it.
CXX_RUNTIME_LINK = [] if IS_WIN else ["-Wl,--push-state,--no-as-needed", "-l:libstdc++.so.6", "-Wl,--pop-state"]

ext_modules = []
cuda_sources = _rel(
    [p for pat in ("kernels/*.cu", "torch/*.cpp", "torch/*.cu") for p in glob.glob(os.path.join(HERE, "csrc", pat))]
)
ext_modules.append(
    cpp_extension.CUDAExtension(
        name="nvdiffrast._C",
        sources=cuda_sources,
        include_dirs=[os.path.join(HERE, "csrc")],
        define_macros=DEFINES,
        extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
        extra_link_args=CXX_RUNTIME_LINK,
        py_limited_api=LIMITED_API,
    )
)

if os.environ.get("NVDIFFRAST_NO_GL", "0") != "1":
    # Platform-specific files carry _egl / _wgl in their names; everything else is shared.
    skip = "_egl" if IS_WIN else "_wgl"
    gl_sources = [p for p in glob.glob(os.path.join(HERE, "csrc", "gl", "*.cpp")) if skip not in os.path.basename(p)]
    gl_libs = ["user32", "gdi32"] if IS_WIN else ["dl"]
    ext_modules.append(
        cpp_extension.CUDAExtension(
            name="nvdiffrast._gl",
            sources=_rel(gl_sources),
            include_dirs=[os.path.join(HERE, "csrc")],
            define_macros=DEFINES,
            libraries=gl_libs,
            extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
            # Resolve every symbol at load time, before a GL driver enters the process: lazily bound
            # C++ runtime calls made after the NVIDIA GL driver loaded crashed (seen on an H200).
            extra_link_args=[] if IS_WIN else ["-Wl,-z,now", *CXX_RUNTIME_LINK],
            py_limited_api=LIMITED_API,
        )
    )

info = write_build_info()
_log(f"version {VERSION}; torch {torch.__version__}; CUDA {CUDA_VER}; arch list {ARCH_LIST}; "
     f"MAX_JOBS={os.environ['MAX_JOBS']}; limited API={LIMITED_API}")

options = {"bdist_wheel": {"py_limited_api": "cp310"}} if LIMITED_API else {}

setup(
    name="nvdiffrast",
    version=VERSION,
    description="Differentiable rasterization for PyTorch (CUDA and OpenGL), prebuilt; nvdiffrast-compatible API",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    classifiers=["Programming Language :: Python :: 3", "Operating System :: POSIX :: Linux",
                 "Operating System :: Microsoft :: Windows", "Environment :: GPU :: NVIDIA CUDA"],
    packages=find_packages(include=["nvdiffrast", "nvdiffrast.*"]),
    package_data={"nvdiffrast": ["_build_info.json"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    install_requires=[f"torch>={TORCH_MM[0]}.{TORCH_MM[1]},<{TORCH_MM[0]}.{TORCH_MM[1] + 1}"],
    python_requires=">=3.10" if LIMITED_API else f">={sys.version_info[0]}.{sys.version_info[1]}",
    options=options,
    zip_safe=False,
)
