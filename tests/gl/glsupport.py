"""Shared by the OpenGL tests: can a RasterizeGLContext be created for a device here?"""

from __future__ import annotations

import os

import pytest
import torch

_PROBE: dict[str, str | None] = {}


def gl_unavailable(device: str) -> str | None:
    """Why no RasterizeGLContext can be created for ``device`` (None when it can)."""
    if device not in _PROBE:
        if device == "cuda" and not torch.cuda.is_available():
            _PROBE[device] = "no CUDA GPU on this machine"
        else:
            try:
                import nvdiffrast.torch as dr

                dr.RasterizeGLContext(device=device)
                _PROBE[device] = None
            except Exception as exc:  # noqa: BLE001 - any failure means: no usable GL here
                _PROBE[device] = f"no usable OpenGL context for device={device}: {type(exc).__name__}: {exc}"
    return _PROBE[device]


def require_gl(device: str) -> None:
    reason = gl_unavailable(device)
    if reason is None:
        return
    if os.environ.get("NVDR_REQUIRE_GL") == "1" and not reason.startswith("no CUDA GPU"):
        pytest.fail(reason)
    pytest.skip(reason)
