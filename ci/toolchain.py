"""Find or install the CUDA toolkit a variant builds with.

Order: an existing toolkit of the variant's CUDA version (``CUDA_HOME``/``CUDA_PATH``, ``nvcc`` on PATH,
``/usr/local/cuda-X.Y``, ``/usr/local/cuda``); else, for CUDA 13+, NVIDIA's PyPI wheels
(``cuda-toolkit[nvcc,cccl]``) installed into the build venv and assembled into a CUDA_HOME made of symlinks
(wheels cannot carry symlinks, so the unversioned ``libcudart.so`` the linker wants is added here).
The cu11/cu12 nvcc wheels hold only ptxas and libnvvm, so older CUDA needs a real toolkit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
from pathlib import Path

from ci._util import PipelineError, log, pip_env, run

IS_WIN = sys.platform == "win32"
NVCC = "nvcc.exe" if IS_WIN else "nvcc"


@dataclasses.dataclass(frozen=True)
class Toolkit:
    """A usable CUDA toolkit: where it is, what ``nvcc --version`` said, and where it came from."""

    cuda_home: Path
    version: str  # "13.0"
    source: str  # "CUDA_HOME", "PATH", "/usr/local/cuda", "pypi:cuda-toolkit[nvcc,cccl]==13.0.3"

    @property
    def nvcc(self) -> Path:
        return self.cuda_home / "bin" / NVCC


def nvcc_version(nvcc: Path | str) -> str | None:
    """``X.Y`` from ``nvcc --version`` (None when it does not run)."""
    try:
        out = run([str(nvcc), "--version"], capture=True, check=False).stdout
    except PipelineError:
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def _has_toolkit(home: Path) -> bool:
    return (home / "bin" / NVCC).is_file() and (home / "include" / "cuda_runtime.h").is_file()


def _candidates(cuda: str) -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            out.append((Path(os.environ[var]), var))
    nvcc = shutil.which(NVCC)
    if nvcc:
        for p in (Path(nvcc), Path(os.path.realpath(nvcc))):
            out.append((p.parent.parent, "PATH"))
    if IS_WIN:
        base = Path(os.environ.get("ProgramFiles", r"C:\Program Files")) / "NVIDIA GPU Computing Toolkit" / "CUDA"
        out.append((base / f"v{cuda}", str(base / f"v{cuda}")))
    else:
        for d in (f"/usr/local/cuda-{cuda}", "/usr/local/cuda"):
            out.append((Path(d), d))
    return out


def find_system_toolkit(cuda: str) -> tuple[Toolkit | None, list[str]]:
    """A toolkit of CUDA ``cuda`` (same major.minor) already on this machine, plus notes on what was rejected."""
    notes: list[str] = []
    seen: set[Path] = set()
    for home, how in _candidates(cuda):
        home = home.resolve() if home.exists() else home
        if home in seen:
            continue
        seen.add(home)
        if not _has_toolkit(home):
            if how in ("CUDA_HOME", "CUDA_PATH"):
                notes.append(f"{how}={home} has no bin/{NVCC} + include/cuda_runtime.h")
            continue
        ver = nvcc_version(home / "bin" / NVCC)
        if ver == cuda:
            return Toolkit(home, ver, how), notes
        notes.append(f"{home} ({how}) is CUDA {ver}, not {cuda}")
    return None, notes


def torch_toolkit_pin(python: Path) -> str | None:
    """The ``cuda-toolkit==X`` version the torch in ``python``'s environment requires (CUDA 13 wheels pin it)."""
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps([r for r in (m.requires('torch') or []) if r.startswith('cuda-toolkit')]))")
    out = run([str(python), "-c", code], capture=True).stdout.strip().splitlines()
    reqs = json.loads(out[-1]) if out else []
    for r in reqs:
        m = re.search(r"==\s*([\d.]+)", r)
        if m:
            return m.group(1)
    return None


def _site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['platlib'])"
    return Path(run([str(python), "-c", code], capture=True).stdout.strip().splitlines()[-1])


def install_pypi_toolkit(python: Path, cuda: str, spec: str, dest: Path) -> Toolkit:
    """pip-install the CUDA 13+ compiler wheels into ``python``'s venv and assemble a CUDA_HOME at ``dest``.

    ``spec`` is the matrix's ``pip_toolkit`` (``cuda-toolkit[nvcc,cccl]==13.0.*``); when the venv's torch pins
    an exact ``cuda-toolkit`` version, that version is used so compiler and runtime headers match torch.
    """
    pin = torch_toolkit_pin(python)
    if pin and pin.startswith(cuda + "."):
        spec = re.sub(r"==.*$", f"=={pin}", spec)
    run([str(python), "-m", "pip", "install", spec], env=pip_env())
    major = cuda.split(".")[0]
    root = _site_packages(python) / "nvidia" / f"cu{major}"
    if not (root / "bin" / NVCC).is_file():
        raise PipelineError(f"{spec} installed, but {root / 'bin' / NVCC} is missing: this cuda-toolkit has no "
                            "complete nvcc (CUDA < 13 pip wheels carry only ptxas); use a system toolkit")
    if IS_WIN:
        # The Windows wheels already have torch's expected layout (lib/x64/cudart.lib); no links needed.
        dest = root
    else:
        if dest.exists():
            shutil.rmtree(dest)
        (dest / "lib64").mkdir(parents=True)
        for sub in ("bin", "include", "nvvm"):
            if (root / sub).exists():
                os.symlink(root / sub, dest / sub, target_is_directory=True)
        libdir = root / "lib"
        for f in sorted(libdir.iterdir()):
            if f.name.startswith(("libcudart", "libcudadevrt", "libculibos")):
                os.symlink(f, dest / "lib64" / f.name)
        sonames = sorted(libdir.glob("libcudart.so.*"))
        if not sonames:
            raise PipelineError(f"no libcudart.so.* under {libdir}; install cuda-toolkit[cudart]")
        os.symlink(sonames[0].name, dest / "lib64" / "libcudart.so")
        os.symlink("lib64", dest / "lib", target_is_directory=True)
    ver = nvcc_version(dest / "bin" / NVCC)
    if ver != cuda:
        raise PipelineError(f"the PyPI toolkit at {dest} reports CUDA {ver}, expected {cuda}")
    log(f"CUDA {ver} toolkit from PyPI assembled at {dest}")
    return Toolkit(dest, ver, f"pypi:{spec}")


def ensure_toolkit(cuda: str, pip_spec: str | None, python: Path, work_dir: Path, prefer: str = "auto") -> Toolkit:
    """The toolkit for a build of CUDA ``cuda``.

    ``prefer``: ``auto`` (system toolkit if one matches, else PyPI when the variant allows it), ``system`` or
    ``pypi``. Raises :class:`PipelineError` saying what to install when nothing fits.
    """
    if prefer not in ("auto", "system", "pypi"):
        raise PipelineError(f"toolkit preference must be auto, system or pypi, got '{prefer}'")
    notes: list[str] = []
    if prefer in ("auto", "system"):
        tk, notes = find_system_toolkit(cuda)
        if tk:
            log(f"using CUDA {tk.version} at {tk.cuda_home} (from {tk.source})")
            return tk
        if prefer == "system":
            raise PipelineError(f"no CUDA {cuda} toolkit found ({'; '.join(notes) or 'no nvcc anywhere'}); "
                                f"set CUDA_HOME to a CUDA {cuda} install")
    if pip_spec:
        return install_pypi_toolkit(python, cuda, pip_spec, work_dir / "cuda-home")
    raise PipelineError(
        f"no CUDA {cuda} toolkit on this machine ({'; '.join(notes) or 'no nvcc found'}) and CUDA {cuda} has no "
        f"complete compiler on PyPI (only CUDA 13+ does). Install CUDA {cuda} and set CUDA_HOME, or build in "
        "its manylinux image (see ci/matrix.toml linux_image)."
    )
