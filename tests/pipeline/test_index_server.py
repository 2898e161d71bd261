"""Serving and uploading: ``ci serve`` over a static tree, and twine uploads to a pypiserver with auth.

pip installs go into fresh venvs with the machine's pip configuration switched off, so only the index
under test can supply the package.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_publish import make_fake_wheel, snapshot

from ci.index import sha256_file
from ci.publish import PublishError, publish
from ci.serve import start_in_thread

USER, PASSWORD = "ci", "s3cret"


# ------------------------------------------------------------------------------------------ helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def clean_pip_env() -> dict[str, str]:
    """No machine-wide pip config (find-links, extra indexes), no cache: only the index under test counts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1",
               PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    return env


def fresh_venv(path: Path, share_torch: bool = False) -> Path:
    """A new, empty venv (no pip, no setuptools: ``pip_install`` drives it with this interpreter's pip).

    With ``share_torch`` the running interpreter's site dirs (its torch and torch's dependencies, but not an
    nvdiffrast installed there) are appended to the venv's path, after the venv's own site-packages, so pip
    sees torch as installed and must fetch nvdiffrast from the index.
    """
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(path)
    py = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if share_torch:
        import site

        purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        from ci.validate import shared_site

        dirs = [d for d in site.getsitepackages() + [p for p in sys.path if p.endswith(("site-packages",
                                                                                          "dist-packages"))]
                if os.path.isdir(d)]
        shared = shared_site(list(dict.fromkeys(dirs)), path.parent / (path.name + "-shared-site"))
        Path(purelib, "_shared_torch.pth").write_text("\n".join(shared) + "\n")
    return py


def pip_install(py: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pip install ARGS`` into the venv of ``py`` (pip ≥ 22.3's ``--python``)."""
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", *args], capture_output=True,
                          text=True, env=clean_pip_env(), timeout=600)


@pytest.fixture
def pypiserver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A pypiserver on 127.0.0.1 that needs ci/s3cret for upload, download and list; yields (url, package dir)."""
    pytest.importorskip("pypiserver", reason="pypiserver[passlib] is a test requirement (ci/requirements-test.txt)")
    pytest.importorskip("passlib", reason="passlib is a test requirement (pypiserver[passlib])")
    from passlib.apache import HtpasswdFile

    pw = tmp_path / "htpasswd"
    h = HtpasswdFile(str(pw), new=True)
    h.set_password(USER, PASSWORD)
    h.save()
    pkgs = tmp_path / "server-packages"
    pkgs.mkdir()
    port = free_port()
    log = open(tmp_path / "pypiserver.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "pypiserver", "run", "-p", str(port), "-i", "127.0.0.1",
                             "-P", str(pw), "-a", "update,download,list", "--disable-fallback", str(pkgs)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                http_status(url + "health")
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"pypiserver exited: {(tmp_path / 'pypiserver.log').read_text()}") from None
                time.sleep(0.2)
        else:
            raise RuntimeError("pypiserver did not start within 30 s")
        yield url, pkgs
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("TWINE_USERNAME", "TWINE_PASSWORD", "TWINE_REPOSITORY_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NVDR_INDEX_USER", USER)
    monkeypatch.setenv("NVDR_INDEX_PASSWORD", PASSWORD)


# ------------------------------------------------------------------------------------------ static tree + ci serve
def test_serve_static_tree(tmp_path: Path) -> None:
    w = make_fake_wheel(tmp_path / "w")
    root = tmp_path / "idx"
    publish([w], str(root), "staging")
    srv, base = start_in_thread(root)
    try:
        assert http_status(f"{base}/") == 200
        assert http_status(f"{base}/pt214cu130/simple/") == 200
        assert http_status(f"{base}/pt214cu130/simple/nvdiffrast/") == 200
        assert http_status(f"{base}/manifest.json") == 200 and http_status(f"{base}/SHA256SUMS") == 200
        # Missing variant, missing project, a directory without index.html, hidden files: real 404s.
        assert http_status(f"{base}/pt999cu999/simple/nvdiffrast/") == 404
        assert http_status(f"{base}/pt214cu130/simple/other/") == 404
        assert http_status(f"{base}/pt214cu130/") == 404
        assert http_status(f"{base}/.lock") == 404
        with urllib.request.urlopen(f"{base}/pt214cu130/simple/nvdiffrast/{w.name.replace('+', '%2B')}") as r:
            assert r.read() == w.read_bytes()
    finally:
        srv.shutdown()
        srv.server_close()


def test_pip_installs_from_served_tree(tmp_path: Path) -> None:
    w = make_fake_wheel(tmp_path / "w", payload="from-static-tree")
    older = make_fake_wheel(tmp_path / "o", version="0.4.9+pt214cu130", payload="older")
    root = tmp_path / "idx"
    publish([w, older], str(root), "staging")
    srv, base = start_in_thread(root)
    try:
        py = fresh_venv(tmp_path / "venv")
        proc = pip_install(py, "nvdiffrast", "--index-url", f"{base}/pt214cu130/simple/")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = subprocess.run([str(py), "-c", "import nvdiffrast; print(nvdiffrast.PAYLOAD)"], capture_output=True,
                             text=True, cwd=tmp_path, env=clean_pip_env())
        assert out.stdout.strip() == "from-static-tree", out.stderr
        # A variant that does not exist fails to resolve instead of installing something else.
        proc = pip_install(py, "--force-reinstall", "nvdiffrast", "--index-url", f"{base}/pt999cu999/simple/")
        assert proc.returncode != 0
    finally:
        srv.shutdown()
        srv.server_close()


# ------------------------------------------------------------------------------------------ pypiserver + twine
def test_upload_with_auth_and_install(tmp_path: Path, pypiserver: tuple[str, Path], creds: None) -> None:
    pytest.importorskip("twine", reason="twine is a test requirement")
    url, pkgs = pypiserver
    w = make_fake_wheel(tmp_path / "w", payload="from-pypiserver")
    recs = publish([w], url)
    assert [r["action"] for r in recs] == ["published"]
    assert sha256_file(pkgs / w.name) == sha256_file(w)
    # Identical file again: recognised by sha256, not re-uploaded.
    assert publish([w], url)[0]["action"] == "unchanged"
    py = fresh_venv(tmp_path / "venv")
    host = url.split("//", 1)[1]
    proc = pip_install(py, "nvdiffrast", "--index-url", f"http://{USER}:{PASSWORD}@{host}simple/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = subprocess.run([str(py), "-c", "import nvdiffrast; print(nvdiffrast.PAYLOAD)"], capture_output=True,
                         text=True, cwd=tmp_path, env=clean_pip_env())
    assert out.stdout.strip() == "from-pypiserver"


def test_wrong_credentials_leave_server_unchanged(tmp_path: Path, pypiserver: tuple[str, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("twine", reason="twine is a test requirement")
    url, pkgs = pypiserver
    w = make_fake_wheel(tmp_path / "w")
    monkeypatch.setenv("TWINE_USERNAME", USER)
    monkeypatch.setenv("TWINE_PASSWORD", "wrong")
    with pytest.raises(PublishError, match="refused the credentials") as exc:
        publish([w], url)
    assert "Nothing was uploaded" in str(exc.value)
    assert list(pkgs.iterdir()) == []


def test_different_file_under_same_name_refused_on_server(tmp_path: Path, pypiserver: tuple[str, Path],
                                                          creds: None) -> None:
    pytest.importorskip("twine", reason="twine is a test requirement")
    url, pkgs = pypiserver
    w = make_fake_wheel(tmp_path / "a", payload="one")
    publish([w], url)
    before = snapshot(pkgs)
    other = make_fake_wheel(tmp_path / "b", payload="two")
    with pytest.raises(PublishError, match="immutable"):
        publish([other], url)
    assert snapshot(pkgs) == before


def test_dead_server(tmp_path: Path, creds: None) -> None:
    w = make_fake_wheel(tmp_path / "w")
    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    with pytest.raises(PublishError, match="cannot reach the index server") as exc:
        publish([w], url)
    assert "Nothing was uploaded" in str(exc.value)


def test_release_gate_applies_to_servers(tmp_path: Path, pypiserver: tuple[str, Path], creds: None) -> None:
    url, pkgs = pypiserver
    w = make_fake_wheel(tmp_path / "w")
    with pytest.raises(PublishError, match="release gate"):
        publish([w], url, "release")
    assert list(pkgs.iterdir()) == []
