"""``python -m ci test``: install a built wheel into a fresh venv and run the test suite against it.

This is the README's test command and what ``.ci/run`` calls. The wheel is taken from ``--wheel`` or
the newest wheel in ``./wheelhouse`` that fits this machine; the venv gets the wheel's torch (from the
configured index or this machine's pip configuration) and ``ci/requirements-test.txt``. The wheel path
is exported as ``NVDR_TEST_WHEEL`` so that pipeline tests reuse it instead of building again.
pytest's exit status 5 (no tests collected) is a failure.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _log(msg: str) -> None:
    print(f"[ci test] {msg}", flush=True)


def _run(cmd: list[str], **kw) -> None:
    _log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kw)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wheel", help="wheel to test (default: newest fitting wheel in ./wheelhouse)")
    p.add_argument("--venv", default=str(ROOT / ".venv-test"), help="where to create the test venv")
    p.add_argument("--reuse-venv", action="store_true", help="keep an existing test venv (faster reruns)")
    p.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")


def _wheel_requires_torch(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        for line in zf.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist: torch"):
                return line.split(":", 1)[1].strip().replace(" ", "")
    raise SystemExit(f"{wheel.name}: no torch requirement in its metadata")


def find_wheel(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit).resolve()
    cands = [Path(p) for p in glob.glob(str(ROOT / "wheelhouse" / "**" / "nvdiffrast-*.whl"), recursive=True)]
    if sys.platform == "win32":
        cands = [c for c in cands if c.name.endswith("win_amd64.whl")]
    else:  # repaired (manylinux_*) wheels only: the raw linux_x86_64 build is not installable elsewhere
        cands = [c for c in cands if "manylinux" in c.name and c.name.endswith("x86_64.whl")]
    if not cands:
        raise SystemExit("no nvdiffrast wheel in ./wheelhouse: run the README's first command "
                         "(python -m ci release) or pass --wheel")
    return max(cands, key=lambda p: p.stat().st_mtime).resolve()


def run(args: argparse.Namespace) -> int:
    wheel = find_wheel(args.wheel)
    _log(f"wheel: {wheel}")
    venv = Path(args.venv)
    py = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    if venv.exists() and not args.reuse_venv:
        shutil.rmtree(venv)
    t0 = time.time()
    if not py.exists():
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"])
        _run([str(py), "-m", "pip", "install", "-q", _wheel_requires_torch(wheel),
              "-r", str(ROOT / "ci" / "requirements-test.txt")])
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", "--only-binary", ":all:",
          str(wheel)])
    _log(f"test venv ready in {time.time() - t0:.0f} s")
    env = dict(os.environ, NVDR_TEST_WHEEL=str(wheel), NVDR_TEST_PYTHON=str(py))
    pytest = venv / ("Scripts/pytest.exe" if sys.platform == "win32" else "bin/pytest")
    # The pytest script (not `python -m pytest`) keeps the source tree off the front of sys.path,
    # so the tests import the installed wheel.
    cmd = [str(pytest), "-q", "-p", "no:cacheprovider", "tests", *args.pytest_args]
    _log("$ " + " ".join(cmd))
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    if rc == 5:
        _log("pytest collected no tests: that is a failure")
        return 1
    return rc
