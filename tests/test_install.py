"""The installed wheel: imports fast with no compiler around, writes nothing, links nothing it shouldn't."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

import nvdiffrast
from nvdiffrast import _loader

WHEEL = os.environ.get("NVDR_TEST_WHEEL")
needs_wheel = pytest.mark.skipif(not WHEEL, reason="NVDR_TEST_WHEEL not set (python -m ci test sets it)")
needs_built = pytest.mark.skipif(_loader.module_path("_C") is None, reason="nvdiffrast._C not built here")


def _scrubbed_env(ext_dir: str) -> dict[str, str]:
    """PATH holding only the interpreter's own bin folder: no nvcc, gcc, cc, c++ (checked below)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH", "CC", "CXX")}
    env["PATH"] = os.path.dirname(sys.executable)
    env["TORCH_EXTENSIONS_DIR"] = ext_dir
    for tool in ("nvcc", "gcc", "cc", "c++", "g++"):
        assert shutil.which(tool, path=env["PATH"]) is None, f"{tool} still reachable"
    return env


@needs_built
def test_import_without_compiler_is_fast_and_writes_nothing() -> None:
    with tempfile.TemporaryDirectory() as ext_dir, tempfile.TemporaryDirectory() as cwd:
        code = (
            "import time, json; t0 = time.perf_counter(); import torch; t1 = time.perf_counter();"
            "import nvdiffrast.torch as dr; t2 = time.perf_counter();"
            "import nvdiffrast._C, nvdiffrast._gl;"
            "print(json.dumps({'torch_s': t1 - t0, 'nvdiffrast_s': t2 - t1}))"
        )
        r = subprocess.run([sys.executable, "-c", code], env=_scrubbed_env(ext_dir), cwd=cwd,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        times = json.loads(r.stdout.strip().splitlines()[-1])
        print("import times:", times)
        assert times["nvdiffrast_s"] < 2.0, times
        assert os.listdir(ext_dir) == [], "something was written into TORCH_EXTENSIONS_DIR"


@needs_built
def test_doctor_reports_and_renders_on_cpu() -> None:
    # cwd outside the repo so that `-m` does not put the source tree ahead of the installed wheel
    root = os.path.dirname(os.path.dirname(os.path.abspath(nvdiffrast.__file__)))  # the nvdiffrast under test
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "nvdiffrast.doctor"], capture_output=True, text=True, timeout=300,
                       cwd=tempfile.gettempdir(), env=env)
    print(r.stdout[-4000:], r.stderr[-2000:])
    assert "[  ok] render: reference backend (CPU)" in r.stdout
    assert "[  ok] module nvdiffrast._C" in r.stdout
    assert "[  ok] module nvdiffrast._gl" in r.stdout
    assert r.returncode == 0, "doctor found a problem on this machine"


GL_LIBS = re.compile(r"^lib(GL|EGL|OpenGL|GLX|GLdispatch|GLESv\d)\b")
ALLOWED = re.compile(
    r"^(libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libstdc\+\+\.so|libgcc_s\.so|ld-linux"
    r"|libtorch[\w]*\.so|libc10[\w]*\.so|libcudart\.so)"
)


@needs_wheel
@pytest.mark.skipif(sys.platform == "win32", reason="Linux wheel gate")
def test_wheel_links_only_allowed_libraries(tmp_path: Path) -> None:
    with zipfile.ZipFile(WHEEL) as zf:
        sos = [n for n in zf.namelist() if n.endswith(".so")]
        assert any(n.startswith("nvdiffrast/_C") for n in sos) and any(n.startswith("nvdiffrast/_gl") for n in sos)
        assert not [n for n in zf.namelist() if ".libs/" in n], "the wheel vendors libraries; it should not"
        zf.extractall(tmp_path)
    for so in sos:
        needed = _loader._elf_needed(str(tmp_path / so))
        assert not [n for n in needed if GL_LIBS.match(n)], f"{so} links GL: {needed}"
        assert [n for n in needed if not ALLOWED.match(n)] == [], f"{so} needs unexpected libraries: {needed}"


@needs_wheel
@pytest.mark.skipif(shutil.which("auditwheel") is None, reason="auditwheel not installed")
def test_auditwheel_show_accepts_the_wheel() -> None:
    r = subprocess.run(["auditwheel", "show", WHEEL], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "manylinux_" in out
    for gl in ("libGL.so", "libEGL.so", "libOpenGL.so"):
        assert gl not in out
