"""Helpers shared by the pipeline stages: logging, running external commands, fresh venvs.

Every external command is printed (``+ cmd``) before it runs, so a CI log shows exactly what happened and a
person can re-run any step by hand.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import venv
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class PipelineError(RuntimeError):
    """A stage cannot go on; the message says what is missing and how to fix it."""


def log(msg: str) -> None:
    """Print a pipeline message to stderr (stdout stays free for machine-readable output)."""
    print(f"[ci] {msg}", file=sys.stderr, flush=True)


def format_cmd(cmd: Sequence[str | os.PathLike[str]]) -> str:
    """Render a command the way a shell user would type it."""
    return " ".join(shlex.quote(str(c)) for c in cmd)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    log_file: Path | None = None,
    capture: bool = False,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Log and run ``cmd``.

    ``log_file``: stdout+stderr are appended there (and still echoed). ``capture``: output is not echoed but
    returned (``.stdout``/``.stderr`` separately without ``log_file``, merged in ``.stdout`` with it).
    A non-zero exit raises :class:`PipelineError` when ``check`` is set, with the tail of the output.
    """
    argv = [str(c) for c in cmd]
    where = f" (in {cwd})" if cwd else ""
    log(f"+ {format_cmd(argv)}{where}")
    if not argv or (shutil.which(argv[0], path=(env or os.environ).get("PATH")) is None
                    and not os.path.isfile(argv[0])):
        raise PipelineError(f"command not found: {argv[0] if argv else '(empty command)'}")
    full_env = dict(os.environ if env is None else env)
    if log_file is None and capture:
        proc = subprocess.run(argv, cwd=cwd, env=full_env, text=True, capture_output=True, errors="replace")
        out = proc.stdout + proc.stderr
        if check and proc.returncode != 0:
            tail = "\n".join(out.strip().splitlines()[-25:])
            raise PipelineError(f"command failed (exit {proc.returncode}): {format_cmd(argv)}\n{tail}")
        return proc
    else:
        lines: list[str] = []
        fh = open(log_file, "a", encoding="utf-8") if log_file else None
        try:
            if fh:
                fh.write(f"+ {format_cmd(argv)}{where}\n")
                fh.flush()
            p = subprocess.Popen(argv, cwd=cwd, env=full_env, text=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, errors="replace")
            assert p.stdout is not None
            for line in p.stdout:
                lines.append(line)
                if fh:
                    fh.write(line)
                if not capture:
                    sys.stderr.write(line)
            rc = p.wait()
        finally:
            if fh:
                fh.close()
        out = "".join(lines)
        proc = subprocess.CompletedProcess(argv, rc, out, "")
    if check and proc.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-25:])
        raise PipelineError(f"command failed (exit {proc.returncode}): {format_cmd(argv)}\n{tail}")
    if capture:
        proc.stdout = out
    return proc


def create_venv(path: Path, python: str | None = None) -> Path:
    """Create a fresh virtual environment at ``path`` (removed first if present); return its python.

    ``python``: an interpreter (``3.12`` or a path) to create it with; default is the running one.
    """
    if path.exists():
        log(f"removing old venv {path}")
        shutil.rmtree(path)
    if python is None or python == f"{sys.version_info[0]}.{sys.version_info[1]}":
        log(f"+ {sys.executable} -m venv {path}")
        venv.EnvBuilder(with_pip=True, symlinks=os.name != "nt").create(path)
    else:
        exe = python if os.path.sep in python else shutil.which(f"python{python}")
        if not exe:
            raise PipelineError(f"Python {python} is not installed here (no 'python{python}' on PATH); "
                                "install it or build with --python "
                                f"{sys.version_info[0]}.{sys.version_info[1]}")
        run([exe, "-m", "venv", str(path)])
    return venv_python(path)


def venv_python(path: Path) -> Path:
    """The interpreter inside the venv at ``path``."""
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def pip_env() -> dict[str, str]:
    """Environment for pip calls in build venvs: quiet version check, a generous network timeout."""
    env = dict(os.environ)
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    env.setdefault("PIP_DEFAULT_TIMEOUT", "180")
    return env


def mem_available_bytes() -> int | None:
    """Available memory from /proc/meminfo (Linux) or None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def jobs_for_memory(per_job_bytes: int = 3 * 1024**3, cpus: int | None = None) -> int:
    """Parallel compile jobs: one per ``per_job_bytes`` of free memory, at most one per CPU, at least one.

    nvcc with cicc peaks near 3 GB for a template-heavy translation unit, so that is the default budget.
    """
    ncpu = cpus or os.cpu_count() or 1
    avail = mem_available_bytes()
    by_mem = ncpu if avail is None else max(1, avail // per_job_bytes)
    return int(max(1, min(ncpu, by_mem)))


class Timer:
    """Wall-clock timer: ``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.monotonic()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.start
