"""Shared guard of the GPU test modules: why they cannot run here, or None."""

from __future__ import annotations

import torch


def cuda_skip_reason() -> str | None:
    """None when a CUDA GPU is present and ``nvdiffrast._C`` loads; else the reason to skip."""
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    try:
        from nvdiffrast import _loader

        _loader.load_cuda()
    except ImportError as exc:
        return f"nvdiffrast._C does not load: {exc}"
    return None
