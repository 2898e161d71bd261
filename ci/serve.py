"""``python -m ci serve ROOT [--port N]``: serve a static index tree on 127.0.0.1.

Only the standard library: the GPU machine and CI can serve what ``ci publish`` wrote. Directories are
served through their ``index.html``; a directory without one, or any missing path, is a real 404 (no
directory listings, so a variant that was never published cannot look like an empty index).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import threading
from pathlib import Path
from typing import Any


class _Handler(http.server.SimpleHTTPRequestHandler):
    quiet = False

    def list_directory(self, path: str | os.PathLike[str]):  # type: ignore[override]
        self.send_error(404, "Not Found")
        return None

    def translate_path(self, path: str) -> str:
        # Refuse hidden files (lock file, temporaries) as if absent.
        full = super().translate_path(path)
        rel = os.path.relpath(full, self.directory)
        if any(part.startswith(".") and part not in (".",) for part in Path(rel).parts):
            return os.path.join(self.directory, ".not-served", "missing")
        return full

    def guess_type(self, path: str | os.PathLike[str]) -> str:
        p = str(path)
        if p.endswith(".whl"):
            return "application/octet-stream"
        if p.endswith(".metadata") or p.endswith("SHA256SUMS"):
            return "text/plain; charset=utf-8"
        return super().guess_type(path)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from the base class
        if not self.quiet:
            super().log_message(format, *args)


def make_server(root: str | os.PathLike[str], port: int = 0, host: str = "127.0.0.1",
                quiet: bool = False) -> http.server.ThreadingHTTPServer:
    """A server bound to ``host:port`` (0 = a free port) serving ``root``; call ``serve_forever`` on it."""
    rootp = Path(root).resolve()
    if not rootp.is_dir():
        raise FileNotFoundError(f"index root {rootp} is not a directory (publish to it first: python -m ci publish)")
    handler = type("Handler", (_Handler,), {"quiet": quiet})
    return http.server.ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(rootp)))


def start_in_thread(root: str | os.PathLike[str], port: int = 0,
                    quiet: bool = True) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Start a server in a daemon thread; return it and its base URL. Stop with ``server.shutdown()``."""
    srv = make_server(root, port, quiet=quiet)
    threading.Thread(target=srv.serve_forever, name="ci-serve", daemon=True).start()
    host, real_port = srv.server_address[:2]
    return srv, f"http://{host}:{real_port}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="index tree written by `python -m ci publish --to DIR`")
    parser.add_argument("--port", type=int, default=8765, help="TCP port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--quiet", action="store_true", help="no request log")


def run(args: argparse.Namespace) -> int:
    try:
        srv = make_server(args.root, args.port, quiet=args.quiet)
    except (FileNotFoundError, OSError) as exc:
        print(f"ci serve: {exc}")
        return 2
    host, port = srv.server_address[:2]
    base = f"http://{host}:{port}"
    print(f"serving {Path(args.root).resolve()} at {base}/  (Ctrl-C stops)")
    manifest = Path(args.root) / "manifest.json"
    if manifest.exists():
        from ci.index import install_command

        data = json.loads(manifest.read_text())
        for variant in sorted(data.get("variants", {})):
            print(f"  {variant}: {install_command(data, variant, base)}")
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0
