"""CUDA adapters for ``interpolate`` (contract: ``nvdiffrast.torch._backend``)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ... import _loader


def _ops():  # noqa: ANN202 - torch.ops namespace object
    _loader.load_cuda()
    return torch.ops.nvdiffrast


def interpolate_fwd(
    attr: Tensor,
    rast: Tensor,
    tri: Tensor,
    rast_db: Optional[Tensor],
    diff_idx: Optional[Sequence[int]],
) -> tuple[Tensor, Tensor]:
    """Barycentric blend of vertex attributes per pixel, plus image-space derivatives of the channels
    listed in ``diff_idx`` (``out_da`` is [N, H, W, 0] when ``diff_idx`` is None)."""
    idx = None if diff_idx is None else [int(i) for i in diff_idx]
    out, out_da = _ops().interpolate_fwd(attr, rast, tri, rast_db if idx else None, idx)
    return out, out_da


def interpolate_bwd(
    attr: Tensor,
    rast: Tensor,
    tri: Tensor,
    dy: Tensor,
    rast_db: Optional[Tensor],
    dda: Optional[Tensor],
    diff_idx: Optional[Sequence[int]],
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Gradients w.r.t. attr, rast (channels 2 and 3 zero) and rast_db (None without derivatives).

    Under ``torch.use_deterministic_algorithms(True)`` the attribute gradient is summed in a fixed order.
    ``dy`` and ``dda`` are read with their strides (expanded gradients need no copy)."""
    idx = None if diff_idx is None else [int(i) for i in diff_idx]
    det = torch.are_deterministic_algorithms_enabled()
    want_db = idx is not None and rast_db is not None
    g_attr, g_rast, g_db = _ops().interpolate_bwd(
        attr, rast, tri, dy, rast_db if want_db else None,
        None if (dda is None or not idx) else dda, idx if want_db else None, det,
    )
    return g_attr, g_rast, (g_db if want_db else None)
