"""Public ``texture`` and ``texture_construct_mip`` (spec §3.6, §3.7): validation, mip stacks, autograd.

The numbers come from the backend of the tensors' device (``_dispatch.backend_for``) through
``texture_fwd`` / ``texture_bwd`` of the contract in ``_backend``. Mip stacks are built here (plain
PyTorch ``_mip`` on the CPU, one GPU op on CUDA), so every backend receives the full list of levels.
One exception, for speed: an internal stack of CUDA tensors is built as one flat tensor and sampled by
the CUDA adapters' ``*_flat`` ops, which take the base texture and that tensor instead of a list (fewer
allocations, and two tensors instead of k + 1 through the op calls and the autograd node).

Gradient routing of the mip levels (spec §3.6):

* internal stack and prebuilt :class:`TextureMipWrapper`: the gradients that land on levels 1..k go
  through the exact adjoint of the box pyramid into ``tex`` (for a prebuilt stack the forward values
  still come from the stored levels);
* custom list: each list tensor receives its own level's gradient; ``tex`` only level 0's.
"""

from __future__ import annotations

import functools
import numbers
from typing import Optional, Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _checks, _mip
from ._dispatch import backend_for

_FILTER_MODES = ("nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear")
_MIP_FILTER_MODES = ("linear-mipmap-nearest", "linear-mipmap-linear")
_BOUNDARY_MODES = ("wrap", "clamp", "zero", "cube")
_MAX_TEXTURE_SIDE = 65536
_MAX_TEXTURE_BYTES = 2**31


class TextureMipWrapper:
    """Opaque mip stack made by :func:`texture_construct_mip`; pass it to :func:`texture` as ``mip=``.

    It holds levels 1..k of the texture it was built from (level 0 is always the ``tex`` given to
    ``texture``), the texture shape, the cube flag and the level limit it was built with.
    """

    __slots__ = ("_levels", "_tex_shape", "_cube_mode", "_max_mip_level")

    def __init__(self, levels: list[Tensor], tex_shape: tuple[int, ...], cube_mode: bool,
                 max_mip_level: Optional[int]) -> None:
        self._levels = levels
        self._tex_shape = tex_shape
        self._cube_mode = cube_mode
        self._max_mip_level = max_mip_level

    @property
    def tex_shape(self) -> tuple[int, ...]:
        """Shape of the texture the stack was built for."""
        return self._tex_shape

    @property
    def cube_mode(self) -> bool:
        """Whether the stack was built for a cube map."""
        return self._cube_mode

    @property
    def num_levels(self) -> int:
        """Number of levels beyond the base level."""
        return len(self._levels)

    def __repr__(self) -> str:
        return (f"TextureMipWrapper(tex_shape={list(self._tex_shape)}, cube_mode={self._cube_mode}, "
                f"levels={self.num_levels})")


# --------------------------------------------------------------------------------------- checks
def _is_level_limit(v: object) -> bool:
    return v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 0)


def _check_tensors(op: str, named: dict[str, Tensor]) -> None:
    """Device, contiguity and dtype checks shared by all tensor inputs (RuntimeError, spec §6)."""
    dev = None
    for t in named.values():  # the common case (all fine) without building the messages' data
        if dev is None:
            dev = t.device
        if t.device != dev or t.dtype != torch.float32 or not t.is_contiguous():
            break
    else:
        if dev is not None and dev.type in ("cpu", "cuda"):
            return
    _checks.check_same_device(op, **named)
    _checks.check_contiguous(op, **named)
    _checks.check_dtype(op, torch.float32, **named)


def _check_tex_shape(tex: Tensor, cube: bool) -> None:
    shp = list(tex.shape)
    if cube:
        if tex.dim() != 5 or shp[1] != 6 or min(shp) <= 0:
            raise RuntimeError(f"tex must have shape [>0, 6, >0, >0, >0] in cube map mode (got {shp})")
        if shp[2] != shp[3]:
            raise RuntimeError(f"texture shape must be square in cube map mode (got faces of {shp[2]}x{shp[3]})")
        h, w = shp[2], shp[3]
    else:
        if tex.dim() != 4 or min(shp) <= 0:
            hint = " (a [N, 6, S, S, C] cube map needs boundary_mode='cube')" if tex.dim() == 5 else ""
            raise RuntimeError(f"tex must have shape [>0, >0, >0, >0] (got {shp}){hint}")
        h, w = shp[1], shp[2]
    if h > _MAX_TEXTURE_SIDE or w > _MAX_TEXTURE_SIDE:
        raise RuntimeError(f"texture size too large: each side must be <= {_MAX_TEXTURE_SIDE} (got {w}x{h})")
    if tex.numel() * 4 > _MAX_TEXTURE_BYTES:
        raise RuntimeError(f"texture cannot be larger than 2 GB (got {tex.numel() * 4} bytes)")


def _tex_hw(tex: Tensor, cube: bool) -> tuple[int, int]:
    return (tex.shape[2], tex.shape[3]) if cube else (tex.shape[1], tex.shape[2])


def _check_custom_levels(mip: list, tex: Tensor, cube: bool) -> list[Tensor]:
    h, w = _tex_hw(tex, cube)
    if len(mip) > _mip.MAX_MIP_LEVELS:
        raise RuntimeError(f"texture(): a custom mip stack holds at most {_mip.MAX_MIP_LEVELS} levels beyond the "
                           f"base level (16 in all), got {len(mip)}")
    for i, lv in enumerate(mip):
        _checks.require_tensor("texture", f"mip[{i}]", lv)
    for i, lv in enumerate(mip):
        if lv.device != tex.device:
            raise RuntimeError(f"texture(): mip stack inputs must reside on the same device as tex "
                               f"(mip[{i}] on {lv.device}, tex on {tex.device})")
        if not lv.is_contiguous():
            raise RuntimeError(f"texture(): mip stack inputs must be contiguous tensors (mip[{i}] is not)")
        if lv.dtype != torch.float32:
            raise RuntimeError(f"texture(): mip stack inputs must be float32 tensors (mip[{i}] is {lv.dtype})")
    for i, lv in enumerate(mip):
        lvl = i + 1
        if i > 0 and list(mip[i - 1].shape[-3:-1]) == [1, 1]:
            raise RuntimeError(f"mip level size mismatch in custom mip stack: mip[{i - 1}] (level {lvl - 1}) is "
                               f"1x1, so it must be the last entry, but the list has {len(mip)} entries")
        lw, lh = _mip.custom_level_size(w, h, lvl)
        want = [tex.shape[0], 6, lh, lw, tex.shape[-1]] if cube else [tex.shape[0], lh, lw, tex.shape[-1]]
        if list(lv.shape) != want:
            raise RuntimeError(f"mip level size mismatch in custom mip stack: mip[{i}] (level {lvl}) must have "
                               f"shape {want} for tex of shape {list(tex.shape)} (got {list(lv.shape)})")
    return list(mip)


_CUDA_TEXTURE = None


def _cuda_texture():  # noqa: ANN202 - module
    global _CUDA_TEXTURE
    if _CUDA_TEXTURE is None:
        from ._cuda import texture as cuda_texture

        _CUDA_TEXTURE = cuda_texture
    return _CUDA_TEXTURE


@functools.lru_cache(maxsize=256)
def _level_sizes(width: int, height: int, max_mip_level: Optional[int]) -> tuple[tuple[int, int], ...]:
    """:func:`_mip.mip_level_sizes`, memoized (textures keep their size from call to call)."""
    return tuple(_mip.mip_level_sizes(width, height, max_mip_level))


def _build_levels(tex: Tensor, sizes: list[tuple[int, int]], cube: bool) -> list[Tensor]:
    """Levels 1..len(sizes) of ``tex``: one GPU op for CUDA tensors, plain PyTorch elsewhere."""
    if not sizes:
        return []
    if tex.is_cuda:
        return _cuda_texture().mip_build(tex, len(sizes), cube)
    return _mip.build_mip_levels(tex, sizes)


# ------------------------------------------------------------------------------------- autograd
class _TextureFunction(torch.autograd.Function):
    """Autograd node of :func:`texture`. ``stack_kind``: 'internal', 'prebuilt' or 'custom' (``mips`` are
    the levels 1..k), or 'flat' (CUDA, internal stack: ``mips`` is the one flat tensor of
    ``_cuda.texture.mip_build_flat`` holding ``num_levels - 1`` levels)."""

    @staticmethod
    def forward(ctx, filter_mode: str, boundary_mode: str, stack_kind: str, num_levels: int, tex: Tensor,
                uv: Tensor, uv_da: Optional[Tensor], bias: Optional[Tensor], *mips: Tensor) -> Tensor:
        if stack_kind == "flat":
            out = _cuda_texture().texture_fwd_flat(tex, mips[0], num_levels, uv, uv_da, bias, filter_mode,
                                                   boundary_mode)
        else:
            out = backend_for(uv).texture_fwd([tex, *mips], uv, uv_da, bias, filter_mode, boundary_mode)
        ctx.save_for_backward(tex, uv, uv_da, bias, *mips)
        ctx.modes = (filter_mode, boundary_mode, stack_kind, num_levels)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):
        tex, uv, uv_da, bias, *mips = ctx.saved_tensors
        filter_mode, boundary_mode, stack_kind, num_levels = ctx.modes
        if stack_kind == "flat":
            g_tex, g_uv, g_uv_da, g_bias = _cuda_texture().texture_bwd_mip_flat(
                tex, mips[0], num_levels, uv, uv_da, bias, dy, filter_mode, boundary_mode, ctx.needs_input_grad[4])
            return (None, None, None, None, g_tex, g_uv, g_uv_da, g_bias, None)
        if uv.is_cuda and stack_kind != "custom":
            # Level gradients are folded into tex on the GPU in the same call (no per-level tensors).
            g_tex, g_uv, g_uv_da, g_bias = _cuda_texture().texture_bwd_mip(
                [tex, *mips], uv, uv_da, bias, dy, filter_mode, boundary_mode, ctx.needs_input_grad[4])
            return (None, None, None, None, g_tex, g_uv, g_uv_da, g_bias, *([None] * len(mips)))
        backend = backend_for(uv)
        level_grads, g_uv, g_uv_da, g_bias = backend.texture_bwd(
            [tex, *mips], uv, uv_da, bias, dy if dy.is_cuda else dy.contiguous(), filter_mode, boundary_mode)
        if stack_kind == "custom":
            g_tex = level_grads[0]
            g_mips = list(level_grads[1:])
        else:
            g_tex = _mip.mip_adjoint(level_grads, tex.shape) if ctx.needs_input_grad[4] else None
            g_mips = [None] * len(mips)
        return (None, None, None, None, g_tex, g_uv, g_uv_da, g_bias, *g_mips)


# ---------------------------------------------------------------------------------------- API
def texture(
    tex: Tensor,
    uv: Tensor,
    uv_da: Optional[Tensor] = None,
    mip_level_bias: Optional[Tensor] = None,
    mip: Union[TextureMipWrapper, list, None] = None,
    filter_mode: str = "auto",
    boundary_mode: str = "wrap",
    max_mip_level: Optional[int] = None,
) -> Tensor:
    """Sample a 2-D texture or a cube map at ``uv`` with optional mipmapping (spec §3.6).

    Args:
        tex: ``[N or 1, H, W, C]`` float32 texture, or ``[N or 1, 6, S, S, C]`` with ``boundary_mode='cube'``.
        uv: ``[N, h, w, 2]`` texture coordinates (s = column axis, t = row axis), or ``[N, h, w, 3]``
            directions for a cube map.
        uv_da: optional ``[N, h, w, 4]`` screen derivatives (ds/dX, ds/dY, dt/dX, dt/dY), or
            ``[N, h, w, 6]`` for a cube map; selects the mip level.
        mip_level_bias: optional ``[N, h, w]`` added to the mip level.
        mip: a stack from :func:`texture_construct_mip`, or a list of custom levels 1..k.
        filter_mode: 'auto', 'nearest', 'linear', 'linear-mipmap-nearest' or 'linear-mipmap-linear'.
        boundary_mode: 'wrap', 'clamp', 'zero' or 'cube'.
        max_mip_level: limit on internally built levels; 0 turns mipmapping off.

    Returns:
        ``[N, h, w, C]`` float32 samples on the device of the inputs.
    """
    if filter_mode == "auto":
        filter_mode = "linear-mipmap-linear" if (uv_da is not None or mip_level_bias is not None) else "linear"
    # Messages are only built for a failing check (formatting them costs more than the checks).
    if not _is_level_limit(max_mip_level):
        _checks.require(False, "texture", f"max_mip_level must be None or an int >= 0, got {max_mip_level!r}")
    if not isinstance(tex, Tensor):
        _checks.require_tensor("texture", "tex", tex)
    if not isinstance(uv, Tensor):
        _checks.require_tensor("texture", "uv", uv)
    if filter_mode in _MIP_FILTER_MODES:
        if not (isinstance(uv_da, Tensor) or isinstance(mip_level_bias, Tensor)):
            _checks.require(False, "texture",
                            f"mipmapping filter mode requires uv_da and/or mip_level_bias input (filter_mode="
                            f"{filter_mode!r} got neither as a tensor; pass one, or use filter_mode='linear')")
        if not (uv_da is None or isinstance(uv_da, Tensor)):
            _checks.require(False, "texture", f"uv_da must be None or a torch.Tensor, got {type(uv_da).__name__}")
        if not (mip_level_bias is None or isinstance(mip_level_bias, Tensor)):
            _checks.require(False, "texture", "mip_level_bias must be None or a torch.Tensor, got "
                            f"{type(mip_level_bias).__name__}")
    if max_mip_level is not None:
        max_mip_level = int(max_mip_level)
    if max_mip_level == 0 and filter_mode in _MIP_FILTER_MODES:
        filter_mode = "linear"
    if filter_mode not in _FILTER_MODES:
        raise KeyError(f"filter_mode must be one of 'auto', {', '.join(repr(m) for m in _FILTER_MODES)} "
                       f"(got {filter_mode!r})")
    if boundary_mode not in _BOUNDARY_MODES:
        raise KeyError(f"boundary_mode must be one of {', '.join(repr(m) for m in _BOUNDARY_MODES)} "
                       f"(got {boundary_mode!r})")
    mipmapping = filter_mode in _MIP_FILTER_MODES
    if not mipmapping:  # ignored without error, as upstream does
        uv_da = mip_level_bias = mip = None
    elif not (mip is None or isinstance(mip, (TextureMipWrapper, list))):
        _checks.require(False, "texture", "mip must be None, a list of tensors or the result of "
                        f"texture_construct_mip(), got {type(mip).__name__}")
    cube = boundary_mode == "cube"

    named = {"tex": tex, "uv": uv}
    if uv_da is not None:
        named["uv_da"] = uv_da
    if mip_level_bias is not None:
        named["mip_level_bias"] = mip_level_bias
    _check_tensors("texture", named)

    _check_tex_shape(tex, cube)
    nuv = 3 if cube else 2
    suffix = " in cube map mode" if cube else ""
    if uv.dim() != 4 or uv.shape[-1] != nuv or min(uv.shape) <= 0:
        raise RuntimeError(f"uv must have shape [>0, >0, >0, {nuv}]{suffix} (got {list(uv.shape)})")
    if tex.shape[0] != 1 and tex.shape[0] != uv.shape[0]:
        raise RuntimeError(f"minibatch size mismatch between inputs tex, uv: tex batch must be 1 or "
                           f"{uv.shape[0]} (got {tex.shape[0]})")
    n, h, w = uv.shape[:3]
    if uv_da is not None:
        nda = 6 if cube else 4
        if list(uv_da.shape) != [n, h, w, nda]:
            raise RuntimeError(f"uv_da must have shape [minibatch_size, height, width, {nda}] = "
                               f"{[n, h, w, nda]} (got {list(uv_da.shape)})")
    if mip_level_bias is not None and list(mip_level_bias.shape) != [n, h, w]:
        raise RuntimeError(f"mip_level_bias must have shape [minibatch_size, height, width] = {[n, h, w]} "
                           f"(got {list(mip_level_bias.shape)})")

    mips: list[Tensor] = []
    stack_kind = "internal"
    if mipmapping:
        if isinstance(mip, TextureMipWrapper):
            if mip.tex_shape != tuple(tex.shape) or mip.cube_mode != cube:
                raise RuntimeError(
                    f"mip does not match texture size: the stack was built for a tex of shape "
                    f"{list(mip.tex_shape)} (cube_mode={mip.cube_mode}), got tex of shape {list(tex.shape)} "
                    f"(cube_mode={cube})")
            if mip.num_levels and mip._levels[0].device != tex.device:
                raise RuntimeError(f"texture(): mip stack inputs must reside on the same device as tex "
                                   f"(stack on {mip._levels[0].device}, tex on {tex.device})")
            mips = list(mip._levels)
            stack_kind = "prebuilt"
        elif isinstance(mip, list):
            mips = _check_custom_levels(mip, tex, cube)
            stack_kind = "custom"
        else:
            th, tw = _tex_hw(tex, cube)
            sizes = _level_sizes(tw, th, max_mip_level)
            if tex.is_cuda:
                # The whole stack in one tensor: one allocation, and two tensors instead of k + 1 through
                # the op calls and the autograd node.
                flat = _cuda_texture().mip_build_flat(tex.detach(), len(sizes), cube)
                return _TextureFunction.apply(filter_mode, boundary_mode, "flat", len(sizes) + 1, tex, uv, uv_da,
                                              mip_level_bias, flat)
            with torch.no_grad():
                mips = _build_levels(tex.detach(), list(sizes), cube)
    return _TextureFunction.apply(filter_mode, boundary_mode, stack_kind, len(mips) + 1, tex, uv, uv_da,
                                  mip_level_bias, *mips)


def texture_construct_mip(tex: Tensor, max_mip_level: Optional[int] = None,
                          cube_mode: bool = False) -> TextureMipWrapper:
    """Build the box-filter mip stack of ``tex`` once, for reuse across :func:`texture` calls (spec §3.7).

    Args:
        tex: ``[N, H, W, C]`` float32 texture, or ``[N, 6, S, S, C]`` with ``cube_mode=True``.
        max_mip_level: None (build down to 1x1) or the most levels to build (int >= 0).
        cube_mode: whether ``tex`` is a cube map.

    Returns:
        An opaque :class:`TextureMipWrapper`. It stores values: later changes to ``tex`` do not update
        it, but gradients that reach its levels flow into the ``tex`` passed to :func:`texture`.
    """
    _checks.require_tensor("texture_construct_mip", "tex", tex)
    _checks.require_bool("texture_construct_mip", "cube_mode", cube_mode)
    _checks.require(_is_level_limit(max_mip_level), "texture_construct_mip",
                    f"max_mip_level must be None or an int >= 0, got {max_mip_level!r}")
    if max_mip_level is not None:
        max_mip_level = int(max_mip_level)
    _check_tensors("texture_construct_mip", {"tex": tex})
    _check_tex_shape(tex, cube_mode)
    th, tw = _tex_hw(tex, cube_mode)
    sizes = _mip.mip_level_sizes(tw, th, max_mip_level)
    with torch.no_grad():
        levels = _build_levels(tex.detach(), sizes, cube_mode)
    return TextureMipWrapper(levels, tuple(tex.shape), cube_mode, max_mip_level)


__all__ = ["texture", "texture_construct_mip", "TextureMipWrapper"]
