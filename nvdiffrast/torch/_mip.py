"""Mip pyramids for ``texture``: level sizes, box-filter building and its exact adjoint (spec §3.6, §4.3).

Everything here is plain PyTorch, so it runs on CPU and CUDA tensors alike. A texture is
``[B, H, W, C]`` (2-D) or ``[B, 6, S, S, C]`` (cube); the functions work on the last three axes,
which filters every cube face on its own, as the spec asks.
"""

from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor

#: Most mip levels beyond the base level: 16 levels in all, the size of the CUDA backend's level table
#: (a 65536-texel side, which would need 16 halvings, stops at 2 texels).
MAX_MIP_LEVELS = 15


def _size_table(sizes: Sequence[tuple[int, int]], bad: int) -> str:
    rows = ["    level   width  height"]
    for lvl, (w, h) in enumerate(sizes):
        mark = "   <- odd extent, cannot halve" if lvl == bad else ""
        rows.append(f"    {lvl:5d} {w:7d} {h:7d}{mark}")
    return "\n".join(rows)


def mip_level_sizes(width: int, height: int, max_mip_level: Optional[int] = None) -> list[tuple[int, int]]:
    """Sizes ``(w, h)`` of the levels 1..k that box filtering builds from a ``width`` x ``height`` base.

    Level l is ``max(1, width >> l)`` x ``max(1, height >> l)``; building stops at 1x1, after
    ``max_mip_level`` levels (None: no limit) or after :data:`MAX_MIP_LEVELS` levels. Halving a side that is
    odd and larger than 1 is impossible: that raises ``RuntimeError`` with the table of the sizes tried.
    """
    sizes: list[tuple[int, int]] = []
    w, h = int(width), int(height)
    limit = MAX_MIP_LEVELS if max_mip_level is None else min(int(max_mip_level), MAX_MIP_LEVELS)
    while (w > 1 or h > 1) and len(sizes) < limit:
        if (w > 1 and w % 2) or (h > 1 and h % 2):
            tried = [(int(width), int(height)), *sizes]
            raise RuntimeError(
                "Mip-map size error - cannot downsample an odd extent greater than 1. "
                f"Level {len(sizes)} is {w}x{h} (width x height) and would have to be halved to build level "
                f"{len(sizes) + 1}. Use power-of-two texture sides, or pass max_mip_level={len(sizes)} "
                "(or less) to stop before it. Attempted level sizes:\n" + _size_table(tried, len(sizes))
            )
        w, h = max(1, w // 2), max(1, h // 2)
        sizes.append((w, h))
    return sizes


def custom_level_size(width: int, height: int, level: int) -> tuple[int, int]:
    """Size ``(w, h)`` that level ``level`` of a user-given (custom) mip list must have."""
    return max(1, int(width) >> level), max(1, int(height) >> level)


def downsample(x: Tensor) -> Tensor:
    """One 2x2 box-filter step on the last three axes ``[..., H, W, C]``.

    A side that is already 1 stays 1 (then only the other side is averaged pairwise). Differentiable.
    """
    h, w, c = x.shape[-3:]
    lead = x.shape[:-3]
    fh, fw = (2 if h > 1 else 1), (2 if w > 1 else 1)
    if (h > 1 and h % 2) or (w > 1 and w % 2):
        raise RuntimeError(f"Mip-map size error - cannot downsample an odd extent greater than 1 (got {w}x{h})")
    y = x.reshape(*lead, h // fh, fh, w // fw, fw, c)
    return y.mean(dim=(-4, -2))


def build_mip_levels(tex: Tensor, sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """Levels 1..len(sizes) of ``tex`` (``[B, H, W, C]`` or ``[B, 6, S, S, C]``) as contiguous tensors."""
    levels: list[Tensor] = []
    cur = tex
    for w, h in sizes:
        cur = downsample(cur).contiguous()
        if cur.shape[-3] != h or cur.shape[-2] != w:  # guards the size rule; cannot happen for valid sizes
            raise RuntimeError(f"internal mip size mismatch: built {tuple(cur.shape)}, expected {w}x{h}")
        levels.append(cur)
    return levels


def upsample_adjoint(g: Tensor, finer_shape: Sequence[int]) -> Tensor:
    """Adjoint of :func:`downsample`: spread ``g`` (coarse) over the texels it averaged in ``finer_shape``.

    Each finer texel receives its coarse texel's gradient times 1/2 per halved axis.
    """
    h, w, c = finer_shape[-3:]
    lead = g.shape[:-3]
    fh, fw = (2 if h > 1 else 1), (2 if w > 1 else 1)
    y = g.reshape(*lead, h // fh, 1, w // fw, 1, c).expand(*lead, h // fh, fh, w // fw, fw, c)
    return y.reshape(*lead, h, w, c) / float(fh * fw)


def mip_adjoint(level_grads: Sequence[Optional[Tensor]], base_shape: Sequence[int]) -> Optional[Tensor]:
    """Sum the gradients on levels 0..k of a box-filter pyramid into one gradient on level 0.

    ``level_grads[l]`` is the gradient on level l (None counts as zero). This is the exact adjoint of
    :func:`build_mip_levels`, applied coarse to fine. Returns None when every entry is None.
    """
    acc: Optional[Tensor] = None
    for lvl in range(len(level_grads) - 1, 0, -1):
        g = level_grads[lvl]
        if g is not None:
            acc = g if acc is None else acc + g
        if acc is not None:
            finer = level_grads[lvl - 1]
            finer_shape = finer.shape if finer is not None else _finer_shape(acc.shape, base_shape, lvl - 1)
            acc = upsample_adjoint(acc, finer_shape)
    g0 = level_grads[0] if level_grads else None
    if g0 is not None:
        acc = g0 if acc is None else acc + g0
    return acc


def _finer_shape(coarse: Sequence[int], base_shape: Sequence[int], lvl: int) -> list[int]:
    h, w = base_shape[-3], base_shape[-2]
    return [*coarse[:-3], max(1, h >> lvl), max(1, w >> lvl), coarse[-1]]


__all__ = [
    "MAX_MIP_LEVELS", "mip_level_sizes", "custom_level_size", "downsample", "build_mip_levels",
    "upsample_adjoint", "mip_adjoint",
]
