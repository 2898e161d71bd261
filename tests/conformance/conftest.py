"""Backend parameterization for the conformance suite.

Every test that takes the ``backend`` fixture runs once per backend:

* ``reference`` — CPU tensors, ``RasterizeCudaContext`` (routes to the CPU reference backend);
* ``cuda``      — CUDA tensors, ``RasterizeCudaContext`` (skipped without a GPU or ``nvdiffrast._C``);
* ``gl``        — ``RasterizeGLContext`` for rasterization; CUDA tensors on a GPU machine, CPU tensors
                  elsewhere (Mesa llvmpipe in CI). Skipped only where no OpenGL 4.3 driver can be created.

Only rasterization differs between ``cuda`` and ``gl``; ops that take no context run on the backend of
the tensors' device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch


@dataclass
class BackendCase:
    name: str
    device: torch.device
    make_context: Callable[[], Any]

    def tensor(self, data, dtype=torch.float32) -> torch.Tensor:
        return torch.as_tensor(data, dtype=dtype).to(self.device).contiguous()

    def __repr__(self) -> str:  # shows in test ids
        return self.name


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def _skip_reason_cuda() -> str | None:
    if not _cuda_available():
        return "no CUDA GPU on this machine"
    try:
        from nvdiffrast import _loader

        _loader.load_cuda()
    except ImportError as exc:
        return f"nvdiffrast._C does not load: {exc}"
    return None


_GL_PROBE: dict[str, str | None] = {}


def _skip_reason_gl() -> str | None:
    if "r" not in _GL_PROBE:
        try:
            import nvdiffrast.torch as dr

            dev = "cuda" if _cuda_available() else "cpu"
            ctx = dr.RasterizeGLContext(device=dev)
            del ctx
            _GL_PROBE["r"] = None
        except Exception as exc:  # noqa: BLE001 - any failure means: no usable GL here
            _GL_PROBE["r"] = f"no usable OpenGL context: {type(exc).__name__}: {exc}"
    return _GL_PROBE["r"]


def _selected() -> set[str]:
    sel = os.environ.get("NVDR_BACKENDS")  # e.g. "reference,gl"
    return set(sel.split(",")) if sel else {"reference", "cuda", "gl"}


@pytest.fixture(params=["reference", "cuda", "gl"])
def backend(request) -> BackendCase:
    name = request.param
    if name not in _selected():
        pytest.skip(f"backend {name} not selected by NVDR_BACKENDS")
    import nvdiffrast.torch as dr

    if name == "reference":
        return BackendCase(name, torch.device("cpu"), lambda: dr.RasterizeCudaContext(device="cpu"))
    if name == "cuda":
        reason = _skip_reason_cuda()
        if reason:
            pytest.skip(reason)
        return BackendCase(name, torch.device("cuda"), lambda: dr.RasterizeCudaContext(device="cuda"))
    reason = _skip_reason_gl()
    if reason:
        pytest.skip(reason)
    dev = torch.device("cuda" if _cuda_available() else "cpu")
    return BackendCase(name, dev, lambda: dr.RasterizeGLContext(device=dev))
