"""Test-session setup shared by every suite.

The suites test the *installed* nvdiffrast (the wheel), never the source tree by accident: the repo
root is appended (not prepended) to sys.path so that ``import ci`` works while ``import nvdiffrast``
resolves to site-packages first. In a development checkout with nothing installed, the source tree
is used (CPU reference backend only unless the native modules were built in place).
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)


def pytest_report_header(config):  # noqa: ARG001 - pytest hook signature
    import nvdiffrast

    where = os.path.dirname(nvdiffrast.__file__)
    kind = "source tree" if os.path.dirname(where) == ROOT else "installed"
    return f"nvdiffrast {nvdiffrast.__version__} ({kind}: {where})"
