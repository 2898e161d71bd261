"""Static PEP 503 index trees: one simple index per variant, immutable files, wheels only.

Layout of a tree rooted at ``ROOT``::

    ROOT/index.html                                  every variant with its exact install command
    ROOT/manifest.json                               variant -> files -> build info -> validation
    ROOT/SHA256SUMS                                  one line per published file (sha256sum -c format)
    ROOT/<variant>/simple/index.html                 PEP 503 root: lists the project
    ROOT/<variant>/simple/nvdiffrast/index.html      PEP 503 project page (#sha256=, requires-python, PEP 658/714)
    ROOT/<variant>/simple/nvdiffrast/<wheel>         the wheel
    ROOT/<variant>/simple/nvdiffrast/<wheel>.metadata  its METADATA file (PEP 658)

Nothing here needs more than the standard library, so a GPU machine without twine or a server package
can still publish and serve. A variant that was never published has no directory, hence a 404.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import email.parser
import hashlib
import html
import json
import os
import re
import shutil
import tempfile
import urllib.parse
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = "nvdiffrast"
MANIFEST_SCHEMA = "nvdiffrast-index/1"
# name-version(-build)?-python-abi-platform.whl (PEP 427); the name has no '-' once escaped.
_WHEEL_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)
_SDIST_SUFFIXES = (".tar.gz", ".tar.bz2", ".tgz", ".zip", ".tar.xz", ".tar")


class IndexRefused(Exception):
    """A publish request the tree refuses (bad file, immutability, stage mismatch); the tree is unchanged."""


class ImmutableFileError(IndexRefused):
    """A different file under a name that is already published."""


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class WheelInfo:
    """What the index needs to know about one wheel, read from its name and its dist-info."""

    path: Path
    filename: str
    name: str
    version: str
    python_tag: str
    abi_tag: str
    platform_tag: str
    sha256: str
    size: int
    metadata: bytes
    requires_python: str | None
    requires_dist: list[str] = field(default_factory=list)
    build_info: dict[str, Any] = field(default_factory=dict)

    @property
    def local_label(self) -> str | None:
        return self.version.split("+", 1)[1] if "+" in self.version else None

    @property
    def variant(self) -> str | None:
        """Variant name: the one recorded at build time, else the local version label."""
        return self.build_info.get("variant") or self.local_label

    def summary(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "python_tag": self.python_tag,
            "abi_tag": self.abi_tag,
            "platform_tag": self.platform_tag,
            "requires_python": self.requires_python,
            "requires_dist": self.requires_dist,
            "build_info": self.build_info,
        }


def inspect_wheel(path: str | os.PathLike[str]) -> WheelInfo:
    """Read a wheel's name, tags, METADATA and ``nvdiffrast/_build_info.json``; raise IndexRefused if it is not one."""
    p = Path(path)
    fname = p.name
    if fname.endswith(_SDIST_SUFFIXES):
        raise IndexRefused(f"{fname}: source distributions are not published (wheels only, so pip can never build)")
    m = _WHEEL_RE.match(fname)
    if not m:
        raise IndexRefused(f"{fname}: not a wheel file name (expected name-version-python-abi-platform.whl)")
    if not p.is_file():
        raise IndexRefused(f"{p}: no such file")
    try:
        zf = zipfile.ZipFile(p)
    except zipfile.BadZipFile as exc:
        raise IndexRefused(f"{fname}: not a valid zip archive ({exc})") from exc
    with zf:
        names = zf.namelist()
        meta_names = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(meta_names) != 1:
            raise IndexRefused(f"{fname}: expected exactly one *.dist-info/METADATA, found {len(meta_names)}")
        metadata = zf.read(meta_names[0])
        build_info: dict[str, Any] = {}
        bi_names = [n for n in names if n.endswith("/_build_info.json") and n.count("/") == 1]
        if bi_names:
            try:
                build_info = json.loads(zf.read(bi_names[0]))
            except ValueError as exc:
                raise IndexRefused(f"{fname}: {bi_names[0]} is not valid JSON ({exc})") from exc
    msg = email.parser.BytesParser().parsebytes(metadata, headersonly=True)
    name, version = msg.get("Name"), msg.get("Version")
    if not name or not version:
        raise IndexRefused(f"{fname}: METADATA lacks Name or Version")
    if normalize(name) != normalize(m.group("name")) or version != m.group("version"):
        raise IndexRefused(
            f"{fname}: file name says {m.group('name')} {m.group('version')} but METADATA says {name} {version}"
        )
    return WheelInfo(
        path=p,
        filename=fname,
        name=name,
        version=version,
        python_tag=m.group("py"),
        abi_tag=m.group("abi"),
        platform_tag=m.group("plat"),
        sha256=sha256_file(p),
        size=p.stat().st_size,
        metadata=metadata,
        requires_python=msg.get("Requires-Python"),
        requires_dist=list(msg.get_all("Requires-Dist") or []),
        build_info=build_info,
    )


_VARIANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_variant_name(variant: str) -> str:
    """A variant becomes a directory name and a URL segment: letters, digits, '.', '_', '-'."""
    if not _VARIANT_RE.match(variant or "") or variant in (".", ".."):
        raise IndexRefused(f"variant name {variant!r} is not usable as an index directory (letters, digits, . _ -)")
    return variant


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialize writers of one tree (a lock file; no-op where fcntl is missing)."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: single writer assumed
        yield
        return
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class StaticIndex:
    """A static index tree on disk (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str], project: str = PROJECT) -> None:
        self.root = Path(root)
        self.project = normalize(project)

    # -- reading -------------------------------------------------------------------------------
    def load_manifest(self) -> dict[str, Any]:
        """The manifest, or an empty one for a new tree."""
        path = self.root / "manifest.json"
        if not path.exists():
            return {"schema": MANIFEST_SCHEMA, "project": self.project, "stage": None, "variants": {}}
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise IndexRefused(f"{path}: not valid JSON ({exc}); refusing to touch this tree") from exc
        if data.get("schema") != MANIFEST_SCHEMA:
            raise IndexRefused(f"{path}: schema {data.get('schema')!r}, expected {MANIFEST_SCHEMA!r}")
        return data

    def project_dir(self, variant: str) -> Path:
        return self.root / check_variant_name(variant) / "simple" / self.project

    def variants(self) -> list[str]:
        return sorted(self.load_manifest()["variants"])

    # -- writing -------------------------------------------------------------------------------
    def publish(
        self,
        wheels: list[WheelInfo],
        stage: str,
        variant_override: str | None = None,
        validation: dict[str, dict[str, Any]] | None = None,
        base_url: str | None = None,
    ) -> list[dict[str, Any]]:
        """Add wheels to the tree; return one record per wheel with ``action`` 'published' or 'unchanged'.

        Every check runs before anything is written, so a refused request leaves the tree as it was.
        ``validation`` maps a wheel's sha256 to the summary of its validation report.
        """
        if stage not in ("staging", "release"):
            raise IndexRefused(f"stage must be 'staging' or 'release', got {stage!r}")
        validation = validation or {}
        with _locked(self.root):
            manifest = self.load_manifest()
            if manifest.get("stage") not in (None, stage):
                raise IndexRefused(
                    f"{self.root} is a {manifest['stage']!r} tree; publish {stage!r} wheels to another directory"
                )
            plan: list[tuple[WheelInfo, str, str]] = []
            seen: dict[str, str] = {}
            for w in wheels:
                if normalize(w.name) != self.project:
                    raise IndexRefused(f"{w.filename}: project {w.name!r} does not belong in the {self.project} index")
                variant = variant_override or w.variant
                if not variant:
                    raise IndexRefused(
                        f"{w.filename}: no variant (no _build_info.json 'variant' and no local version label); "
                        "pass --variant"
                    )
                check_variant_name(variant)
                target = self.project_dir(variant) / w.filename
                if w.filename in seen and seen[w.filename] != w.sha256:
                    raise ImmutableFileError(f"{w.filename}: given twice with different contents")
                seen[w.filename] = w.sha256
                if target.exists():
                    old = sha256_file(target)
                    if old != w.sha256:
                        raise ImmutableFileError(
                            f"{variant}/{w.filename} is already published with sha256 {old}; the given file has "
                            f"{w.sha256}. Published files are immutable: bump the version instead."
                        )
                    action = "unchanged"
                else:
                    action = "published"
                plan.append((w, variant, action))

            records = []
            for w, variant, action in plan:
                pdir = self.project_dir(variant)
                target = pdir / w.filename
                if action == "published":
                    pdir.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(dir=pdir, prefix=".tmp-")
                    os.close(fd)
                    shutil.copyfile(w.path, tmp)
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, target)
                    _atomic_write(pdir / (w.filename + ".metadata"), w.metadata)
                entries = manifest["variants"].setdefault(variant, {"files": {}})["files"]
                entry = entries.get(w.filename) or {**w.summary(), "published": _now()}
                entry["metadata_sha256"] = hashlib.sha256(w.metadata).hexdigest()
                if w.sha256 in validation:
                    entry["validation"] = validation[w.sha256]
                entries[w.filename] = entry
                records.append({"variant": variant, "filename": w.filename, "sha256": w.sha256, "action": action,
                                "path": str(target)})
            manifest["stage"] = stage
            manifest["project"] = self.project
            if base_url:
                manifest["base_url"] = base_url.rstrip("/")
            manifest["updated"] = _now()
            self._write_pages(manifest)
            _atomic_write(self.root / "manifest.json", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
            return records

    def _write_pages(self, manifest: dict[str, Any]) -> None:
        sums = []
        for variant, vdata in sorted(manifest["variants"].items()):
            files = vdata["files"]
            pdir = self.project_dir(variant)
            _atomic_write(pdir / "index.html", project_page(self.project, files.values()).encode())
            _atomic_write(pdir.parent / "index.html", simple_root_page([self.project]).encode())
            for fname, entry in sorted(files.items()):
                sums.append(f"{entry['sha256']}  {variant}/simple/{self.project}/{fname}\n")
        _atomic_write(self.root / "SHA256SUMS", "".join(sums).encode())
        _atomic_write(self.root / "index.html", root_page(manifest).encode())


def _html_doc(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"pypi:repository-version\" "
        f"content=\"1.1\">\n<title>{html.escape(title)}</title>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )


def project_page(project: str, entries: Any) -> str:
    """PEP 503 project page with sha256 fragments, requires-python and PEP 658/714 metadata attributes."""
    lines = [f"<h1>Links for {html.escape(project)}</h1>\n"]
    for e in sorted(entries, key=lambda x: x["filename"]):
        href = urllib.parse.quote(e["filename"]) + "#sha256=" + e["sha256"]
        attrs = [f'href="{html.escape(href)}"']
        if e.get("requires_python"):
            attrs.append(f'data-requires-python="{html.escape(e["requires_python"])}"')
        if e.get("metadata_sha256"):
            attrs.append(f'data-dist-info-metadata="sha256={e["metadata_sha256"]}"')
            attrs.append(f'data-core-metadata="sha256={e["metadata_sha256"]}"')
        lines.append(f"<a {' '.join(attrs)}>{html.escape(e['filename'])}</a><br>\n")
    return _html_doc(f"Links for {project}", "".join(lines))


def simple_root_page(projects: list[str]) -> str:
    body = "".join(f'<a href="{html.escape(p)}/">{html.escape(p)}</a><br>\n' for p in projects)
    return _html_doc("Simple index", body)


def install_command(manifest: dict[str, Any], variant: str, base_url: str | None = None) -> str:
    """The exact pip command for one variant (pinned to the newest version published there)."""
    base = (base_url or manifest.get("base_url") or "{ROOT}").rstrip("/")
    files = manifest["variants"][variant]["files"]
    versions = sorted({e["version"] for e in files.values()}, key=_version_key)
    pin = f"=={versions[-1]}" if versions else ""
    return f'pip install "{manifest.get("project", PROJECT)}{pin}" --extra-index-url {base}/{variant}/simple/'


def _version_key(v: str) -> tuple:
    try:
        from packaging.version import Version

        return (0, Version(v))
    except Exception:  # noqa: BLE001 - packaging absent or odd version: plain string order
        return (1, v)


def root_page(manifest: dict[str, Any]) -> str:
    """Human-facing root page: one row per variant with its install command and files."""
    rows = []
    for variant, vdata in sorted(manifest["variants"].items()):
        files = vdata["files"]
        any_bi = next((e.get("build_info") or {} for e in files.values()), {})
        vals = {(e.get("validation") or {}).get("status", "not validated") for e in files.values()}
        cmd = install_command(manifest, variant)
        flist = "<br>".join(
            f'<a href="{html.escape(variant)}/simple/{html.escape(manifest.get("project", PROJECT))}/'
            f'{html.escape(urllib.parse.quote(fn))}">{html.escape(fn)}</a>'
            for fn in sorted(files)
        )
        rows.append(
            f"<tr><td><a href=\"{html.escape(variant)}/simple/\">{html.escape(variant)}</a></td>"
            f"<td>{html.escape(str(any_bi.get('torch_minor', '')))}</td>"
            f"<td>{html.escape(str(any_bi.get('cuda_version', '')))}</td>"
            f"<td>{html.escape(', '.join(sorted(vals)))}</td>"
            f"<td><code class=\"cmd\">{html.escape(cmd)}</code></td><td>{flist}</td></tr>\n"
        )
    stage = manifest.get("stage") or "?"
    script = (
        "<script>\n// Fill in this page's own address where the tree was published without --base-url.\n"
        "var r=location.href.replace(/\\/(index\\.html)?(\\?.*)?$/,'');\n"
        "document.querySelectorAll('code.cmd').forEach(function(c){c.textContent=c.textContent"
        ".split('{ROOT}').join(r);});\n</script>\n"
    )
    body = (
        f"<h1>{html.escape(manifest.get('project', PROJECT))} wheels ({html.escape(stage)})</h1>\n"
        "<p>One index per variant (torch minor + CUDA). Pick the row matching your torch "
        "(<code>python -c \"import torch; print(torch.__version__)\"</code>).</p>\n"
        "<table border=\"1\" cellpadding=\"4\">\n<tr><th>variant</th><th>torch</th><th>CUDA</th><th>validation</th>"
        "<th>install command</th><th>files</th></tr>\n" + "".join(rows) + "</table>\n"
        "<p><a href=\"manifest.json\">manifest.json</a> · <a href=\"SHA256SUMS\">SHA256SUMS</a></p>\n" + script
    )
    return _html_doc(f"{manifest.get('project', PROJECT)} wheels", body)
