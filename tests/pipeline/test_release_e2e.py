"""End to end with the real wheel: build → repair → publish (pypiserver with auth, static tree behind
``ci serve``) → ``pip install nvdiffrast --index-url …`` into a fresh venv → import and render on the CPU.

The wheel is built once per CI run: ``.ci/run`` builds and repairs it and passes its path in
``NVDR_TEST_WHEEL``. Without that variable the fixture builds (and, where auditwheel is installed, repairs)
the local variant itself, which takes a while on a small machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_index_server import (  # noqa: F401 - pypiserver is a fixture
    PASSWORD,
    USER,
    clean_pip_env,
    free_port,
    fresh_venv,
    http_status,
    pip_install,
    pypiserver,
)

from ci.index import inspect_wheel, sha256_file
from ci.publish import PublishError, publish

REPO = Path(__file__).resolve().parents[2]

RENDER = r"""
import json, sys
import nvdiffrast, torch
import nvdiffrast.torch as dr
pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [-0.8, 0.8, 0.0, 1.0]]])
tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
ctx = dr.RasterizeCudaContext(device="cpu")
rast, _ = dr.rasterize(ctx, pos, tri, resolution=[64, 64])
img, _ = dr.interpolate(torch.eye(3)[None].contiguous(), rast, tri)
img = dr.antialias(img.contiguous(), rast, pos, tri)
print(json.dumps({"file": nvdiffrast.__file__, "version": nvdiffrast.__version__,
                  "lower_left": img[0, 8, 8].tolist(), "lower_right": img[0, 8, 40].tolist(),
                  "upper_left": img[0, 40, 8].tolist(), "upper_right": img[0, 60, 60].tolist()}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("NVDR_TEST_WHEEL")
    if given:
        p = Path(given)
        if not p.is_file():
            raise FileNotFoundError(f"NVDR_TEST_WHEEL={given} does not exist")
        return p
    from ci.build import build_variant

    out = tmp_path_factory.mktemp("dist")
    built = build_variant("local", out)
    import importlib.util

    if importlib.util.find_spec("auditwheel") is None:
        return built
    from ci.repair import repair_wheel

    return repair_wheel(built, out / "wheelhouse")


def render_in(py: Path, cwd: Path) -> dict:
    out = subprocess.run([str(py), "-c", RENDER], capture_output=True, text=True, cwd=cwd, env=clean_pip_env(),
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_render(res: dict, venv_dir: Path, version: str) -> None:
    assert Path(res["file"]).resolve().is_relative_to(venv_dir.resolve()), res["file"]  # not the checkout
    assert res["version"] == version
    assert max(res["lower_left"]) == res["lower_left"][0] > 0.5  # red corner (row 0 = bottom)
    assert max(res["lower_right"]) == res["lower_right"][1] > 0.3  # green
    assert max(res["upper_left"]) == res["upper_left"][2] > 0.3  # blue
    assert res["upper_right"] == [0.0, 0.0, 0.0]


def test_pypiserver_with_auth_then_install_and_render(tmp_path: Path, wheel: Path,  # noqa: F811 - fixture
                                                      pypiserver: tuple[str, Path],  # noqa: F811
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("twine", reason="twine is a test requirement")
    url, pkgs = pypiserver
    info = inspect_wheel(wheel)
    # Wrong credentials first: a clear error and an untouched server.
    monkeypatch.setenv("TWINE_USERNAME", USER)
    monkeypatch.setenv("TWINE_PASSWORD", "not-the-password")
    with pytest.raises(PublishError, match="refused the credentials"):
        publish([wheel], url)
    assert list(pkgs.iterdir()) == []
    monkeypatch.setenv("TWINE_PASSWORD", PASSWORD)
    assert publish([wheel], url)[0]["action"] == "published"
    assert sha256_file(pkgs / wheel.name) == info.sha256
    venv_dir = tmp_path / "venv"
    py = fresh_venv(venv_dir, share_torch=True)
    host = url.split("//", 1)[1]
    proc = pip_install(py, "nvdiffrast", "--index-url", f"http://{USER}:{PASSWORD}@{host}simple/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_render(render_in(py, tmp_path), venv_dir, info.version)


def test_release_command_static_tree_serve_install_render(tmp_path: Path, wheel: Path) -> None:
    info = inspect_wheel(wheel)
    wh = tmp_path / "wheelhouse"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "ci", "release", "--wheel", str(wheel), "--wheelhouse", str(wh), "--quick"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=1800)
    out = proc.stdout + proc.stderr
    gpu = proc.returncode == 0
    assert proc.returncode in (0, 3), out  # 3: validated on the CPU, GPU validation pending
    for col in ("variant", "wheel", "size", "build time", "validation", "published"):
        assert col in out
    assert "pip install" in out and "--extra-index-url" in out
    reports = list((wh / "validation").glob("*/validation.json"))
    assert len(reports) == 1
    rep = json.loads(reports[0].read_text())
    assert rep["wheel"]["sha256"] == info.sha256
    assert rep["status"] == ("passed" if gpu else "passed-gpu-pending"), [
        c for c in rep["checks"] if c["status"] == "failed"]
    assert (reports[0].parent / "report.html").stat().st_size > 10_000  # pictures embedded
    index = wh / "index-staging"
    assert (index / info.variant / "simple" / "nvdiffrast" / wheel.name).is_file() or any(
        (index / info.variant / "simple" / "nvdiffrast").glob("*.whl"))

    # Resumable: a second run redoes nothing.
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert again.returncode == proc.returncode, again.stdout + again.stderr
    assert "skipped (report for this sha256 exists)" in again.stdout or gpu
    assert "(unchanged)" in again.stdout

    # The release gate: promotion needs a passing GPU report for exactly this file.
    staged = next((index / info.variant / "simple" / "nvdiffrast").glob("*.whl"))
    rel = subprocess.run([sys.executable, "-m", "ci", "publish", str(staged), "--to", str(tmp_path / "release"),
                          "--stage", "release"], capture_output=True, text=True, cwd=REPO, env=env)
    assert rel.returncode == 1 and "release gate" in rel.stderr
    rel = subprocess.run([sys.executable, "-m", "ci", "publish", str(staged), "--to", str(tmp_path / "release"),
                          "--stage", "release", "--report", str(reports[0])], capture_output=True, text=True,
                         cwd=REPO, env=env)
    assert rel.returncode == (0 if gpu else 1), rel.stdout + rel.stderr

    # Serve the staging tree and install from it with pip, like a user.
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-m", "ci", "serve", str(index), "--port", str(port), "--quiet"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                http_status(base + "/")
                break
            except OSError:
                time.sleep(0.1)
        assert http_status(f"{base}/pt0cu0/simple/nvdiffrast/") == 404
        venv_dir = tmp_path / "venv"
        py = fresh_venv(venv_dir, share_torch=True)
        proc = pip_install(py, "nvdiffrast", "--index-url", f"{base}/{info.variant}/simple/")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        check_render(render_in(py, tmp_path), venv_dir, info.version)
    finally:
        srv.terminate()
        srv.wait(timeout=10)


# ------------------------------------------------------------------------------------------ validation logic
def _info_for(tmp_path: Path, requires: tuple[str, ...] = ("torch<2.15,>=2.14",), tag: str = "cp310-abi3-linux_x86_64"):
    from test_publish import make_fake_wheel

    return inspect_wheel(make_fake_wheel(tmp_path, tag=tag, requires_dist=requires))


def test_torch_requirement_and_python_tag(tmp_path: Path) -> None:
    from ci.validate import _python_ok, torch_requirement

    info = _info_for(tmp_path / "a")
    assert torch_requirement(info) == ((2, 14), (2, 15))
    assert _python_ok(info, "3.12.3") and _python_ok(info, "3.10.0") and not _python_ok(info, "3.9.18")
    per_py = _info_for(tmp_path / "b", tag="cp311-cp311-linux_x86_64")
    assert _python_ok(per_py, "3.11.7") and not _python_ok(per_py, "3.12.0")


def test_status_and_exit_codes() -> None:
    from ci.validate import _status, worst_exit

    def rep(cuda: str, failed: str | None = None, gl: str = "available") -> dict:
        checks = [{"name": "x", "backend": "reference", "status": "passed"}]
        if failed:
            checks.append({"name": "y", "backend": failed, "status": "failed"})
        return {"checks": checks, "backends": {"reference": {"status": "available"}, "cuda": {"status": cuda},
                                               "gl": {"status": gl}}}

    r = rep("pending")
    _status(r, [])
    assert (r["status"], r["gpu_validation"], r["exit_code"]) == ("passed-gpu-pending", "pending", 3)
    assert any(c["status"] == "pending" and c["backend"] == "cuda" for c in r["checks"])
    r = rep("available")
    _status(r, [])
    assert (r["status"], r["gpu_validation"], r["exit_code"]) == ("passed", "passed", 0)
    r = rep("available", failed="gl")
    _status(r, [])
    assert (r["status"], r["gpu_validation"], r["exit_code"]) == ("failed", "failed", 1)
    r = rep("available", gl="unavailable")
    _status(r, ["cuda", "gl"])
    assert r["status"] == "failed" and any(c["name"] == "required backend gl" for c in r["checks"])
    assert worst_exit([0, 3, 0]) == 3 and worst_exit([3, 1]) == 1 and worst_exit([0]) == 0


def test_validate_refuses_a_torch_mismatch_clearly(tmp_path: Path) -> None:
    from test_publish import make_fake_wheel

    from ci.validate import default_options, validate_wheel

    w = make_fake_wheel(tmp_path / "w", tag="cp310-abi3-linux_x86_64", requires_dist=("torch<9.1,>=9.0",))
    rep, out = validate_wheel(w, tmp_path / "val", default_options())
    assert rep["status"] == "failed" and rep["exit_code"] == 1
    (env_check,) = [c for c in rep["checks"] if c["name"] == "validation environment"]
    assert "needs torch>=9.0,<9.1" in env_check["detail"] and "--torch-python" in env_check["detail"]
    saved = json.loads((out / "validation.json").read_text())
    assert saved["wheel"]["sha256"] == sha256_file(w) and (out / "report.html").is_file()


def test_release_state_resume_rules(tmp_path: Path) -> None:
    from test_publish import make_fake_wheel

    from ci.release import State, source_fingerprint

    wh = tmp_path / "wh"
    w = make_fake_wheel(wh)
    st = State(wh)
    st.put("pt214cu130", "build", {"wheel": w.name, "sha256": sha256_file(w), "source": "abc"})
    again = State(wh)  # reloaded from release-state.json
    assert again.file_ok(again.get("pt214cu130", "build")) == w
    w.write_bytes(w.read_bytes() + b"x")  # output changed behind our back: the stage must run again
    assert again.file_ok(again.get("pt214cu130", "build")) is None
    assert again.file_ok(None) is None and again.get("other", "build") is None
    fp = source_fingerprint()
    assert len(fp) == 64 and fp == source_fingerprint()
