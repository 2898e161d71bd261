"""Fixtures of the OpenGL rasterizer tests.

``gl_device`` runs a test once with CPU tensors (upload/readback; Mesa llvmpipe in CI) and once with
CUDA tensors (CUDA-GL interop; needs a GPU with the NVIDIA EGL driver). A device is skipped only when
no OpenGL 4.3 context can be created there; set ``NVDR_REQUIRE_GL=1`` to turn that skip into a
failure (CI sets it where Mesa is installed, so a broken GL setup cannot pass silently).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "assets"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from glsupport import require_gl  # noqa: E402


@pytest.fixture(params=["cpu", "cuda"])
def gl_device(request) -> torch.device:
    require_gl(request.param)
    return torch.device(request.param)


@pytest.fixture
def make_gl(gl_device) -> Callable[..., Any]:
    import nvdiffrast.torch as dr

    def make(**kwargs: Any) -> Any:
        return dr.RasterizeGLContext(device=gl_device, **kwargs)

    return make
