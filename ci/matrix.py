"""``python -m ci matrix``: expand ``ci/matrix.toml`` into build variants.

A :class:`Variant` is one wheel to build: (torch minor, CUDA, OS), with everything a build needs (pinned
torch, index URL, arch list, Python axis, toolkit source). Other stages import :func:`load_matrix` and
:func:`local_variant`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

MATRIX_PATH = Path(__file__).with_name("matrix.toml")
INDEX_ENV = "NVDR_TORCH_INDEX_URL"
OSES = ("linux", "windows")
GITHUB_RUNNERS = {"linux": "ubuntu-24.04", "windows": "windows-2022"}


class MatrixError(ValueError):
    """matrix.toml is malformed or a lookup names a variant that does not exist."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One wheel to build. ``name`` is the local version label (``pt27cu118``), shared by both OSes."""

    name: str
    torch_version: str
    torch_minor: str
    cuda: str
    cu_tag: str
    os: str
    python: list[str] | str  # per-Python wheel: the CPythons to build; abi3: the string "abi3"
    abi3: bool
    arch_list: str
    torch_index_url: str
    pythons: list[str]  # CPythons this torch supports (for abi3: the test range of the one wheel)
    cuda_full: str
    linux_image: str | None
    pip_toolkit: str | None
    pypi_default: bool  # the plain PyPI torch wheel of this version is this CUDA build (Linux)

    @property
    def key(self) -> str:
        """Unique id across OSes, e.g. ``pt27cu118-linux``."""
        return f"{self.name}-{self.os}"

    @property
    def build_pythons(self) -> list[str]:
        """The interpreters to build with: the oldest supported one for abi3, else each Python."""
        return [self.pythons[0]] if self.abi3 else list(self.pythons)

    @property
    def torch_spec(self) -> str:
        """The pip requirement for exactly this variant's torch."""
        return f"torch=={self.torch_version}"

    @property
    def platform_tag(self) -> str:
        return "manylinux_2_28_x86_64" if self.os == "linux" else "win_amd64"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["key"] = self.key
        d["build_pythons"] = self.build_pythons
        return d


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def _require(table: dict[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise MatrixError(f"{where}: missing required key '{key}'")
    return table[key]


def _arch_ok(arch_list: str) -> bool:
    items = [a for a in re.split(r"[;\s]+", arch_list) if a]
    return bool(items) and all(re.fullmatch(r"\d+\.\d+a?(\+PTX)?", a) for a in items) and items[-1].endswith("+PTX")


def load_matrix(path: Path | str | None = None) -> list[Variant]:
    """Read matrix.toml (default: the one next to this module) and return every variant, oldest torch first.

    The torch index URL template comes from ``NVDR_TORCH_INDEX_URL`` when set, else from the file.
    Raises :class:`MatrixError` naming the offending entry when the file is inconsistent.
    """
    p = Path(path) if path is not None else MATRIX_PATH
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MatrixError(f"cannot read matrix file {p}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(f"{p}: invalid TOML: {exc}") from exc

    defaults = data.get("defaults", {})
    index_tmpl = os.environ.get(INDEX_ENV) or defaults.get("torch_index_url", "https://download.pytorch.org/whl/{cu_tag}")
    default_oses = list(defaults.get("os", list(OSES)))
    abi3_min = _vtuple(defaults.get("abi3_min_torch", "2.6"))
    min_py = _vtuple(defaults.get("min_python", "3.10"))
    cudas: dict[str, dict[str, Any]] = data.get("cuda", {})

    variants: list[Variant] = []
    seen: set[str] = set()
    for i, row in enumerate(data.get("torch", [])):
        where = f"{p.name}: [[torch]] #{i + 1}"
        minor = str(_require(row, "minor", where))
        version = str(_require(row, "version", where))
        where = f"{p.name}: torch {minor}"
        if not re.fullmatch(r"\d+\.\d+", minor) or not version.startswith(minor + "."):
            raise MatrixError(f"{where}: version '{version}' is not a patch release of minor '{minor}'")
        pythons = [str(x) for x in _require(row, "python", where) if _vtuple(str(x)) >= min_py]
        if not pythons:
            raise MatrixError(f"{where}: no Python version >= {defaults.get('min_python', '3.10')}")
        pythons.sort(key=_vtuple)
        abi3 = _vtuple(minor) >= abi3_min
        oses = list(row.get("os", default_oses))
        for o in oses:
            if o not in OSES:
                raise MatrixError(f"{where}: os must be one of {OSES}, got '{o}'")
        overrides = row.get("arch_list", {})
        pypi_cuda = row.get("pypi_cuda")
        for cuda in _require(row, "cuda", where):
            cuda = str(cuda)
            ct = cudas.get(cuda)
            if ct is None:
                raise MatrixError(f"{where}: CUDA {cuda} has no [cuda.\"{cuda}\"] table")
            arch = overrides.get(cuda) or _require(ct, "arch_list", f"{p.name}: cuda {cuda}")
            if not _arch_ok(arch):
                raise MatrixError(f"{where}, CUDA {cuda}: arch list '{arch}' must be 'X.Y;...;X.Y+PTX' "
                                  "(ending with +PTX of the newest arch)")
            cu_tag = "cu" + cuda.replace(".", "")
            name = f"pt{minor.replace('.', '')}{cu_tag}"
            index_url = (row.get("torch_index_url") or index_tmpl).format(cu_tag=cu_tag, cuda=cuda, torch=minor)
            for o in oses:
                if f"{name}-{o}" in seen:
                    raise MatrixError(f"{where}: duplicate variant {name} on {o}")
                seen.add(f"{name}-{o}")
                variants.append(Variant(
                    name=name, torch_version=version, torch_minor=minor, cuda=cuda, cu_tag=cu_tag, os=o,
                    python="abi3" if abi3 else list(pythons), abi3=abi3, arch_list=arch,
                    torch_index_url=index_url, pythons=list(pythons), cuda_full=str(ct.get("full", cuda)),
                    linux_image=ct.get("linux_image"), pip_toolkit=ct.get("pip_toolkit"),
                    pypi_default=(o == "linux" and pypi_cuda == cuda),
                ))
    if not variants:
        raise MatrixError(f"{p}: no [[torch]] entries")
    variants.sort(key=lambda v: (_vtuple(v.torch_minor), _vtuple(v.cuda), v.os))
    return variants


def minimal(variants: list[Variant]) -> list[Variant]:
    """The pull-request subset: per OS, the newest torch with its newest CUDA and the oldest with its oldest."""
    out: list[Variant] = []
    for o in OSES:
        vs = [v for v in variants if v.os == o]
        if not vs:
            continue
        for pick in (vs[0], max(vs, key=lambda v: (_vtuple(v.torch_minor), _vtuple(v.cuda)))):
            if pick not in out:
                out.append(pick)
    return out


def current_os() -> str:
    return "windows" if sys.platform == "win32" else "linux"


def find_variant(name: str, os_name: str | None = None, path: Path | str | None = None) -> Variant:
    """The variant called ``name`` (e.g. ``pt27cu118``) for ``os_name`` (default: this OS)."""
    o = os_name or current_os()
    variants = load_matrix(path)
    for v in variants:
        if v.name == name and v.os == o:
            return v
    names = sorted({v.name for v in variants if v.os == o}, key=lambda n: n)
    raise MatrixError(f"variant '{name}' is not in the matrix for {o}; known: {', '.join(names)}")


def installed_torch() -> tuple[str, str | None] | None:
    """(version without local label, CUDA version or None) of the torch in this interpreter, without importing it."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        version = importlib.metadata.version("torch").split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return None
    cuda = None
    vfile = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        m = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([\d.]+)['\"]", vfile.read_text(), re.M)
        cuda = m.group(1) if m else None
    except OSError:
        pass
    return version, cuda


def local_variant(path: Path | str | None = None) -> Variant:
    """The variant this machine builds by default.

    With a CUDA torch in the current interpreter: that torch's (minor, CUDA) variant pinned to the installed
    patch. Otherwise the newest torch whose PyPI wheel is a CUDA build with a PyPI toolkit (nothing to fetch
    from elsewhere). Raises :class:`MatrixError` when the installed torch is not in the matrix.
    """
    variants = [v for v in load_matrix(path) if v.os == current_os()]
    found = installed_torch()
    if found and found[1]:
        version, cuda = found
        minor = ".".join(version.split(".")[:2])
        for v in variants:
            if v.torch_minor == minor and v.cuda == cuda:
                return dataclasses.replace(v, torch_version=version)
        raise MatrixError(f"the installed torch {version} (CUDA {cuda}) has no variant in the matrix; "
                          f"add CUDA {cuda} to torch {minor} in {MATRIX_PATH.name}")
    candidates = [v for v in variants if v.pypi_default and v.pip_toolkit]
    if not candidates:
        raise MatrixError("no variant can be built from PyPI alone; install a CUDA build of torch first")
    return max(candidates, key=lambda v: _vtuple(v.torch_version))


def _win_subpackages(cuda: str) -> list[str]:
    base = ["nvcc", "cudart", "visual_studio_integration"]
    return base + (["crt", "nvvm", "nvfatbin", "nvptxcompiler"] if _vtuple(cuda) >= (13, 0) else [])


def github_matrix(variants: list[Variant]) -> dict[str, Any]:
    """The GitHub Actions ``strategy.matrix`` object (``include`` list) for ``variants``."""
    include = []
    for v in variants:
        cp = "cp" + v.build_pythons[0].replace(".", "")
        include.append({
            "variant": v.name,
            "os": v.os,
            "runner": GITHUB_RUNNERS[v.os],
            "torch": v.torch_version,
            "torch_minor": v.torch_minor,
            "cuda": v.cuda,
            "cuda_full": v.cuda_full,
            "abi3": v.abi3,
            "cibw_build": " ".join(f"cp{p.replace('.', '')}-{'manylinux_x86_64' if v.os == 'linux' else 'win_amd64'}"
                                   for p in v.build_pythons),
            "test_python": cp,
            "arch_list": v.arch_list,
            "image": v.linux_image or "",
            "index_url": v.torch_index_url,
            "artifact": f"wheels-{v.key}",
            # Windows: components of NVIDIA's network installer (CUDA 13 split crt/nvvm out of nvcc), and
            # MSVC 14.4x (windows-2022) is newer than what CUDA < 12.8 accepts without this flag.
            "win_cuda_subpackages": json.dumps(_win_subpackages(v.cuda)),
            "nvcc_append_flags": "-allow-unsupported-compiler" if _vtuple(v.cuda) < (12, 8) else "",
        })
    return {"include": include}


def format_table(variants: list[Variant]) -> str:
    """A fixed-width table for people."""
    head = ["variant", "os", "torch", "cuda", "python", "arch list", "toolkit", "torch index"]
    rows = []
    for v in variants:
        py = f"abi3 (cp310+, tested {v.pythons[0]}-{v.pythons[-1]})" if v.abi3 else ",".join(v.pythons)
        if v.os == "linux":
            tk = v.linux_image or f"CUDA {v.cuda_full}"
        else:
            tk = f"CUDA {v.cuda_full} installer"
        if v.pip_toolkit:
            tk += " | PyPI"
        idx = v.torch_index_url + (" (+PyPI)" if v.pypi_default else "")
        rows.append([v.name, v.os, v.torch_version, v.cuda, py, v.arch_list, tk, idx])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minimal", action="store_true", help="newest + oldest variant per OS (pull requests)")
    parser.add_argument("--format", choices=("table", "json", "github"), default="table",
                        help="table for people, json (full variant records), github (strategy.matrix object)")
    parser.add_argument("--os", choices=OSES, help="only this OS")
    parser.add_argument("--variant", action="append", default=[], help="only these variants (repeatable)")
    parser.add_argument("--local", action="store_true", help="only the variant this machine builds by default")
    parser.add_argument("--matrix-file", type=Path, default=None, help="another matrix.toml (default: ci/matrix.toml)")


def select(args: argparse.Namespace) -> list[Variant]:
    """Apply the command-line filters to the matrix."""
    if args.local:
        return [local_variant(args.matrix_file)]
    variants = load_matrix(args.matrix_file)
    if args.os:
        variants = [v for v in variants if v.os == args.os]
    if args.variant:
        unknown = set(args.variant) - {v.name for v in variants}
        if unknown:
            raise MatrixError(f"--variant: unknown variant(s) {', '.join(sorted(unknown))}")
        variants = [v for v in variants if v.name in args.variant]
    if args.minimal:
        variants = minimal(variants)
    return variants


def run(args: argparse.Namespace) -> int:
    try:
        variants = select(args)
    except MatrixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "table":
        pairs = len({v.name for v in variants})
        text = format_table(variants) + f"\n\n{len(variants)} variants ({pairs} torch/CUDA pairs)"
    elif args.format == "json":
        text = json.dumps([v.to_dict() for v in variants], indent=1)
    else:
        text = json.dumps(github_matrix(variants), separators=(",", ":"))
    try:
        print(text, flush=True)
    except BrokenPipeError:  # e.g. `| head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # keeps the interpreter's final flush quiet
    return 0
