"""nvdiffrast: differentiable rasterization for PyTorch, prebuilt (Apache-2.0 implementation)."""

from __future__ import annotations

import json
import os
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))


def build_info() -> dict[str, Any]:
    """What this installation was built from (torch, CUDA, arch list, …); empty if not built."""
    try:
        with open(os.path.join(_HERE, "_build_info.json")) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {}


__version__: str = build_info().get("version", "0.5.0")
