"""The variant matrix (ci/matrix.toml + ``python -m ci matrix``), variant selection and the build's fail-fast
checks (no downloads, no compiler: everything here runs in seconds)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ci import build, matrix, toolchain
from ci._util import PipelineError, jobs_for_memory

ROOT = Path(__file__).resolve().parents[2]
MINORS = [f"2.{i}" for i in range(4, 15)]


def _vt(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


@pytest.fixture
def variants(monkeypatch: pytest.MonkeyPatch) -> list[matrix.Variant]:
    monkeypatch.delenv(matrix.INDEX_ENV, raising=False)
    return matrix.load_matrix()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.pop(matrix.INDEX_ENV, None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "ci", *args], capture_output=True, text=True, cwd=ROOT, env=e)


def test_every_torch_minor_from_2_4_with_published_cuda(variants: list[matrix.Variant]) -> None:
    minors = sorted({v.torch_minor for v in variants}, key=_vt)
    assert minors[: len(MINORS)] == MINORS
    by_minor = {m: sorted({v.cuda for v in variants if v.torch_minor == m}, key=_vt) for m in minors}
    # cu118 is published for torch 2.4-2.7 only.
    assert [m for m in minors if "11.8" in by_minor[m]] == ["2.4", "2.5", "2.6", "2.7"]
    assert by_minor["2.4"] == ["11.8", "12.1", "12.4"]
    assert by_minor["2.7"] == ["11.8", "12.6", "12.8"]
    assert by_minor["2.14"] == ["12.6", "13.0", "13.2"]
    assert all(len(c) >= 2 for c in by_minor.values())


def test_variant_fields(variants: list[matrix.Variant]) -> None:
    assert len({v.key for v in variants}) == len(variants)
    for v in variants:
        assert v.name == f"pt{v.torch_minor.replace('.', '')}cu{v.cuda.replace('.', '')}" and v.cu_tag in v.name
        assert v.torch_version.startswith(v.torch_minor + ".") and re.fullmatch(r"\d+\.\d+\.\d+", v.torch_version)
        assert v.abi3 == (_vt(v.torch_minor) >= (2, 6))
        assert v.python == "abi3" if v.abi3 else v.python == v.pythons
        assert v.pythons[0] == "3.10" and v.pythons == sorted(v.pythons, key=_vt)
        assert v.build_pythons == (["3.10"] if v.abi3 else v.pythons)
        assert v.torch_index_url == f"https://download.pytorch.org/whl/{v.cu_tag}"
        assert v.os in ("linux", "windows")
        assert v.cuda_full.startswith(v.cuda + ".")
        # CUDA 13+ has a complete nvcc on PyPI; older CUDA builds in its manylinux image.
        assert (v.pip_toolkit is not None) == (_vt(v.cuda) >= (13, 0))
        assert v.linux_image and v.cuda in v.linux_image
    for name in {v.name for v in variants}:
        assert {v.os for v in variants if v.name == name} == {"linux", "windows"}


def test_arch_lists_end_with_ptx_of_newest(variants: list[matrix.Variant]) -> None:
    for v in variants:
        items = v.arch_list.split(";")
        arches = [_vt(a.replace("+PTX", "")) for a in items]
        assert arches == sorted(arches) and len(set(arches)) == len(arches), v.arch_list
        assert items[-1].endswith("+PTX") and all("+PTX" not in a for a in items[:-1]), v.arch_list
        if _vt(v.cuda) >= (12, 8):
            assert arches[0] >= (7, 5) and (12, 0) in arches  # CUDA 13 dropped Volta; Blackwell SASS present
        else:
            assert arches[-1] == (9, 0)  # CUDA <= 12.6 ends with Hopper


def test_index_url_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(matrix.INDEX_ENV, "https://mirror.example/torch/{cu_tag}/")
    v = matrix.find_variant("pt27cu118", "linux")
    assert v.torch_index_url == "https://mirror.example/torch/cu118/"


def test_pypi_default_is_linux_only_and_one_per_minor(variants: list[matrix.Variant]) -> None:
    defaults = [v for v in variants if v.pypi_default]
    assert all(v.os == "linux" for v in defaults)
    assert sorted((v.torch_minor for v in defaults), key=_vt) == MINORS
    assert {v.name for v in defaults if _vt(v.torch_minor) >= (2, 11)} == {
        "pt211cu130", "pt212cu130", "pt213cu130", "pt214cu130"}


def test_adding_a_torch_release_is_one_edit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(matrix.INDEX_ENV, raising=False)
    path = tmp_path / "matrix.toml"
    path.write_text(matrix.MATRIX_PATH.read_text() + '\n[[torch]]\nminor = "2.15"\nversion = "2.15.0"\n'
                    'python = ["3.10", "3.15"]\ncuda = ["13.0", "13.2"]\npypi_cuda = "13.2"\n')
    new = [v for v in matrix.load_matrix(path) if v.torch_minor == "2.15"]
    assert sorted(v.key for v in new) == ["pt215cu130-linux", "pt215cu130-windows", "pt215cu132-linux",
                                          "pt215cu132-windows"]
    assert all(v.abi3 and v.arch_list == "7.5;8.0;8.6;9.0;10.0;12.0+PTX" for v in new)
    assert matrix.minimal([v for v in matrix.load_matrix(path) if v.os == "linux"])[-1].name == "pt215cu132"


@pytest.mark.parametrize("block,message", [
    ('minor = "2.16"\nversion = "2.15.0"\npython = ["3.11"]\ncuda = ["13.0"]', "not a patch release of minor"),
    ('minor = "2.16"\nversion = "2.16.0"\npython = ["3.11"]\ncuda = ["14.0"]', r'CUDA 14.0 has no \[cuda."14.0"\]'),
    ('minor = "2.16"\nversion = "2.16.0"\npython = ["3.11"]\ncuda = ["13.0"]\narch_list = { "13.0" = "8.0;9.0" }',
     "must be 'X.Y;...;X.Y\\+PTX'"),
    ('minor = "2.16"\nversion = "2.16.0"\npython = ["3.9"]\ncuda = ["13.0"]', "no Python version >= 3.10"),
    ('minor = "2.16"\nversion = "2.16.0"\npython = ["3.11"]\ncuda = ["13.0"]\nos = ["macos"]', "os must be one of"),
    ('version = "2.16.0"\npython = ["3.11"]\ncuda = ["13.0"]', "missing required key 'minor'"),
    ('minor = "2.14"\nversion = "2.14.0"\npython = ["3.11"]\ncuda = ["13.0"]', "duplicate variant pt214cu130"),
])
def test_malformed_matrix_names_the_entry(tmp_path: Path, block: str, message: str) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text(matrix.MATRIX_PATH.read_text() + "\n[[torch]]\n" + block + "\n")
    with pytest.raises(matrix.MatrixError, match=message):
        matrix.load_matrix(path)


def test_unreadable_matrix(tmp_path: Path) -> None:
    with pytest.raises(matrix.MatrixError, match="cannot read matrix file"):
        matrix.load_matrix(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[torch]\n")
    with pytest.raises(matrix.MatrixError, match="invalid TOML"):
        matrix.load_matrix(bad)


def test_minimal_is_newest_and_oldest_per_os(variants: list[matrix.Variant]) -> None:
    assert [v.key for v in matrix.minimal(variants)] == [
        "pt24cu118-linux", "pt214cu132-linux", "pt24cu118-windows", "pt214cu132-windows"]


def test_cli_table() -> None:
    proc = _cli("matrix")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:5] == ["variant", "os", "torch", "cuda", "python"]
    assert any(ln.startswith("pt27cu118") and "windows" in ln for ln in lines)
    n = len(matrix.load_matrix())
    assert f"{n} variants ({n // 2} torch/CUDA pairs)" in proc.stdout


def test_cli_json_and_github_formats() -> None:
    data = json.loads(_cli("matrix", "--format", "json", "--variant", "pt26cu126").stdout)
    assert [(d["name"], d["os"], d["abi3"], d["python"]) for d in data] == [
        ("pt26cu126", "linux", True, "abi3"), ("pt26cu126", "windows", True, "abi3")]
    proc = _cli("matrix", "--minimal", "--os", "linux", "--format", "github")
    assert proc.returncode == 0 and len(proc.stdout.strip().splitlines()) == 1  # one line for $GITHUB_OUTPUT
    inc = json.loads(proc.stdout)["include"]
    assert [i["variant"] for i in inc] == ["pt24cu118", "pt214cu132"]
    old, new = inc
    assert old["cibw_build"] == "cp310-manylinux_x86_64 cp311-manylinux_x86_64 cp312-manylinux_x86_64"
    assert new["cibw_build"] == "cp310-manylinux_x86_64" and new["abi3"] is True
    assert new["image"] == "pytorch/manylinux2_28-builder:cuda13.2" and new["artifact"] == "wheels-pt214cu132-linux"
    win = json.loads(_cli("matrix", "--variant", "pt27cu118", "--os", "windows", "--format", "github").stdout)
    (w,) = win["include"]
    assert w["runner"].startswith("windows") and w["cibw_build"] == "cp310-win_amd64"
    assert json.loads(w["win_cuda_subpackages"])[:2] == ["nvcc", "cudart"]
    assert w["nvcc_append_flags"] == "-allow-unsupported-compiler"


def test_cli_rejects_unknown_variant() -> None:
    proc = _cli("matrix", "--variant", "pt99cu999")
    assert proc.returncode == 2 and "unknown variant(s) pt99cu999" in proc.stderr


def test_local_variant_follows_installed_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matrix, "installed_torch", lambda: ("2.14.1", "13.0"))
    v = matrix.local_variant()
    assert (v.name, v.torch_version, v.os) == ("pt214cu130", "2.14.1", matrix.current_os())
    monkeypatch.setattr(matrix, "installed_torch", lambda: ("2.13.1", "13.0"))
    assert (matrix.local_variant().name, matrix.local_variant().torch_version) == ("pt213cu130", "2.13.1")
    monkeypatch.setattr(matrix, "installed_torch", lambda: ("2.3.1", "12.1"))
    with pytest.raises(matrix.MatrixError, match="torch 2.3.1 .CUDA 12.1. has no variant"):
        matrix.local_variant()


def test_local_variant_without_cuda_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    # No torch (or a CPU-only one): the newest torch whose PyPI wheel is a CUDA build with a PyPI toolkit.
    for found in (None, ("2.13.0", None)):
        monkeypatch.setattr(matrix, "installed_torch", lambda f=found: f)
        if matrix.current_os() == "linux":
            assert matrix.local_variant().name == "pt214cu130"


def test_installed_torch_matches_runtime() -> None:
    found = matrix.installed_torch()
    if found is None:
        assert matrix.importlib.util.find_spec("torch") is None
        return
    import torch

    assert found == (torch.__version__.split("+")[0], torch.version.cuda)


def test_build_fails_fast_without_toolkit_or_torch_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(toolchain, "find_system_toolkit", lambda cuda: (None, [f"/opt/cuda is CUDA 13.0, not {cuda}"]))
    monkeypatch.setattr(build, "_probe_index", lambda url: f"{url} is not reachable (test)")
    with pytest.raises(PipelineError) as exc:
        build.build_variant("pt27cu118", tmp_path / "out", work_dir=tmp_path / "work")
    msg = str(exc.value)
    assert "cannot build variant pt27cu118" in msg and "CUDA 11.8 toolkit" in msg and "NVDR_TORCH_INDEX_URL" in msg
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()  # nothing created or downloaded


def test_build_pypi_variant_needs_only_pypi(monkeypatch: pytest.MonkeyPatch) -> None:
    # pt213cu130: no system toolkit and no torch index needed (PyPI carries both torch and nvcc 13).
    monkeypatch.setattr(build, "_probe_index", lambda url: f"{url} is not reachable (test)")
    v = build.resolve_variant("pt213cu130")
    assert [d for d, _ in build._torch_sources(v)] == ["PyPI (its torch wheel is the CUDA 13.0 build)"]
    with pytest.raises(PipelineError, match="published only on https://download.pytorch.org/whl/cu132"):
        build._torch_sources(build.resolve_variant("pt213cu132"))


def test_build_rejects_foreign_os_and_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = "windows" if matrix.current_os() == "linux" else "linux"
    path = tmp_path / "matrix.toml"
    path.write_text(matrix.MATRIX_PATH.read_text() + f'\n[[torch]]\nminor = "2.16"\nversion = "2.16.0"\n'
                    f'python = ["3.11"]\ncuda = ["13.0"]\nos = ["{other}"]\n')
    with pytest.raises(PipelineError, match=f"pt216cu130 is built on {other}, not on {matrix.current_os()}"):
        build.build_variant("pt216cu130", tmp_path / "o", matrix_file=path)
    with pytest.raises(PipelineError, match="--python 3.9: variant pt24cu118 .* supports Python 3.10, 3.11, 3.12"):
        build.build_variant("pt24cu118", tmp_path / "o", python="3.9")
    with pytest.raises(matrix.MatrixError, match="unknown variant 'pt99cu1'"):
        build.build_variant("pt99cu1", tmp_path / "o")


def test_cli_build_needs_a_variant() -> None:
    proc = _cli("build", env={"NVDR_VARIANT": ""})
    assert proc.returncode == 2 and "--variant is required" in proc.stderr


def test_system_toolkit_found_by_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "cuda-11.8"
    (home / "bin").mkdir(parents=True)
    (home / "include").mkdir()
    (home / "include" / "cuda_runtime.h").write_text("/* test */\n")
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 11.8, V11.8.89'\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CUDA_HOME", str(home))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    tk, _ = toolchain.find_system_toolkit("11.8")
    assert tk is not None and tk.cuda_home == home.resolve() and tk.version == "11.8" and tk.source == "CUDA_HOME"
    other, notes = toolchain.find_system_toolkit("12.9")
    assert (other is None or other.version == "12.9") and any("is CUDA 11.8, not 12.9" in n for n in notes)


def test_jobs_sized_by_memory() -> None:
    assert jobs_for_memory(per_job_bytes=1 << 60, cpus=8) == 1
    assert 1 <= jobs_for_memory(per_job_bytes=1, cpus=3) <= 3
