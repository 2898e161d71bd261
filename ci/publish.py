"""``python -m ci publish WHEEL... --to DIR|URL [--stage staging|release] [--report validation.json]``.

* ``--to DIR``: add the wheels to a static PEP 503 tree (see ``ci/index.py``), standard library only.
* ``--to http(s)://…``: upload through twine to a server (pypiserver, devpi, Artifactory, Nexus …); the
  credentials come from ``TWINE_USERNAME``/``TWINE_PASSWORD`` or ``NVDR_INDEX_USER``/``NVDR_INDEX_PASSWORD``.
  Files already on the server are compared by sha256 first: identical ones are skipped, a different file
  under the same name is refused before anything is uploaded.

``--stage release`` is the promotion gate: every wheel needs a validation report whose sha256 is the wheel's,
whose status is passed and whose GPU validation passed (not pending). Reports come from ``--report`` or are
found where ``ci validate`` / ``ci release`` write them (``validation/<wheel name>/validation.json`` in the
current directory or next to the wheel).
"""

from __future__ import annotations

import argparse
import base64
import html.parser
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ci.index import PROJECT, IndexRefused, StaticIndex, WheelInfo, inspect_wheel, install_command, normalize


class PublishError(Exception):
    """A refused or failed publish, with a message meant for the person running it."""


# ---------------------------------------------------------------------------------------------- reports / gate
def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a validation.json written by ``python -m ci validate``."""
    p = Path(path)
    if p.is_dir():
        p = p / "validation.json"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise PublishError(f"validation report {p} does not exist") from exc
    except ValueError as exc:
        raise PublishError(f"validation report {p} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "wheel" not in data or "status" not in data:
        raise PublishError(f"{p} is not a validation report (no 'wheel'/'status' keys)")
    data["_path"] = str(p)
    return data


def report_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The part of a report that goes into an index manifest."""
    env = report.get("environment", {})
    return {
        "status": report.get("status"),
        "gpu_validation": report.get("gpu_validation"),
        "backends": {k: v.get("status") for k, v in report.get("backends", {}).items()},
        "gpu": env.get("gpu"),
        "torch": env.get("torch"),
        "finished": report.get("finished"),
        "report": report.get("_path"),
    }


def reports_by_sha(paths: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in paths:
        rep = load_report(p)
        out[rep["wheel"].get("sha256", "")] = rep
    return out


def check_release_gate(wheel: WheelInfo, reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Return the report that allows ``wheel`` into the release stage, or raise PublishError saying why not."""
    rep = reports.get(wheel.sha256)
    if rep is None:
        known = ", ".join(f"{r['wheel'].get('filename')} ({sha[:12]}…)" for sha, r in reports.items()) or "none given"
        raise PublishError(
            f"release gate: {wheel.filename} (sha256 {wheel.sha256[:12]}…) has no validation report for exactly this "
            f"file (reports: {known}). Run `python -m ci validate {wheel.path}` on a GPU machine and pass "
            "--report DIR/validation.json."
        )
    if rep.get("status") != "passed" or rep.get("gpu_validation") != "passed":
        raise PublishError(
            f"release gate: the report {rep.get('_path')} for {wheel.filename} says status={rep.get('status')!r}, "
            f"gpu_validation={rep.get('gpu_validation')!r}; promotion needs a passing GPU validation "
            "(staging accepts it: --stage staging)."
        )
    return rep


# ---------------------------------------------------------------------------------------------- credentials / http
def credentials_from_env() -> tuple[str | None, str | None]:
    """(user, password) from TWINE_* or NVDR_INDEX_* variables (TWINE_* wins)."""
    user = os.environ.get("TWINE_USERNAME") or os.environ.get("NVDR_INDEX_USER")
    pw = os.environ.get("TWINE_PASSWORD") or os.environ.get("NVDR_INDEX_PASSWORD")
    return user, pw


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password or parts.username:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def _http_get(url: str, user: str | None, pw: str | None, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Accept": "text/html"})
    if user is not None:
        token = base64.b64encode(f"{user}:{pw or ''}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


class _LinkParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        href = dict(attrs).get("href") or ""
        path, _, frag = href.partition("#")
        fname = urllib.parse.unquote(path.rsplit("/", 1)[-1])
        sha = frag[len("sha256="):] if frag.startswith("sha256=") else None
        self.links[fname] = sha


def server_files(url: str, user: str | None, pw: str | None, simple_url: str | None = None) -> dict[str, str | None]:
    """Files the server lists for the project: filename → sha256 (None where the page gives none).

    Raises PublishError if the server cannot be reached or refuses the credentials.
    """
    base = url.rstrip("/")
    candidates = [simple_url.rstrip("/") + f"/{PROJECT}/"] if simple_url else [
        f"{base}/+simple/{PROJECT}/",  # devpi: <user>/<index>/+simple/
        f"{base}/simple/{PROJECT}/",  # pypiserver and most others
    ]
    for cand in candidates:
        try:
            status, body = _http_get(cand, user, pw)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PublishError(
                f"cannot reach the index server at {_redact(url)}: {reason}. Is it running, and is the URL right? "
                "Nothing was uploaded."
            ) from exc
        if status in (401, 403):
            raise PublishError(
                f"the index server at {_redact(url)} refused the credentials (HTTP {status} for {_redact(cand)}); "
                "set TWINE_USERNAME/TWINE_PASSWORD (or NVDR_INDEX_USER/NVDR_INDEX_PASSWORD). Nothing was uploaded."
            )
        if status == 200:
            parser = _LinkParser()
            parser.feed(body.decode("utf-8", "replace"))
            return parser.links
    return {}


def _twine_command() -> list[str]:
    if importlib.util.find_spec("twine") is not None:
        return [sys.executable, "-m", "twine"]
    exe = shutil.which("twine")
    if exe:
        return [exe]
    raise PublishError(
        "twine is not installed in this environment (pip install twine); to publish without it, write a static "
        "tree with --to DIR and serve it (python -m ci serve DIR)"
    )


def _explain_twine_failure(output: str, url: str) -> str:
    low = output.lower()
    if "403" in low or "401" in low or "forbidden" in low or "unauthorized" in low:
        why = ("the server rejected the credentials (set TWINE_USERNAME/TWINE_PASSWORD or "
               "NVDR_INDEX_USER/NVDR_INDEX_PASSWORD)")
    elif "409" in low or "conflict" in low or "already exists" in low or "400 bad request" in low:
        why = "the server already has a file of that name (published files are immutable)"
    elif "connection refused" in low or "max retries" in low or "name or service not known" in low:
        why = f"the server at {_redact(url)} cannot be reached"
    else:
        why = "twine failed"
    tail = "\n".join(output.strip().splitlines()[-6:])
    return f"{why}.\n--- twine output (last lines) ---\n{tail}"


def upload_to_server(url: str, wheels: list[WheelInfo], simple_url: str | None = None,
                     log: Any = print) -> list[dict[str, Any]]:
    """Upload wheels with twine after checking reachability, credentials and immutability."""
    user, pw = credentials_from_env()
    existing = server_files(url, user, pw, simple_url)
    todo: list[WheelInfo] = []
    records: list[dict[str, Any]] = []
    for w in wheels:
        if w.filename in existing:
            sha = existing[w.filename]
            if sha is not None and sha != w.sha256:
                raise PublishError(
                    f"{w.filename} is already on {_redact(url)} with sha256 {sha}; the given file has {w.sha256}. "
                    "Published files are immutable: bump the version instead. Nothing was uploaded."
                )
            records.append({"filename": w.filename, "sha256": w.sha256, "action": "unchanged", "url": _redact(url)})
        else:
            todo.append(w)
    if not todo:
        return records
    cmd = _twine_command() + ["upload", "--non-interactive", "--disable-progress-bar", "--repository-url", url]
    env = dict(os.environ)
    # twine's non-interactive mode needs some credentials even for an open server.
    env["TWINE_USERNAME"] = user if user is not None else "anonymous"
    env["TWINE_PASSWORD"] = pw if pw is not None else "anonymous"
    env.pop("TWINE_REPOSITORY_URL", None)
    env.pop("TWINE_REPOSITORY", None)
    for w in todo:
        log(f"  $ twine upload --repository-url {_redact(url)} {w.filename}")
        proc = subprocess.run(cmd + [str(w.path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        if proc.returncode != 0:
            done = [r["filename"] for r in records if r["action"] == "published"]
            extra = f" Already uploaded in this run: {', '.join(done)}." if done else " Nothing was uploaded."
            raise PublishError(f"upload of {w.filename} to {_redact(url)} failed: "
                               f"{_explain_twine_failure(proc.stdout, url)}\n{extra.strip()}")
        records.append({"filename": w.filename, "sha256": w.sha256, "action": "published", "url": _redact(url)})
    return records


# ---------------------------------------------------------------------------------------------- entry points
def publish(
    wheels: list[str | os.PathLike[str]],
    to: str,
    stage: str = "staging",
    reports: list[str] | None = None,
    variant: str | None = None,
    base_url: str | None = None,
    simple_url: str | None = None,
    log: Any = print,
) -> list[dict[str, Any]]:
    """Publish wheels to a static tree (``to`` is a directory) or a server (``to`` is an http(s) URL)."""
    if stage not in ("staging", "release"):
        raise PublishError(f"--stage must be 'staging' or 'release', got {stage!r}")
    if not wheels:
        raise PublishError("no wheel given")
    try:
        infos = [inspect_wheel(w) for w in wheels]
    except IndexRefused as exc:
        raise PublishError(str(exc)) from exc
    for w in infos:
        if normalize(w.name) != PROJECT:
            raise PublishError(f"{w.filename}: project {w.name!r} is not {PROJECT}")
    by_sha = reports_by_sha(reports or [])
    for w in infos:  # reports where `ci validate`/`ci release` put them, matched by sha256 like given ones
        if w.sha256 in by_sha:
            continue
        stem = w.filename[:-len(".whl")]
        for cand in (Path("validation") / stem, w.path.parent / "validation" / stem):
            if (cand / "validation.json").is_file():
                rep = load_report(cand)
                if rep["wheel"].get("sha256") == w.sha256:
                    by_sha[w.sha256] = rep
                    break
    if stage == "release":
        for w in infos:
            check_release_gate(w, by_sha)
    if to.startswith(("http://", "https://")):
        return upload_to_server(to, infos, simple_url, log)
    validation = {sha: report_summary(rep) for sha, rep in by_sha.items()}
    try:
        return StaticIndex(to).publish(infos, stage, variant, validation, base_url)
    except IndexRefused as exc:
        raise PublishError(f"{exc} (nothing was changed in {to})") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("wheels", nargs="+", metavar="WHEEL", help="wheel files (no sdists)")
    parser.add_argument("--to", required=True, metavar="DIR|URL",
                        help="static index directory, or the upload URL of a server (pypiserver: http://host:port/)")
    parser.add_argument("--stage", choices=("staging", "release"), default="staging",
                        help="release needs a passing GPU validation report per wheel (default: staging)")
    parser.add_argument("--report", action="append", default=[], metavar="validation.json",
                        help="validation report(s) from `python -m ci validate` (file or its directory)")
    parser.add_argument("--variant", help="variant directory to publish into (default: from the wheel's build info)")
    parser.add_argument("--base-url", help="public URL of the static tree, used in the printed install commands")
    parser.add_argument("--simple-url", help="server's simple index URL when it is not <URL>/simple or <URL>/+simple")


def run(args: argparse.Namespace) -> int:
    try:
        records = publish(args.wheels, args.to, args.stage, args.report, args.variant, args.base_url,
                          args.simple_url)
    except PublishError as exc:
        print(f"ci publish: error: {exc}", file=sys.stderr)
        return 1
    for r in records:
        where = r.get("variant", "") + "/" if r.get("variant") else ""
        print(f"{r['action']:>10}  {where}{r['filename']}  sha256={r['sha256'][:16]}…")
    if not args.to.startswith(("http://", "https://")):
        manifest = StaticIndex(args.to).load_manifest()
        for variant in sorted({r["variant"] for r in records}):
            print(f"install ({variant}): {install_command(manifest, variant, args.base_url)}")
        if not (args.base_url or manifest.get("base_url")):
            print(f"({{ROOT}} is where the tree is served, e.g. `python -m ci serve {args.to}` → http://127.0.0.1:8765)")
    else:
        print(f"install: pip install {PROJECT} --index-url <simple URL of {_redact(args.to)}>")
    return 0
