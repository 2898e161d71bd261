"""Loads the native modules. (First version: plain import; diagnostics are added by the import guard.)"""

from __future__ import annotations

import importlib
from types import ModuleType

_cache: dict[str, ModuleType] = {}


def _load(name: str) -> ModuleType:
    if name not in _cache:
        import torch  # noqa: F401  - torch's shared libraries must be loaded first

        _cache[name] = importlib.import_module(f"nvdiffrast.{name}")
    return _cache[name]


def load_cuda() -> ModuleType:
    """Import ``nvdiffrast._C`` (registers ``torch.ops.nvdiffrast.*``) or raise ImportError."""
    return _load("_C")


def load_gl() -> ModuleType:
    """Import ``nvdiffrast._gl`` or raise ImportError."""
    return _load("_gl")
