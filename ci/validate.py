"""``python -m ci validate WHEEL... [--out DIR]``: validate built wheels the way a user would meet them.

For each wheel:

1. a fresh venv with the variant's torch: by default it reuses the torch of an existing interpreter
   (``--torch-python``, default this one) through a ``.pth`` link to that interpreter's site directories
   (the GPU machine has no index to install from); ``--torch-install SPEC`` installs one instead;
2. ``pip install --no-deps --only-binary :all: --no-index WHEEL`` into it;
3. a scrubbed environment: compilers (nvcc, gcc, cc, c++, clang, cl) replaced by blockers that log and
   fail, ``CUDA_HOME``/``CUDA_PATH``/``CC``/``CXX`` unset, an empty ``TORCH_EXTENSIONS_DIR`` that must stay
   empty;
4. ``ci/validate_worker.py`` in that venv: the reference scenes on every backend present (reference on the
   CPU always, CUDA and OpenGL where available), agreement with the reference within the conformance
   tolerances, scene invariants, finite-difference gradient checks, a short fit that must converge, per-op
   timings;
5. ``DIR/<wheel name>/validation.json`` (with the wheel's sha256) and a self-contained ``report.html``.

Exit status: 0 all passed (GPU included), 1 a failure, 3 passed but the GPU checks are pending (no GPU
here), 2 bad usage.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ci.index import IndexRefused, WheelInfo, inspect_wheel
from ci.report import write_report

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER_FILES = ("validate_worker.py", "scenes.py", "report.py")
BLOCKED = ("nvcc", "gcc", "g++", "cc", "c++", "clang", "clang++", "cl", "x86_64-linux-gnu-gcc", "x86_64-linux-gnu-g++",
           "ld", "ninja")
EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_GPU_PENDING = 0, 1, 2, 3
SCRUB_VARS = ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT", "CUDACXX", "CUDAHOSTCXX", "CC", "CXX", "CPATH",
              "NVCC_PREPEND_FLAGS", "NVCC_APPEND_FLAGS", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
              "TORCH_CUDA_ARCH_LIST", "MAX_JOBS", "NVDR_BACKENDS", "VIRTUAL_ENV")


def _log(msg: str) -> None:
    print(f"[validate] {msg}", flush=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def venv_python(venv_dir: Path) -> Path:
    """The interpreter of a venv on this OS."""
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


class SetupError(Exception):
    """The validation environment cannot be prepared; the message says what to pass or install."""


# ------------------------------------------------------------------------------------------- torch requirement
def torch_requirement(info: WheelInfo) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(lower, upper-exclusive) torch (major, minor) bounds from Requires-Dist ``torch>=A.B,<C.D``."""
    lo = hi = None
    for req in info.requires_dist:
        name = re.split(r"[\s;<>=!~(\[]", req, maxsplit=1)[0]
        if name.lower() != "torch":
            continue
        for op, ver in re.findall(r"(>=|<=|==|<|>|~=)\s*([0-9][0-9.]*)", req):
            parts = [int(p) for p in ver.split(".")[:2]] + [0]
            mm = (parts[0], parts[1])
            if op in (">=", "==", "~="):
                lo = mm
            if op == "<":
                hi = mm
    if lo is None and info.build_info.get("torch_minor"):
        a, b = (int(x) for x in info.build_info["torch_minor"].split("."))
        lo, hi = (a, b), (a, b + 1)
    return lo, hi


def _torch_ok(version: str, lo: tuple[int, int] | None, hi: tuple[int, int] | None) -> bool:
    parts = [int(p) for p in re.findall(r"\d+", version.split("+")[0])[:2]]
    mm = (parts[0], parts[1])
    return (lo is None or mm >= lo) and (hi is None or mm < hi)


def probe_python(python: str) -> dict[str, Any]:
    """Ask an interpreter for its version, its torch and its site directories."""
    code = (
        "import json, sys, site, os\n"
        "d = {'python': '%d.%d.%d' % sys.version_info[:3], 'executable': sys.executable}\n"
        "try:\n import torch\n d['torch'] = torch.__version__\n d['torch_cuda'] = torch.version.cuda\n"
        " d['torch_dir'] = os.path.dirname(os.path.dirname(torch.__file__))\n"
        "except Exception as e:\n d['torch_error'] = repr(e)\n"
        "dirs = [p for p in sys.path if p and os.path.isdir(p) and os.path.basename(p) in "
        "('site-packages', 'dist-packages')]\n"
        "d['site_dirs'] = dirs\nprint(json.dumps(d))\n"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300,
                             cwd=tempfile.gettempdir())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"cannot run interpreter {python}: {exc}") from exc
    if out.returncode != 0:
        raise SetupError(f"interpreter {python} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def shared_site(site_dirs: list[str], dest: Path, exclude: str = "nvdiffrast") -> list[str]:
    """Directories to put on a new venv's path so it sees another interpreter's torch but not its nvdiffrast.

    Each site directory becomes a farm of symlinks to its entries minus anything named ``exclude*`` (the
    package, its dist-info, editable-install hooks): pip and imports then see torch and its dependencies as
    installed, while an nvdiffrast installed next to them cannot shadow or satisfy the one under test.
    """
    if os.name == "nt":  # symlinks need privileges there; the venv's own site-packages still comes first
        return list(site_dirs)
    out = []
    for i, d in enumerate(site_dirs):
        farm = dest / f"site{i}"
        farm.mkdir(parents=True, exist_ok=True)
        for entry in os.scandir(d):
            if entry.name.lower().replace("-", "_").startswith(exclude) or "__editable__" in entry.name:
                continue
            link = farm / entry.name
            if not link.exists():
                os.symlink(entry.path, link)
        out.append(str(farm))
    return out


def _python_ok(info: WheelInfo, pyver: str) -> bool:
    major, minor = (int(x) for x in pyver.split(".")[:2])
    tags = info.python_tag.split(".")
    for t in tags:
        m = re.fullmatch(r"cp(\d)(\d+)", t)
        if m and info.abi_tag == "abi3" and (major, minor) >= (int(m.group(1)), int(m.group(2))):
            return True
        if m and (major, minor) == (int(m.group(1)), int(m.group(2))):
            return True
        if t in ("py3", f"py{major}"):
            return True
    return False


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # machine-wide find-links/extra indexes stay out
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd: list[str], log: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    with open(log, "a") as fh:
        fh.write("+ " + " ".join(cmd) + "\n")
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    with open(log, "a") as fh:
        fh.write(proc.stdout + proc.stderr)
    return proc


def make_venv(info: WheelInfo, work: Path, args: argparse.Namespace, log: Path) -> tuple[Path, dict[str, Any]]:
    """Fresh venv holding the wheel and a matching torch; return (its python, facts about the torch)."""
    lo, hi = torch_requirement(info)
    need = (f"torch>={lo[0]}.{lo[1]}" if lo else "torch") + (f",<{hi[0]}.{hi[1]}" if hi else "")
    donor_py = args.torch_python or sys.executable
    donor = probe_python(donor_py)
    if not _python_ok(info, donor["python"]):
        raise SetupError(f"{info.filename} is for {info.python_tag}-{info.abi_tag}; interpreter {donor_py} is Python "
                         f"{donor['python']}. Pass --torch-python with a matching interpreter.")
    venv_dir = work / "venv"
    pip_env = _pip_env()
    if args.torch_install:
        _log(f"creating venv {venv_dir} and installing {args.torch_install}")
        if _run([donor_py, "-m", "venv", str(venv_dir)], log).returncode != 0:
            raise SetupError(f"`{donor_py} -m venv` failed (see {log}); is the venv module with ensurepip installed?")
        py = venv_python(venv_dir)
        cmd = [str(py), "-m", "pip", "install", args.torch_install]
        if args.find_links:
            cmd += ["--find-links", args.find_links]
        if args.index_url:
            cmd += ["--index-url", args.index_url]
        elif args.find_links:
            cmd += ["--no-index"]
        if _run(cmd, log, env=pip_env).returncode != 0:
            raise SetupError(f"installing {args.torch_install} failed (see {log})")
        facts = probe_python(str(py))
        if "torch" not in facts or not _torch_ok(facts["torch"], lo, hi):
            raise SetupError(f"the venv's torch {facts.get('torch')} does not satisfy the wheel's {need}")
        site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True).stdout.strip())
        torch_src = "installed: " + args.torch_install
    else:
        if "torch" not in donor:
            raise SetupError(f"interpreter {donor_py} has no torch ({donor.get('torch_error')}); pass --torch-python "
                             f"with one that has {need}, or --torch-install 'torch==X.Y.Z' [--find-links DIR]")
        if not _torch_ok(donor["torch"], lo, hi):
            raise SetupError(f"{info.filename} needs {need}; interpreter {donor_py} has torch {donor['torch']}. Pass "
                             "--torch-python with a matching interpreter or --torch-install.")
        _log(f"creating venv {venv_dir} reusing torch {donor['torch']} from {donor['torch_dir']}")
        with_pip = _run([donor_py, "-m", "venv", str(venv_dir)], log).returncode == 0
        if not with_pip:  # e.g. Debian's python without ensurepip: pip comes from the donor instead
            shutil.rmtree(venv_dir, ignore_errors=True)
            if _run([donor_py, "-m", "venv", "--without-pip", str(venv_dir)], log).returncode != 0:
                raise SetupError(f"`{donor_py} -m venv` failed (see {log})")
        py = venv_python(venv_dir)
        site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True).stdout.strip())
        # Appended after the venv's own site-packages, so the wheel installed there wins over anything else.
        shared = shared_site(donor["site_dirs"], work / "shared-site")
        (site / "_nvdr_validate_torch.pth").write_text("\n".join(shared) + "\n")
        torch_src = f"reused from {donor['executable']} ({donor['torch_dir']})"
    if (py.parent / ("pip.exe" if os.name == "nt" else "pip")).exists():
        pip_cmd, target = [str(py), "-m", "pip"], []
    elif subprocess.run([donor_py, "-m", "pip", "--version"], capture_output=True).returncode == 0:
        pip_cmd, target = [donor_py, "-m", "pip"], ["--target", str(site)]
        pip_env["PIP_BREAK_SYSTEM_PACKAGES"] = "1"  # the target is the new venv, not the system (PEP 668)
    else:
        raise SetupError(f"neither the new venv nor {donor_py} has pip; install pip (python3-pip) to validate")
    cmd = pip_cmd + ["install", "--no-deps", "--only-binary", ":all:", "--no-index", *target, str(info.path)]
    _log("installing " + info.filename)
    proc = _run(cmd, log, env=pip_env, cwd=str(work))
    if proc.returncode != 0:
        raise SetupError(f"pip could not install {info.filename}:\n{(proc.stdout + proc.stderr).strip()[-1500:]}")
    return py, {"torch_source": torch_src, "requirement": need, "site": str(site)}


def scrubbed_env(work: Path, venv_py: Path) -> tuple[dict[str, str], Path, Path]:
    """Environment without compilers: blockers first on PATH, toolkit variables unset, empty extension dir."""
    block = work / "nvdr-no-compiler"
    block.mkdir(exist_ok=True)
    calls = work / "compiler-calls.log"
    calls.touch()
    for name in BLOCKED:
        p = block / name
        p.write_text(f"#!/bin/sh\necho \"$0 $*\" >> '{calls}'\n"
                     "echo \"nvdiffrast validation: a compiler was invoked ($0); "
                     "installed wheels must not compile\" >&2\n"
                     "exit 127\n")
        p.chmod(0o755)
    ext = work / "torch_extensions"
    ext.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in SCRUB_VARS and not k.startswith("PIP_")}
    # Toolkit bin dirs go entirely; in system dirs the blockers (first on PATH) shadow any compiler.
    system = {"/usr/bin", "/bin", "/usr/local/bin", "/usr/sbin", "/sbin"}
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep)
            if p and (p.rstrip("/") in system or not os.path.isfile(os.path.join(p, "nvcc")))]
    env["PATH"] = os.pathsep.join([str(block), str(venv_py.parent)] + path)
    env["TORCH_EXTENSIONS_DIR"] = str(ext)
    env["XDG_CACHE_HOME"] = str(work / "cache")
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env, ext, calls


# ------------------------------------------------------------------------------------------- one wheel
def _status(report: dict[str, Any], required: list[str]) -> None:
    checks = report["checks"]
    backends = report.get("backends", {})
    for name in required:
        st = backends.get(name, {}).get("status", "unavailable")
        if st != "available":
            checks.append({"name": f"required backend {name}", "category": "backends", "backend": name,
                           "status": "failed",
                           "detail": f"{name} is {st}: {backends.get(name, {}).get('reason', '')}",
                           "metrics": {}, "duration_s": None})
    for name, b in backends.items():
        if b.get("status") == "pending":
            checks.append({"name": f"{name} backend: scenes, agreement, gradients, fit, timings", "category": "gpu",
                           "backend": name, "status": "pending", "detail": b.get("reason", ""), "metrics": {},
                           "duration_s": None})
    failed = [c for c in checks if c["status"] == "failed"]
    cuda = backends.get("cuda", {}).get("status")
    if cuda == "available":
        gpu_fail = [c for c in failed if c.get("backend") in ("cuda", "gl", None)]
        report["gpu_validation"] = "failed" if gpu_fail else "passed"
    elif cuda == "pending":
        report["gpu_validation"] = "pending"
    else:
        report["gpu_validation"] = "failed"
    if failed:
        report["status"], report["exit_code"] = "failed", EXIT_FAILED
    elif report["gpu_validation"] == "pending":
        report["status"], report["exit_code"] = "passed-gpu-pending", EXIT_GPU_PENDING
    else:
        report["status"], report["exit_code"] = "passed", EXIT_PASSED


def validate_wheel(wheel: str | os.PathLike[str], out_root: str | os.PathLike[str],
                   args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Validate one wheel; return (report, its output directory). Never raises for a failing wheel."""
    t0 = time.time()
    started = _now()
    info = inspect_wheel(wheel)
    out = Path(out_root) / info.filename[:-len(".whl")]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    report: dict[str, Any] = {
        "schema": "nvdiffrast-validation/1",
        "wheel": {"filename": info.filename, "sha256": info.sha256, "size": info.size, "version": info.version,
                  "variant": info.variant, "build_info": info.build_info, "requires_dist": info.requires_dist},
        "started": started, "checks": [], "backends": {}, "images": [], "timings": [], "environment": {},
    }
    work = Path(args.work_dir).resolve() / info.filename[:-4] if args.work_dir else \
        Path(tempfile.mkdtemp(prefix="nvdr-validate-"))
    if work.exists() and args.work_dir:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    log = out / "setup.log"
    _log(f"{info.filename} (sha256 {info.sha256[:16]}…) → {out}")
    try:
        py, facts = make_venv(info, work, args, log)
        report["environment"]["torch_source"] = facts["torch_source"]
        report["checks"].append({"name": "fresh venv + pip install --no-deps --only-binary :all:",
                                 "category": "install", "backend": None, "status": "passed",
                                 "detail": f"torch {facts['torch_source']}; wheel requires {facts['requirement']}",
                                 "metrics": {}, "duration_s": time.time() - t0})
        env, ext, calls = scrubbed_env(work, py)
        wdir = work / "worker"
        wdir.mkdir(exist_ok=True)
        for f in WORKER_FILES:
            shutil.copy2(HERE / f, wdir / f)
        golden_args: list[str] = []
        gdir, gmesh = REPO / "tests" / "assets" / "golden", REPO / "tests" / "assets" / "meshes.py"
        if gdir.is_dir() and gmesh.is_file() and any(gdir.glob("*.npz")):
            shutil.copytree(gdir, wdir / "golden", dirs_exist_ok=True)
            shutil.copy2(gmesh, wdir / "golden_meshes.py")
            golden_args = ["--goldens", str(wdir / "golden"), "--meshes", str(wdir / "golden_meshes.py")]
        else:
            report["checks"].append({"name": "goldens", "category": "goldens", "backend": None, "status": "skipped",
                                     "detail": f"no golden files at {gdir}; backends are compared with the "
                                               "reference backend only", "metrics": {}, "duration_s": None})
        run_dir = work / "run"
        run_dir.mkdir(exist_ok=True)
        cmd = [str(py), "-s", "-c",
               f"import sys; sys.path.insert(0, {str(wdir)!r}); import validate_worker; "
               "sys.exit(validate_worker.main(sys.argv[1:]))",
               "--out", str(out), "--venv", str(work / "venv"), "--expect-version", info.version,
               "--fit-iters", str(args.fit_iters)] + golden_args + (["--quick"] if args.quick else [])
        _log("running the worker in the scrubbed venv (log: worker.log)")
        rc = _stream(cmd, env, run_dir, out / "worker.log", args.timeout)
        res_file = out / "results.json"
        if res_file.exists():
            res = json.loads(res_file.read_text())
            res_file.unlink()
            report["environment"].update(res["environment"])
            report["backends"] = res["backends"]
            report["checks"] += res["checks"]
            report["images"] = res["images"]
            report["timings"] = res["timings"]
        if rc != 0 or not report["backends"]:
            tail = "\n".join((out / "worker.log").read_text(errors="replace").strip().splitlines()[-15:])
            report["checks"].append({"name": "validation worker", "category": "install", "backend": None,
                                     "status": "failed", "detail": f"exit status {rc}:\n{tail}", "metrics": {},
                                     "duration_s": None})
        called = calls.read_text().strip()
        left = sorted(os.listdir(ext))
        report["checks"].append({
            "name": "no compiler was invoked", "category": "no-compiler", "backend": None,
            "status": "failed" if called or left else "passed",
            "detail": (f"compiler calls: {called!r}; " if called else "no compiler call; ")
            + (f"TORCH_EXTENSIONS_DIR has {left}" if left else "TORCH_EXTENSIONS_DIR empty"),
            "metrics": {}, "duration_s": None})
    except SetupError as exc:
        report["checks"].append({"name": "validation environment", "category": "install", "backend": None,
                                 "status": "failed", "detail": str(exc), "metrics": {}, "duration_s": None})
        _log(f"error: {exc}")
    finally:
        if not args.keep_venv and not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    _status(report, [b for b in (args.require_backends or "").split(",") if b])
    report["finished"] = _now()
    report["duration_s"] = time.time() - t0
    page = write_report(report, out)
    n = {s: sum(1 for c in report["checks"] if c["status"] == s) for s in ("passed", "failed", "pending", "skipped")}
    _log(f"{info.filename}: {report['status']} (GPU validation {report['gpu_validation']}); "
         f"{n['passed']} passed, {n['failed']} failed, {n['pending']} pending, {n['skipped']} skipped; {page}")
    return report, out


def _stream(cmd: list[str], env: dict[str, str], cwd: Path, log: Path, timeout: float) -> int:
    """Run cmd, echo its output with a prefix, keep it in ``log``; kill it after ``timeout`` seconds."""
    with open(log, "w") as fh:
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             errors="replace")
        assert p.stdout is not None

        def pump() -> None:
            for line in p.stdout:  # type: ignore[union-attr]
                fh.write(line)
                fh.flush()
                print("   | " + line, end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
            reader.join(timeout=10)
            fh.write(f"\n[validate] worker killed after {timeout:.0f} s\n")
            return rc if rc != 0 else 124
        reader.join(timeout=30)
        return rc


# ------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("wheels", nargs="+", metavar="WHEEL")
    parser.add_argument("--out", default="validation", help="reports go to OUT/<wheel name>/ (default ./validation)")
    parser.add_argument("--torch-python", metavar="PYTHON",
                        help="interpreter whose torch the venv reuses (default: this one)")
    parser.add_argument("--torch-install", metavar="SPEC",
                        help="install this torch into the venv instead (torch==X.Y.Z)")
    parser.add_argument("--find-links", help="with --torch-install: local wheel directory")
    parser.add_argument("--index-url", help="with --torch-install: package index (e.g. the PyTorch index)")
    parser.add_argument("--require-backends", default="", metavar="LIST",
                        help="comma list of backends that must be available (e.g. cuda,gl); default none")
    parser.add_argument("--quick", action="store_true", help="smaller scenes and workloads")
    parser.add_argument("--fit-iters", type=int, default=120, help="Adam steps of the fit check")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per wheel before the worker is killed")
    parser.add_argument("--keep-venv", action="store_true", help="keep the temporary venv (its path is logged)")
    parser.add_argument("--work-dir", help="where venvs are made (kept) instead of a temporary directory")


def default_options(**overrides: Any) -> argparse.Namespace:
    """The options ``validate_wheel`` takes, at their command-line defaults, with ``overrides`` applied."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(["placeholder.whl"])
    del ns.wheels
    for k, v in overrides.items():
        if not hasattr(ns, k):
            raise TypeError(f"default_options(): unknown option {k!r}")
        setattr(ns, k, v)
    return ns


def worst_exit(codes: list[int]) -> int:
    """1 beats 3 beats 0."""
    if EXIT_FAILED in codes:
        return EXIT_FAILED
    if EXIT_GPU_PENDING in codes:
        return EXIT_GPU_PENDING
    return EXIT_PASSED


def run(args: argparse.Namespace) -> int:
    codes = []
    for w in args.wheels:
        try:
            rep, _ = validate_wheel(w, args.out, args)
        except IndexRefused as exc:
            print(f"ci validate: {exc}", file=sys.stderr)
            return EXIT_USAGE
        codes.append(rep["exit_code"])
    code = worst_exit(codes)
    meaning = {0: "all passed", 1: "FAILED", 3: "passed, GPU validation pending (no GPU here)"}[code]
    print(f"ci validate: {meaning} (exit {code})")
    return code
