"""Picks the compute backend for a tensor's device (see ``_backend`` for the contract)."""

from __future__ import annotations

from types import ModuleType

import torch


def backend_for(t: torch.Tensor) -> ModuleType:
    """CPU tensors → the reference backend; CUDA tensors → the native CUDA backend."""
    if t.device.type == "cuda":
        from . import _cuda_backend

        return _cuda_backend
    if t.device.type == "cpu":
        from . import reference

        return reference
    raise RuntimeError(
        f"nvdiffrast: tensors on device type '{t.device.type}' are not supported; use CPU or CUDA tensors"
    )
