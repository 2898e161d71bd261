"""CUDA adapters for ``texture`` (contract: ``nvdiffrast.torch._backend``)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ... import _loader

_FILTER = {"nearest": 0, "linear": 1, "linear-mipmap-nearest": 2, "linear-mipmap-linear": 3}
_BOUNDARY = {"wrap": 0, "clamp": 1, "zero": 2, "cube": 3}


_OPS = None


def _ops():  # noqa: ANN202 - torch.ops namespace object
    global _OPS
    if _OPS is None:  # loading once keeps the per-call cost of the hot path down
        _loader.load_cuda()
        _OPS = torch.ops.nvdiffrast
    return _OPS


def _codes(filter_mode: str, boundary_mode: str) -> tuple[int, int]:
    if filter_mode not in _FILTER:
        raise KeyError(f"texture: filter_mode must be one of {sorted(_FILTER)}, got {filter_mode!r}")
    if boundary_mode not in _BOUNDARY:
        raise KeyError(f"texture: boundary_mode must be one of {sorted(_BOUNDARY)}, got {boundary_mode!r}")
    return _FILTER[filter_mode], _BOUNDARY[boundary_mode]


def _input_grads(f: int, uv_da: Optional[Tensor], mip_level_bias: Optional[Tensor], g_uv: Tensor,
                 g_da: Tensor, g_bias: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """The uv / uv_da / bias gradients the filter mode defines (spec §3.6 table); None for the others."""
    lml = f == _FILTER["linear-mipmap-linear"]
    return (
        None if f == _FILTER["nearest"] else g_uv,
        g_da if (lml and uv_da is not None) else None,
        g_bias if (lml and mip_level_bias is not None) else None,
    )


def texture_fwd(
    levels: Sequence[Tensor],
    uv: Tensor,
    uv_da: Optional[Tensor],
    mip_level_bias: Optional[Tensor],
    filter_mode: str,
    boundary_mode: str,
) -> Tensor:
    """Sample ``levels`` (base texture first, then mip levels) at ``uv``; returns [N, h, w, C]."""
    f, b = _codes(filter_mode, boundary_mode)
    return _ops().texture_fwd(list(levels), uv, uv_da, mip_level_bias, f, b)


def texture_bwd(
    levels: Sequence[Tensor],
    uv: Tensor,
    uv_da: Optional[Tensor],
    mip_level_bias: Optional[Tensor],
    dy: Tensor,
    filter_mode: str,
    boundary_mode: str,
) -> tuple[list[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Gradients per level, and w.r.t. uv (None for 'nearest'), uv_da and mip_level_bias (None unless
    'linear-mipmap-linear' and the input was given).

    Under ``torch.use_deterministic_algorithms(True)`` texel gradients are summed in a fixed order."""
    f, b = _codes(filter_mode, boundary_mode)
    det = torch.are_deterministic_algorithms_enabled()
    # dy is read with its strides (an expanded gradient needs no copy).
    grads, g_uv, g_da, g_bias = _ops().texture_bwd(list(levels), uv, uv_da, mip_level_bias, dy, f, b, det)
    return (list(grads), *_input_grads(f, uv_da, mip_level_bias, g_uv, g_da, g_bias))


def texture_bwd_mip(
    levels: Sequence[Tensor],
    uv: Tensor,
    uv_da: Optional[Tensor],
    mip_level_bias: Optional[Tensor],
    dy: Tensor,
    filter_mode: str,
    boundary_mode: str,
    want_tex: bool,
) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Like :func:`texture_bwd` for a box-filter pyramid of ``levels[0]`` (internal or prebuilt stack):
    the level gradients are folded into the base texture on the GPU, so the first result is the gradient
    of ``levels[0]`` (None when ``want_tex`` is False)."""
    f, b = _codes(filter_mode, boundary_mode)
    det = torch.are_deterministic_algorithms_enabled()
    g_tex, g_uv, g_da, g_bias = _ops().texture_bwd_mip(
        list(levels), uv, uv_da, mip_level_bias, dy, f, b, det, bool(want_tex))
    return (g_tex if want_tex else None, *_input_grads(f, uv_da, mip_level_bias, g_uv, g_da, g_bias))


def mip_build_flat(tex: Tensor, num_levels: int, cube: bool) -> Tensor:
    """Box-filter mip levels 1..``num_levels`` of ``tex`` in one flat tensor, level after level (each
    ``[B, (6,) H_l, W_l, C]``, the sizes of ``_mip.mip_level_sizes``): the stack that
    :func:`texture_fwd_flat` and :func:`texture_bwd_mip_flat` read. One allocation for the whole stack."""
    return _ops().texture_mip_build_flat(tex, int(num_levels), bool(cube))


def texture_fwd_flat(
    tex: Tensor,
    mips: Tensor,
    num_levels: int,
    uv: Tensor,
    uv_da: Optional[Tensor],
    mip_level_bias: Optional[Tensor],
    filter_mode: str,
    boundary_mode: str,
) -> Tensor:
    """Like :func:`texture_fwd` with the levels given as ``tex`` and its flat stack ``mips`` from
    :func:`mip_build_flat` (``num_levels`` counts ``tex``)."""
    f, b = _codes(filter_mode, boundary_mode)
    return _ops().texture_fwd_flat(tex, mips, int(num_levels), uv, uv_da, mip_level_bias, f, b)


def texture_bwd_mip_flat(
    tex: Tensor,
    mips: Tensor,
    num_levels: int,
    uv: Tensor,
    uv_da: Optional[Tensor],
    mip_level_bias: Optional[Tensor],
    dy: Tensor,
    filter_mode: str,
    boundary_mode: str,
    want_tex: bool,
) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """:func:`texture_bwd_mip` for a flat stack from :func:`mip_build_flat`."""
    f, b = _codes(filter_mode, boundary_mode)
    det = torch.are_deterministic_algorithms_enabled()
    g_tex, g_uv, g_da, g_bias = _ops().texture_bwd_mip_flat(
        tex, mips, int(num_levels), uv, uv_da, mip_level_bias, dy, f, b, det, bool(want_tex))
    return (g_tex if want_tex else None, *_input_grads(f, uv_da, mip_level_bias, g_uv, g_da, g_bias))


def mip_build(tex: Tensor, num_levels: int, cube: bool) -> list[Tensor]:
    """Box-filter mip levels 1..``num_levels`` of ``tex`` on the GPU (the sizes of ``_mip.mip_level_sizes``).

    A drop-in for ``_mip.build_mip_levels`` on CUDA tensors (the 2x2 means of the per-level kernel): two levels
    per launch while the levels are large, then the small tail of the pyramid in one launch."""
    return list(_ops().texture_mip_build(tex, int(num_levels), bool(cube)))


def mip_adjoint(level_grads: Sequence[Optional[Tensor]], cube: bool) -> Tensor:
    """Gradient on the base texture from gradients on every level of its box-filter pyramid, in one
    kernel (a drop-in for ``_mip.mip_adjoint`` on CUDA tensors). ``None`` entries count as zero."""
    grads = []
    for lvl, g in enumerate(level_grads):
        if g is None:
            raise ValueError(f"mip_adjoint: level {lvl} gradient is None; pass zeros for levels without gradient")
        grads.append(g)
    return _ops().texture_mip_adjoint(grads, bool(cube))
