"""The Windows repair path (delvewheel) on a real win_amd64 wheel built here with mingw-w64.

The fixture extension ``nvdiffrast/_C.pyd`` imports one DLL of every class the policy distinguishes: a
third-party dependency (vendored), the MSVC C++ runtime ``msvcp140.dll`` (vendored), torch/CUDA/driver DLLs
``c10.dll``, ``torch_cpu.dll``, ``cudart64_13.dll``, ``nvcuda.dll`` (excluded), ``python3.dll`` and Windows
system DLLs (never vendored). Needs ``x86_64-w64-mingw32-gcc`` (Debian: gcc-mingw-w64-x86-64), delvewheel,
abi3audit and pefile.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ci._util import PipelineError
from ci.repair import LIBS_DIR, check_vendored, pe_imports, repair_wheel

FIXTURES = Path(__file__).parent / "fixtures" / "winwheel"
CC = "x86_64-w64-mingw32-gcc"
DLLTOOL = "x86_64-w64-mingw32-dlltool"
# Stand-ins for DLLs torch, CUDA, the driver and the MSVC redistributable provide: name -> exported symbol.
FAKE_DLLS = {
    "c10": "c10_fixture_symbol",
    "torch_cpu": "torch_cpu_fixture_symbol",
    "cudart64_13": "cudart_fixture_symbol",
    "nvcuda": "nvcuda_fixture_symbol",
    "msvcp140": "msvcp_fixture_symbol",
}
EXCLUDED = ["c10.dll", "cudart64_13.dll", "nvcuda.dll", "torch_cpu.dll"]
INIT_SOURCE = '"""Fixture package."""\n\nVALUE = 1\n'


def _cc(*args: str | Path) -> None:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, args))}\n{proc.stdout}{proc.stderr}"


def _write_wheel(path: Path, files: dict[str, bytes], tag: str = "cp310-abi3-win_amd64") -> Path:
    """A minimal valid wheel (METADATA, WHEEL, RECORD with hashes)."""
    di = "nvdiffrast-0.5.0+fixture.dist-info"
    files = {**files,
             f"{di}/METADATA": b"Metadata-Version: 2.1\nName: nvdiffrast\nVersion: 0.5.0+fixture\n",
             f"{di}/WHEEL": f"Wheel-Version: 1.0\nGenerator: fixture\nRoot-Is-Purelib: false\nTag: {tag}\n".encode()}
    record = []
    whl = path / f"nvdiffrast-0.5.0+fixture-{tag}.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        record.append(f"{di}/RECORD,,")
        z.writestr(f"{di}/RECORD", "\n".join(record) + "\n")
    return whl


@pytest.fixture(scope="module")
def winbuild(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Compile the DLLs and extensions once: returns paths of the dll folder and the three .pyd variants."""
    missing = [t for t in (CC, DLLTOOL) if shutil.which(t) is None]
    assert not missing, (f"{', '.join(missing)} not found: install mingw-w64 "
                         "(apt-get install -y gcc-mingw-w64-x86-64 g++-mingw-w64-x86-64)")
    root = tmp_path_factory.mktemp("winbuild")
    dlls = root / "dlls"
    dlls.mkdir()
    implibs = []
    _cc(CC, "-O2", "-shared", "-o", dlls / "nvdrdep.dll", FIXTURES / "dep.c",
        f"-Wl,--out-implib,{root / 'nvdrdep.dll.a'}")
    implibs.append(root / "nvdrdep.dll.a")
    for name, sym in FAKE_DLLS.items():
        _cc(CC, "-O2", "-shared", f"-DSYMBOL={sym}", "-o", dlls / f"{name}.dll", FIXTURES / "fake_dll.c",
            f"-Wl,--out-implib,{root / (name + '.dll.a')}")
        implibs.append(root / f"{name}.dll.a")
    _cc(DLLTOOL, "-d", FIXTURES / "python3.def", "-l", root / "python3.dll.a")
    _cc(DLLTOOL, "-d", FIXTURES / "python311.def", "-l", root / "python311.dll.a")
    # python3.dll that (wrongly) offers a non-limited symbol, for the abi3audit case.
    (root / "python3_bad.def").write_text("LIBRARY python3.dll\nEXPORTS\n    PyModule_Create2\n    PyCode_NewEmpty\n")
    _cc(DLLTOOL, "-d", root / "python3_bad.def", "-l", root / "python3_bad.dll.a")
    out = {"dlls": dlls}
    for key, extra in (("good", [root / "python3.dll.a"]),
                       ("non_limited", ["-DNVDR_FIXTURE_NON_ABI3", root / "python3_bad.dll.a"]),
                       ("versioned", ["-DNVDR_FIXTURE_NON_ABI3", root / "python3.dll.a", root / "python311.dll.a"])):
        defines = [a for a in extra if isinstance(a, str)]
        libs = [a for a in extra if not isinstance(a, str)]
        pyd = root / f"_C_{key}.pyd"
        _cc(CC, "-O2", "-shared", *defines, "-o", pyd, FIXTURES / "ext.c", *implibs, *libs, "-luser32")
        out[key] = pyd
    return out


def _fixture_wheel(tmp_path: Path, pyd: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    return _write_wheel(src, {"nvdiffrast/__init__.py": INIT_SOURCE.encode(), "nvdiffrast/_C.pyd": pyd.read_bytes()})


@pytest.fixture
def repaired(winbuild: dict[str, Path], tmp_path: Path) -> Path:
    return repair_wheel(_fixture_wheel(tmp_path, winbuild["good"]), tmp_path / "out", [winbuild["dlls"]])


def test_fixture_imports_every_dll_class(winbuild: dict[str, Path]) -> None:
    imports = {d.lower() for d in pe_imports(winbuild["good"].read_bytes())}
    assert {"nvdrdep.dll", "msvcp140.dll", "python3.dll", "user32.dll", *EXCLUDED} <= imports


def test_vendors_dependency_and_msvc_runtime_only(repaired: Path) -> None:
    assert repaired.name == "nvdiffrast-0.5.0+fixture-cp310-abi3-win_amd64.whl"
    with zipfile.ZipFile(repaired) as z:
        libs = sorted(n.split("/", 1)[1] for n in z.namelist() if n.startswith(LIBS_DIR + "/") and n[-1] != "/")
    stems = sorted(re.sub(r"-[0-9a-f]{32}\.dll$", ".dll", n) for n in libs)
    assert stems == ["msvcp140.dll", "nvdrdep.dll"], libs
    assert all(re.fullmatch(r"(msvcp140|nvdrdep)-[0-9a-f]{32}\.dll", n) for n in libs), libs


def test_excluded_dlls_remain_plain_imports(repaired: Path) -> None:
    with zipfile.ZipFile(repaired) as z:
        imports = pe_imports(z.read("nvdiffrast/_C.pyd"))
        libs = {n.split("/", 1)[1] for n in z.namelist() if n.startswith(LIBS_DIR + "/") and n[-1] != "/"}
    lower = {d.lower() for d in imports}
    # Torch, CUDA runtime, driver, Python and system DLLs are resolved on the user's machine, by name.
    assert set(EXCLUDED) | {"python3.dll", "user32.dll"} <= lower
    # Vendored DLLs are imported under their mangled names, which exist in nvdiffrast.libs.
    mangled = [d for d in imports if re.fullmatch(r"(msvcp140|nvdrdep)-[0-9a-f]{32}\.dll", d)]
    assert sorted(mangled) == sorted(libs)
    assert "nvdrdep.dll" not in lower and "msvcp140.dll" not in lower


def test_init_gets_dll_directory_patch(repaired: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(repaired) as z:
        z.extractall(site)
    init = (site / "nvdiffrast" / "__init__.py").read_text()
    assert "os.add_dll_directory" in init and f"'{LIBS_DIR}'" in init
    assert "VALUE = 1" in init
    # Run the patched __init__ as Windows would: it must add <site>/nvdiffrast.libs to the DLL search path.
    calls: list[str] = []
    monkeypatch.setattr(os, "add_dll_directory", calls.append, raising=False)
    ns = {"__file__": str(site / "nvdiffrast" / "__init__.py"), "__name__": "nvdiffrast_fixture"}
    exec(compile(init, ns["__file__"], "exec"), ns)
    assert calls == [str(site / LIBS_DIR)]
    assert ns["VALUE"] == 1


def test_repair_report_records_policy(repaired: Path) -> None:
    report = json.loads((repaired.parent / f"{repaired.name}.repair.json").read_text())
    assert report["tool"] == "delvewheel"
    assert report["left_to_torch_or_driver"] == EXCLUDED
    assert "python3.dll" in report["assumed_present"]
    assert report["init_patched"] is True
    assert report["gates"] == {"delvewheel_show": "pass", "nothing_forbidden_vendored": "pass", "abi3audit": "pass"}


def test_cli_repair(winbuild: dict[str, Path], tmp_path: Path) -> None:
    whl = _fixture_wheel(tmp_path, winbuild["good"])
    out = tmp_path / "wh"
    proc = subprocess.run([sys.executable, "-m", "ci", "repair", str(whl), "--out", str(out),
                           "--add-path", str(winbuild["dlls"])], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Path(proc.stdout.strip().splitlines()[-1]) == out / whl.name
    assert "delvewheel" in proc.stderr and "--exclude" in proc.stderr  # commands are logged before they run


def test_missing_dependency_fails_with_names(winbuild: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVDR_DLL_PATH", raising=False)
    whl = _fixture_wheel(tmp_path, winbuild["good"])
    with pytest.raises(PipelineError, match=r"msvcp140\.dll, nvdrdep\.dll, not found.*--add-path"):
        repair_wheel(whl, tmp_path / "out", [])
    assert not (tmp_path / "out" / whl.name).exists()


def test_dll_path_from_environment(winbuild: dict[str, Path], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVDR_DLL_PATH", str(winbuild["dlls"]))
    out = repair_wheel(_fixture_wheel(tmp_path, winbuild["good"]), tmp_path / "out")
    assert out.is_file()


def test_abi3audit_rejects_non_limited_symbol(winbuild: dict[str, Path], tmp_path: Path) -> None:
    whl = _fixture_wheel(tmp_path, winbuild["non_limited"])
    with pytest.raises(PipelineError, match=r"abi3audit failed.*PyCode_NewEmpty"):
        repair_wheel(whl, tmp_path / "out", [winbuild["dlls"]])


def test_abi3_gate_rejects_versioned_python_dll(winbuild: dict[str, Path], tmp_path: Path) -> None:
    whl = _fixture_wheel(tmp_path, winbuild["versioned"])
    with pytest.raises(PipelineError, match=r"tagged abi3 but nvdiffrast/_C\.pyd imports python311\.dll"):
        repair_wheel(whl, tmp_path / "out", [winbuild["dlls"]])


def test_per_python_wheel_skips_abi3_gate(winbuild: dict[str, Path], tmp_path: Path) -> None:
    # A cp311-only wheel may link python311.dll; it is repaired and gated without abi3audit.
    src = tmp_path / "src"
    src.mkdir()
    whl = _write_wheel(src, {"nvdiffrast/__init__.py": INIT_SOURCE.encode(),
                             "nvdiffrast/_C.cp311-win_amd64.pyd": winbuild["versioned"].read_bytes()},
                       tag="cp311-cp311-win_amd64")
    out = repair_wheel(whl, tmp_path / "out", [winbuild["dlls"]])
    report = json.loads((out.parent / f"{out.name}.repair.json").read_text())
    assert "abi3audit" not in report["gates"] and report["gates"]["delvewheel_show"] == "pass"


@pytest.mark.parametrize("name,os_name", [
    ("c10-0123456789abcdef0123456789abcdef.dll", "windows"),
    ("torch_cuda.dll", "windows"),
    ("cudart64_12-0123456789abcdef0123456789abcdef.dll", "windows"),
    ("nvcuda.dll", "windows"),
    ("opengl32.dll", "windows"),
    ("libtorch_cpu-1a2b3c4d.so", "linux"),
    ("libcudart-96c42e41.so.13", "linux"),
    ("libEGL-5c87de44.so.1.1.0", "linux"),
    ("libGLdispatch-53c73f15.so.0.0.0", "linux"),
    ("libgomp-a34b3233.so.1.0.0", "linux"),
])
def test_forbidden_vendored_library_fails_gate(name: str, os_name: str) -> None:
    with pytest.raises(PipelineError, match=re.escape(name)):
        check_vendored(["libfine-1a2b3c4d.so.1" if os_name == "linux" else "fine.dll", name], os_name)


def test_allowed_vendored_libraries_pass_gate() -> None:
    check_vendored(["msvcp140-16043d9b47369cf4be844820286f7c3a.dll", "nvdrdep.dll"], "windows")
    check_vendored(["libz-eb09ad1d.so.1.2.13", "libstdc++-6a5f6fb8.so.6"], "linux")
