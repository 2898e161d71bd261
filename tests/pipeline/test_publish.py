"""Static index publishing: layout, PEP 503/658 details, immutability, wheels only, the release gate.

Uses tiny fake wheels (valid zips with METADATA, WHEEL, RECORD), so these tests take a second.
"""

from __future__ import annotations

import base64
import hashlib
import html
import html.parser
import json
import zipfile
from pathlib import Path

import pytest

from ci import __main__ as ci_main
from ci.index import inspect_wheel, sha256_file
from ci.publish import PublishError, publish
from ci.report import png_bytes, read_png_rgb, render_html


def make_fake_wheel(directory: Path, version: str = "0.5.0+pt214cu130", variant: str | None = "pt214cu130",
                    payload: str = "", requires_python: str = ">=3.10", name: str = "nvdiffrast",
                    tag: str = "py3-none-any", requires_dist: tuple[str, ...] = ()) -> Path:
    """A minimal installable wheel of ``name`` (pure Python) with a build-info file naming ``variant``."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {
        f"{name}/__init__.py": f"FAKE = True\nPAYLOAD = {payload!r}\n".encode(),
    }
    if variant:
        files[f"{name}/_build_info.json"] = json.dumps({"variant": variant, "version": version,
                                                        "torch_minor": "2.14"}).encode()
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    if requires_python:
        meta += f"Requires-Python: {requires_python}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires_dist)
    files[f"{dist}/METADATA"] = (meta + "\n").encode()
    files[f"{dist}/WHEEL"] = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n\n".encode()
    record = []
    for k, v in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b"=").decode()
        record.append(f"{k},sha256={digest},{len(v)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in files.items():
            zf.writestr(k, v)
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones included) → sha256."""
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != ".lock"}


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        if tag == "a":
            self.anchors.append(dict(attrs))


def _anchors(page: Path) -> list[dict[str, str | None]]:
    p = _Links()
    p.feed(page.read_text())
    return p.anchors


def _report(tmp: Path, wheel: Path, status: str = "passed", gpu: str = "passed", sha: str | None = None) -> Path:
    rep = {"schema": "nvdiffrast-validation/1", "status": status, "gpu_validation": gpu,
           "wheel": {"filename": wheel.name, "sha256": sha or sha256_file(wheel)},
           "environment": {"gpu": "Test GPU"}, "backends": {"cuda": {"status": "available"}}, "checks": []}
    out = tmp / f"report-{status}-{gpu}-{wheel.stem}.json"
    out.write_text(json.dumps(rep))
    return out


def test_tree_layout_and_pep503_details(tmp_path: Path) -> None:
    w = make_fake_wheel(tmp_path / "in")
    root = tmp_path / "idx"
    recs = publish([w], str(root), "staging")
    assert [r["action"] for r in recs] == ["published"]
    pdir = root / "pt214cu130" / "simple" / "nvdiffrast"
    assert (pdir / w.name).read_bytes() == w.read_bytes()
    # PEP 503 root of the variant lists the project.
    assert [a["href"] for a in _anchors(root / "pt214cu130" / "simple" / "index.html")] == ["nvdiffrast/"]
    (a,) = _anchors(pdir / "index.html")
    href, _, frag = a["href"].partition("#")
    assert href == w.name.replace("+", "%2B")
    assert frag == f"sha256={sha256_file(w)}"
    assert a["data-requires-python"] == ">=3.10"  # the parser unescapes &gt;
    assert "&gt;=3.10" in (pdir / "index.html").read_text()
    # PEP 658 / 714: the .metadata file is the wheel's METADATA, and its hash is announced.
    meta = (pdir / (w.name + ".metadata")).read_bytes()
    with zipfile.ZipFile(w) as zf:
        assert meta == zf.read("nvdiffrast-0.5.0+pt214cu130.dist-info/METADATA")
    mhash = "sha256=" + hashlib.sha256(meta).hexdigest()
    assert a["data-dist-info-metadata"] == mhash and a["data-core-metadata"] == mhash
    # SHA256SUMS verifies like `sha256sum -c` from the root.
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        assert sha256_file(root / rel) == digest
    manifest = json.loads((root / "manifest.json").read_text())
    entry = manifest["variants"]["pt214cu130"]["files"][w.name]
    assert manifest["stage"] == "staging" and entry["sha256"] == sha256_file(w)
    assert entry["build_info"]["variant"] == "pt214cu130"
    page = html.unescape((root / "index.html").read_text())
    assert 'pip install "nvdiffrast==0.5.0+pt214cu130" --extra-index-url {ROOT}/pt214cu130/simple/' in page


def test_variants_are_separate_indexes(tmp_path: Path) -> None:
    w1 = make_fake_wheel(tmp_path / "a", version="0.5.0+pt214cu130", variant="pt214cu130")
    w2 = make_fake_wheel(tmp_path / "b", version="0.5.0+pt27cu118", variant="pt27cu118")
    root = tmp_path / "idx"
    publish([w1, w2], str(root), "staging", base_url="http://example.invalid/whl")
    for variant, w in (("pt214cu130", w1), ("pt27cu118", w2)):
        names = [a["href"].split("#")[0] for a in _anchors(root / variant / "simple" / "nvdiffrast" / "index.html")]
        assert names == [w.name.replace("+", "%2B")]
    assert not (root / "pt999cu000").exists()  # a missing variant is a missing directory (404 when served)
    page = html.unescape((root / "index.html").read_text())
    assert "--extra-index-url http://example.invalid/whl/pt27cu118/simple/" in page


def test_immutable_files(tmp_path: Path) -> None:
    w = make_fake_wheel(tmp_path / "a", payload="one")
    root = tmp_path / "idx"
    publish([w], str(root), "staging")
    before = snapshot(root)
    # The identical file again: accepted, nothing changes.
    assert publish([w], str(root), "staging")[0]["action"] == "unchanged"
    other = make_fake_wheel(tmp_path / "b", payload="two")  # same file name, other bytes
    assert other.name == w.name
    with pytest.raises(PublishError, match="immutable"):
        publish([other], str(root), "staging")
    # A batch with one conflicting file is refused as a whole, before anything is written.
    fresh = make_fake_wheel(tmp_path / "c", version="0.5.1+pt214cu130")
    with pytest.raises(PublishError, match="immutable"):
        publish([fresh, other], str(root), "staging")
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k != "manifest.json"} == \
        {k: v for k, v in before.items() if k != "manifest.json"}
    assert not any("0.5.1" in k for k in after)


def test_wheels_only_and_bad_input(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    sdist = tmp_path / "nvdiffrast-0.5.0.tar.gz"
    sdist.write_bytes(b"not really")
    with pytest.raises(PublishError, match="source distributions are not published"):
        publish([sdist], str(root), "staging")
    bad = tmp_path / "nvdiffrast-0.5.0-py3-none-any.whl"
    bad.write_bytes(b"garbage")
    with pytest.raises(PublishError, match="not a valid zip"):
        publish([bad], str(root), "staging")
    other = make_fake_wheel(tmp_path / "o", name="otherpkg")
    with pytest.raises(PublishError, match="not nvdiffrast"):
        publish([other], str(root), "staging")
    novar = make_fake_wheel(tmp_path / "n", version="0.5.0", variant=None)
    with pytest.raises(PublishError, match="no variant"):
        publish([novar], str(root), "staging")
    assert publish([novar], str(root), "staging", variant="custom")[0]["variant"] == "custom"
    with pytest.raises(PublishError, match="not usable as an index directory"):
        publish([novar], str(root), "staging", variant="../escape")


def test_release_gate(tmp_path: Path) -> None:
    w = make_fake_wheel(tmp_path / "a")
    root = tmp_path / "rel"
    with pytest.raises(PublishError, match="no validation report"):
        publish([w], str(root), "release")
    with pytest.raises(PublishError, match="gpu_validation='pending'"):
        publish([w], str(root), "release", [str(_report(tmp_path, w, "passed-gpu-pending", "pending"))])
    with pytest.raises(PublishError, match="status='failed'"):
        publish([w], str(root), "release", [str(_report(tmp_path, w, "failed", "failed"))])
    with pytest.raises(PublishError, match="no validation report for exactly this file"):
        publish([w], str(root), "release", [str(_report(tmp_path, w, sha="0" * 64))])
    assert not root.exists() or not any(root.rglob("*.whl"))
    good = _report(tmp_path, w)
    assert publish([w], str(root), "release", [str(good)])[0]["action"] == "published"
    entry = json.loads((root / "manifest.json").read_text())["variants"]["pt214cu130"]["files"][w.name]
    assert entry["validation"]["status"] == "passed" and entry["validation"]["gpu"] == "Test GPU"
    # A release tree never takes staging uploads and vice versa.
    w2 = make_fake_wheel(tmp_path / "b", version="0.5.1+pt214cu130")
    with pytest.raises(PublishError, match="is a 'release' tree"):
        publish([w2], str(root), "staging")


def test_cli_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = make_fake_wheel(tmp_path / "a")
    root = tmp_path / "idx"
    assert ci_main.main(["publish", str(w), "--to", str(root)]) == 0
    out = capsys.readouterr().out
    assert "published" in out and "--extra-index-url" in out
    assert ci_main.main(["publish", str(w), "--to", str(tmp_path / "rel"), "--stage", "release"]) == 1
    assert "release gate" in capsys.readouterr().err


def test_inspect_wheel_reads_metadata(tmp_path: Path) -> None:
    w = make_fake_wheel(tmp_path, requires_dist=("torch<2.15,>=2.14",))
    info = inspect_wheel(w)
    assert (info.name, info.version, info.variant, info.local_label) == \
        ("nvdiffrast", "0.5.0+pt214cu130", "pt214cu130", "pt214cu130")
    assert info.requires_dist == ["torch<2.15,>=2.14"] and info.requires_python == ">=3.10"


def test_png_writer_round_trip_and_report_html(tmp_path: Path) -> None:
    w, h = 5, 3
    rgb = bytes((x * 40 + y * 7 + c) % 256 for y in range(h) for x in range(w) for c in range(3))
    data = png_bytes(w, h, rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_png_rgb(data) == (w, h, rgb)
    with pytest.raises(ValueError, match="expected 45 bytes"):
        png_bytes(w, h, rgb[:-1])
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(data)
    rep = {"wheel": {"filename": "x.whl", "sha256": "ab"}, "status": "passed", "gpu_validation": "passed",
           "checks": [{"name": "c", "status": "passed", "metrics": {"m": 0.5}}],
           "images": [{"scene": "s", "backend": "cuda", "reference": "images/a.png", "artifact": "images/a.png",
                       "diff": "images/missing.png"}],
           "timings": [{"backend": "cuda", "op": "rasterize", "workload": "w", "fwd_ms": 1.0, "bwd_ms": None}]}
    page = render_html(rep, tmp_path)
    assert page.count("data:image/png;base64,") == 2 and "rasterize" in page and "m=0.5" in page


def test_release_gate_finds_reports_next_to_the_wheel(tmp_path: Path) -> None:
    w = make_fake_wheel(tmp_path / "wh")
    rdir = tmp_path / "wh" / "validation" / w.name[:-len(".whl")]
    rdir.mkdir(parents=True)
    (rdir / "validation.json").write_text(_report(tmp_path, w, "passed-gpu-pending", "pending").read_text())
    with pytest.raises(PublishError, match="gpu_validation='pending'"):
        publish([w], str(tmp_path / "rel"), "release")
    (rdir / "validation.json").write_text(_report(tmp_path, w).read_text())
    assert publish([w], str(tmp_path / "rel"), "release")[0]["action"] == "published"
