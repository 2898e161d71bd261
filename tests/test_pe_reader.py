"""The PE import reader behind the doctor's "which DLL is missing" answer, on real mingw-w64 binaries."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nvdiffrast._pe import PEFormatError, find_missing_dlls, pe_imports

CC = shutil.which("x86_64-w64-mingw32-gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="mingw-w64 (gcc-mingw-w64-x86-64) is not installed")

SYSTEM = ["kernel32.dll", "msvcrt.dll", "user32.dll", "advapi32.dll", "ucrtbase.dll"]


def _cc(args: list[str], cwd: Path) -> None:
    subprocess.run([CC, *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pe_tree(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pe")
    (d / "leaf.c").write_text("__declspec(dllexport) int leaf(void) { return 7; }\n")
    (d / "mid.c").write_text("int leaf(void);\n__declspec(dllexport) int mid(void) { return leaf() + 1; }\n")
    (d / "mod.c").write_text(
        "int mid(void);\n#include <windows.h>\n"
        "__declspec(dllexport) int PyInit_mod(void) { return mid() + (int)GetTickCount(); }\n")
    _cc(["-shared", "-o", "leaf.dll", "leaf.c"], d)
    _cc(["-shared", "-o", "mid.dll", "mid.c", "-L.", "-lleaf"], d)
    _cc(["-shared", "-o", "mod.pyd", "mod.c", "-L.", "-lmid"], d)
    return d


def test_reads_import_table(pe_tree: Path) -> None:
    names = [n.lower() for n in pe_imports(str(pe_tree / "mod.pyd"))]
    assert "mid.dll" in names
    assert "kernel32.dll" in names
    assert [n.lower() for n in pe_imports(str(pe_tree / "mid.dll"))].count("leaf.dll") == 1


def test_everything_found(pe_tree: Path) -> None:
    assert find_missing_dlls(str(pe_tree / "mod.pyd"), [str(pe_tree)], assume_present=SYSTEM) == []


def test_names_the_missing_dll_and_who_needs_it(pe_tree: Path, tmp_path: Path) -> None:
    for f in ("mod.pyd", "mid.dll"):
        shutil.copy(pe_tree / f, tmp_path / f)  # leaf.dll left behind
    missing = find_missing_dlls(str(tmp_path / "mod.pyd"), [str(tmp_path)], assume_present=SYSTEM)
    assert missing == ["mod.pyd -> mid.dll -> leaf.dll"]


def test_rejects_non_pe(tmp_path: Path) -> None:
    bogus = tmp_path / "x.pyd"
    bogus.write_bytes(b"\x7fELF not a pe file")
    with pytest.raises(PEFormatError):
        pe_imports(str(bogus))
