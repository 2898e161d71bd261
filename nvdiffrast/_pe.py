"""A small reader for the import tables of Windows PE files (.pyd / .dll), pure Python.

It answers the question behind "DLL load failed": which DLL named in a module's import table (or in
the import table of a DLL it pulls in) cannot be found on the DLL search path. It works on any OS, so
it is tested on Linux against PE files built with mingw-w64.
"""

from __future__ import annotations

import os
import struct
import sys
from typing import Iterable, Optional


class PEFormatError(ValueError):
    """The file is not a PE image this reader understands."""


def _rva_to_offset(sections: list[tuple[int, int, int, int]], rva: int) -> int:
    for va, vsize, raw_size, raw_ptr in sections:
        if va <= rva < va + max(vsize, raw_size):
            return rva - va + raw_ptr
    raise PEFormatError(f"RVA 0x{rva:x} lies in no section")


def _cstr(data: bytes, off: int) -> str:
    end = data.index(b"\0", off)
    return data[off:end].decode("ascii", "replace")


def pe_imports(path: str, include_delay: bool = True) -> list[str]:
    """Names of the DLLs imported by the PE file at ``path`` (import + delay-import tables), in order."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:2] != b"MZ":
        raise PEFormatError(f"{path}: no MZ header")
    pe_off, = struct.unpack_from("<I", data, 0x3C)
    if data[pe_off:pe_off + 4] != b"PE\0\0":
        raise PEFormatError(f"{path}: no PE signature")
    coff = pe_off + 4
    _machine, nsections, _, _, _, opt_size, _ = struct.unpack_from("<HHIIIHH", data, coff)
    opt = coff + 20
    magic, = struct.unpack_from("<H", data, opt)
    if magic == 0x20B:  # PE32+
        n_dirs_off, dirs_off = opt + 108, opt + 112
    elif magic == 0x10B:  # PE32
        n_dirs_off, dirs_off = opt + 92, opt + 96
    else:
        raise PEFormatError(f"{path}: unknown optional header magic 0x{magic:x}")
    n_dirs, = struct.unpack_from("<I", data, n_dirs_off)
    dirs = [struct.unpack_from("<II", data, dirs_off + 8 * i) for i in range(min(n_dirs, 16))]
    sec_off = opt + opt_size
    sections = []
    for i in range(nsections):
        _name, vsize, va, raw_size, raw_ptr = struct.unpack_from("<8sIIII", data, sec_off + 40 * i)
        sections.append((va, vsize, raw_size, raw_ptr))

    names: list[str] = []
    if len(dirs) > 1 and dirs[1][0]:
        off = _rva_to_offset(sections, dirs[1][0])
        while True:
            oft, _ts, _fc, name_rva, ft = struct.unpack_from("<IIIII", data, off)
            if not (oft or name_rva or ft):
                break
            names.append(_cstr(data, _rva_to_offset(sections, name_rva)))
            off += 20
    if include_delay and len(dirs) > 13 and dirs[13][0]:
        off = _rva_to_offset(sections, dirs[13][0])
        while True:
            fields = struct.unpack_from("<IIIIIIII", data, off)
            if not any(fields):
                break
            names.append(_cstr(data, _rva_to_offset(sections, fields[1])))
            off += 32
    return names


def _is_api_set(name: str) -> bool:
    low = name.lower()
    return low.startswith("api-ms-win-") or low.startswith("ext-ms-")


def default_search_dirs(module_path: str) -> list[str]:
    """Where Windows looks for a .pyd's dependencies in a typical nvdiffrast install."""
    dirs = [os.path.dirname(os.path.abspath(module_path))]
    pkg_parent = os.path.dirname(dirs[0])
    dirs.append(os.path.join(pkg_parent, "nvdiffrast.libs"))  # delvewheel's vendored DLLs
    try:
        import torch

        dirs.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
    except ImportError:
        pass
    root = os.environ.get("SystemRoot", r"C:\Windows")
    dirs += [os.path.join(root, "System32"), root]
    dirs += [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    return dirs


def _find(name: str, dirs: Iterable[str]) -> Optional[str]:
    low = name.lower()
    for d in dirs:
        try:
            for f in os.listdir(d):
                if f.lower() == low:
                    return os.path.join(d, f)
        except OSError:
            continue
    return None


def find_missing_dlls(module_path: str, search_dirs: Optional[list[str]] = None,
                      assume_present: Iterable[str] = ()) -> list[str]:
    """Walk the import graph from ``module_path``; return each DLL that can't be found, as a chain
    ``"a.pyd -> b.dll -> c.dll"`` so the user sees who needs it."""
    dirs = search_dirs if search_dirs is not None else default_search_dirs(module_path)
    present = {n.lower() for n in assume_present}
    missing: list[str] = []
    seen: set[str] = set()
    stack = [(module_path, os.path.basename(module_path))]
    while stack:
        path, chain = stack.pop()
        try:
            deps = pe_imports(path)
        except (OSError, PEFormatError):
            continue
        for dep in deps:
            low = dep.lower()
            if low in seen or _is_api_set(dep) or low in present:
                continue
            seen.add(low)
            found = _find(dep, dirs)
            if found is None:
                missing.append(f"{chain} -> {dep}")
            else:
                stack.append((found, f"{chain} -> {dep}"))
    return missing


if __name__ == "__main__":  # python -m nvdiffrast._pe FILE.pyd [DIR ...]
    target = sys.argv[1]
    print("imports:", ", ".join(pe_imports(target)))
    extra = sys.argv[2:] or None
    miss = find_missing_dlls(target, extra)
    print("missing:", "\n  ".join(miss) if miss else "none")
