"""The Linux repair gate that rejects native modules with a private (statically linked) C++ runtime.

Two real shared objects are built here with the host g++: one linked the usual way, one with
``-static-libstdc++`` (what a compiler wrapper on our GPU machine did, which made every error raised in
the bindings crash while formatting its message). The gate must accept the first and reject the second,
from the ``DT_NEEDED`` entries it reads out of the ELF files. Needs g++ with the static libstdc++ archive
and pyelftools.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ci._util import PipelineError
from ci.repair import _elf_needed, check_shared_cxx_runtime_linux

SOURCE = (
    "#include <sstream>\n#include <string>\n"
    "std::string fmt(long v) { std::ostringstream s; s << v; return s.str(); }\n"
)


def _build(tmp: Path, name: str, extra: list[str]) -> list[str]:
    src = tmp / "m.cpp"
    src.write_text(SOURCE)
    out = tmp / name
    subprocess.run(["g++", "-shared", "-fPIC", "-O1", str(src), "-o", str(out), *extra], check=True,
                   capture_output=True, text=True)
    return _elf_needed(out.read_bytes())


@pytest.fixture(scope="module")
def needed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    pytest.importorskip("elftools")
    tmp = tmp_path_factory.mktemp("cxxrt")
    try:
        static = _build(tmp, "static.so", ["-static-libstdc++"])
    except subprocess.CalledProcessError as exc:  # no libstdc++.a on this machine
        pytest.skip(f"g++ cannot link libstdc++ statically here: {exc.stderr[-300:]}")
    return {"shared": _build(tmp, "shared.so", []), "static": static}


def test_elf_reader_sees_the_runtime_difference(needed: dict[str, list[str]]) -> None:
    assert any(lib.startswith("libstdc++.so") for lib in needed["shared"])
    assert not any(lib.startswith("libstdc++.so") for lib in needed["static"])


def test_gate_accepts_shared_runtime(needed: dict[str, list[str]]) -> None:
    check_shared_cxx_runtime_linux({
        "nvdiffrast/_C.abi3.so": needed["shared"],
        "nvdiffrast/_gl.abi3.so": needed["shared"],
        "nvdiffrast.libs/libother-1234.so.1": needed["static"],  # not one of our modules: not gated
    })


def test_gate_rejects_private_runtime(needed: dict[str, list[str]]) -> None:
    with pytest.raises(PipelineError, match=r"nvdiffrast/_C\.cpython-312-x86_64-linux-gnu\.so"):
        check_shared_cxx_runtime_linux({
            "nvdiffrast/_C.cpython-312-x86_64-linux-gnu.so": needed["static"],
            "nvdiffrast/_gl.cpython-312-x86_64-linux-gnu.so": needed["shared"],
        })
