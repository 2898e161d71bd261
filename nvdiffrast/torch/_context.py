"""``RasterizeCudaContext``: rasterizer state bound to one device (spec §3.1).

Besides CUDA devices, a context may be bound to the CPU, whose tensors are rasterized by the
reference backend. ``device=None`` means the current CUDA device when CUDA is available, else the
CPU; a context created with ``device=None`` also accepts CPU tensors (the CPU has no device-specific
state), so ``rasterize(RasterizeCudaContext(), pos_cpu, tri_cpu, ...)`` works everywhere.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch

DeviceLike = Union[None, str, int, torch.device]


def resolve_device(device: DeviceLike, what: str = "RasterizeCudaContext") -> torch.device:
    """Turn a user ``device`` argument into a concrete ``torch.device`` ('cpu' or 'cuda:<index>')."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    if isinstance(device, bool):
        raise ValueError(f"{what}(): device must be None, a torch.device, a string or an int, got bool")
    try:
        dev = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"{what}(): device must be None, a torch.device, a device string such as 'cuda:0' or 'cpu', "
            f"or a CUDA device index; got {device!r}"
        ) from exc
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ValueError(f"{what}(): device must be a CUDA device or 'cpu', got '{dev}'")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"{what}(): device '{dev}' requested but CUDA is not available in this process "
            f"(torch {torch.__version__}); use device='cpu' for the CPU reference backend"
        )
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if not 0 <= index < torch.cuda.device_count():
        raise RuntimeError(f"{what}(): CUDA device {index} does not exist ({torch.cuda.device_count()} visible)")
    return torch.device("cuda", index)


class _RasterizerState:
    """Per-context native state handle (what upstream calls ``cpp_wrapper``)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __repr__(self) -> str:
        return f"<nvdiffrast rasterizer state on {self.device}>"


class RasterizeCudaContext:
    """Rasterizer context for the CUDA rasterizer (and, for CPU tensors, the reference rasterizer).

    Args:
        device: None (current CUDA device, or the CPU when CUDA is unavailable), a ``torch.device``,
            a string such as ``'cuda:1'`` / ``'cpu'``, or a CUDA device index.

    A context must not be used from several threads at once. Attributes: ``device``,
    ``output_db`` (always True), ``active_depth_peeler`` (the active ``DepthPeeler`` or None),
    ``cpp_wrapper`` (opaque native state).
    """

    def __init__(self, device: DeviceLike = None) -> None:
        self.device: torch.device = resolve_device(device)
        self._follows_inputs: bool = device is None
        self.output_db: bool = True
        self.active_depth_peeler: Optional[Any] = None
        self.cpp_wrapper: Any = _RasterizerState(self.device)

    def __repr__(self) -> str:
        return f"RasterizeCudaContext(device='{self.device}')"


def check_context_device(op: str, glctx: Any, dev: torch.device) -> None:
    """The inputs' device must be the context's device (CPU inputs are also fine for device=None)."""
    ctx_dev = getattr(glctx, "device", None)
    if ctx_dev is None:
        return
    ctx_dev = torch.device(ctx_dev)
    if dev.type == "cuda" and ctx_dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if dev == ctx_dev:
        return
    if dev.type == "cpu" and getattr(glctx, "_follows_inputs", False):
        return
    raise RuntimeError(
        f"{op}(): the rasterizer context resides on {ctx_dev} but the input tensors are on {dev}; "
        f"create the context with device='{dev}' (context and inputs must be on the same device)"
    )
