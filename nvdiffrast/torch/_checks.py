"""Argument validation shared by the public ops (spec §6).

Exception *types* follow upstream so user code that catches them keeps working (AssertionError for
Python-level argument problems, RuntimeError for the checks upstream does natively), but every
message names the argument, what was expected and what was given.
"""

from __future__ import annotations

import operator
from typing import Any, Optional

import torch


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {list(x.shape)} on {x.device}"
    return f"{type(x).__name__} {x!r}" if isinstance(x, (int, float, str, bool)) else type(x).__name__


def require(cond: bool, op: str, msg: str) -> None:
    """AssertionError with a message (the type upstream raises for Python-level argument checks)."""
    if not cond:
        raise AssertionError(f"{op}(): {msg}")


def require_tensor(op: str, name: str, x: Any) -> None:
    if not isinstance(x, torch.Tensor):  # the message is only formatted on failure (hot path)
        raise AssertionError(f"{op}(): {name} must be a torch.Tensor, got {_describe(x)}")


def require_bool(op: str, name: str, x: Any) -> None:
    if not isinstance(x, bool):
        raise AssertionError(f"{op}(): {name} must be a bool, got {_describe(x)}")


def check_dtype(op: str, dtype: torch.dtype, **tensors: Optional[torch.Tensor]) -> None:
    bad = {n: t for n, t in tensors.items() if t is not None and t.dtype != dtype}
    if bad:
        kind = "float32" if dtype == torch.float32 else "int32"
        got = ", ".join(f"{n} is {t.dtype}" for n, t in bad.items())
        raise RuntimeError(f"{op}(): Inputs {', '.join(bad)} must be {kind} tensors (got: {got})")


def check_contiguous(op: str, **tensors: Optional[torch.Tensor]) -> None:
    bad = [n for n, t in tensors.items() if t is not None and not t.is_contiguous()]
    if bad:
        raise RuntimeError(
            f"{op}(): Inputs {', '.join(bad)} must be contiguous tensors (got non-contiguous views; "
            f"call .contiguous() first)"
        )


def check_same_device(op: str, **tensors: Optional[torch.Tensor]) -> torch.device:
    """All given tensors on one device; returns it."""
    present = {n: t for n, t in tensors.items() if t is not None}
    devices = {t.device for t in present.values()}
    if len(devices) > 1:
        got = ", ".join(f"{n} on {t.device}" for n, t in present.items())
        raise RuntimeError(f"{op}(): Inputs {', '.join(present)} must reside on the same device (got: {got})")
    dev = next(iter(devices))
    if dev.type not in ("cpu", "cuda"):
        raise RuntimeError(f"{op}(): tensors on device '{dev}' are not supported; use CPU or CUDA tensors")
    return dev


def check_shape(op: str, cond: bool, name: str, expected: str, x: torch.Tensor) -> None:
    if not cond:
        raise RuntimeError(f"{op}(): {name} must have shape {expected}, got {list(x.shape)}")


def check_tri(op: str, tri: torch.Tensor) -> None:
    check_shape(op, tri.dim() == 2 and tri.shape[0] > 0 and tri.shape[1] == 3, "tri", "[>0, 3]", tri)


def normalize_resolution(op: str, resolution: Any) -> tuple[int, int]:
    """(height, width) as Python ints, both > 0; accepts any 2-element sequence of integers
    (tuple, list, torch.Size, integer tensor or NumPy array)."""
    vals: Optional[list[Any]] = None
    if isinstance(resolution, torch.Tensor):
        if resolution.numel() == 2 and not resolution.is_floating_point() and resolution.dtype != torch.bool:
            vals = resolution.flatten().tolist()
    elif not isinstance(resolution, (str, bytes)) and hasattr(resolution, "__len__") and len(resolution) == 2:
        vals = list(resolution)
    if vals is not None:
        try:
            ints = [operator.index(v) for v in vals]
        except TypeError:
            ints = None
        if ints is not None and not any(isinstance(v, bool) for v in vals) and ints[0] > 0 and ints[1] > 0:
            return ints[0], ints[1]
    raise RuntimeError(f"{op}(): resolution must be [>0, >0] as (height, width) integers, got {resolution!r}")
