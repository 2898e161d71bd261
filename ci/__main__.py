"""Entry point: ``python -m ci <command> [...]``. Each command lives in its own module ``ci/<command>.py``
exposing ``add_arguments(parser)`` and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "matrix": "expand ci/matrix.toml into the variant list",
    "build": "build one variant's wheel in a fresh venv",
    "repair": "auditwheel/delvewheel repair + gates",
    "validate": "validate wheels (GPU where present)",
    "publish": "publish wheels to a PEP 503 tree or an index server",
    "serve": "serve a static index tree on loopback",
    "release": "select → build → repair → validate → publish",
    "test": "install a built wheel into a fresh venv and run the test suite",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ci", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        mod = importlib.import_module(f"ci.{name}")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
