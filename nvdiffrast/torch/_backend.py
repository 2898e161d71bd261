"""The contract between the public API layer and the compute backends.

The public functions (``rasterize``, ``interpolate``, ``texture``, ``antialias`` …) validate their
arguments, normalize them, and wire autograd. The numbers come from a *backend*: a module exposing
the functions of :class:`Backend` below, chosen by the device of the inputs (see ``_dispatch``):

* ``nvdiffrast.torch.reference`` — CPU tensors, vectorized PyTorch (the oracle);
* ``nvdiffrast.torch._cuda_backend`` — CUDA tensors, the native ``nvdiffrast._C`` module.

The OpenGL rasterizer (``RasterizeGLContext``) replaces only ``rasterize_fwd``; every backward and
every other op runs on the backend of the tensors' device.

Conventions every backend follows (the API layer guarantees them before calling):

* all tensors are contiguous, float32 (``tri``/``ranges`` int32), on one device (``ranges`` on CPU);
* shapes are already validated against spec §6; a backend raises only for conditions it alone can
  detect (overflow, out of memory) and never crashes on bad data (NaN/Inf positions, out-of-range
  indices in ``tri`` → such triangles/pixels are skipped and produce zeros);
* outputs are new contiguous tensors on the input device;
* gradient functions return ``None`` for an input that gets no gradient.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence

import torch
from torch import Tensor


class Backend(Protocol):
    # ------------------------------------------------------------------------------ rasterize
    def rasterize_fwd(
        self,
        pos: Tensor,
        tri: Tensor,
        resolution: tuple[int, int],
        ranges: Optional[Tensor],
        prev_rast: Optional[Tensor],
    ) -> tuple[Tensor, Tensor]:
        """Rasterize.

        pos: [N, V, 4] (instanced; ``ranges`` is None) or [V, 4] (range mode; ``ranges`` is a CPU
        int32 [N, 2] of (first, count)). resolution: (H, W). prev_rast: None, or the ``rast`` of
        the previous depth-peeling layer [N, H, W, 4]: fragments with z/w <= that pixel's z/w are
        discarded, and pixels empty there stay empty.
        Returns (rast [N, H, W, 4], rast_db [N, H, W, 4]) as spec §3.3/§4.1.
        """

    def rasterize_bwd(
        self, pos: Tensor, tri: Tensor, rast: Tensor, dy: Tensor, ddb: Optional[Tensor]
    ) -> Tensor:
        """Gradient w.r.t. pos (same shape as pos, z component 0) from dL/drast (dy, [N,H,W,4])
        and, when grad_db, dL/drast_db (ddb, [N,H,W,4]; None otherwise). Spec §4.1."""

    # ---------------------------------------------------------------------------- interpolate
    def interpolate_fwd(
        self,
        attr: Tensor,
        rast: Tensor,
        tri: Tensor,
        rast_db: Optional[Tensor],
        diff_idx: Optional[Sequence[int]],
    ) -> tuple[Tensor, Tensor]:
        """attr [V, A] or [N|1, V, A]; rast [N, H, W, 4].

        diff_idx: None for no derivatives (then out_da is [N, H, W, 0]), else the attribute
        channels to differentiate, already normalized by the API layer: values in [0, A), or -1
        for an index that was out of range (its two output channels are 0). ``'all'`` arrives as
        ``list(range(A))``. rast_db is given whenever diff_idx is not None.
        Returns (out [N, H, W, A], out_da [N, H, W, 2*len(diff_idx)]).
        """

    def interpolate_bwd(
        self,
        attr: Tensor,
        rast: Tensor,
        tri: Tensor,
        dy: Tensor,
        rast_db: Optional[Tensor],
        dda: Optional[Tensor],
        diff_idx: Optional[Sequence[int]],
    ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """Returns (grad_attr shaped like attr, grad_rast [N,H,W,4] with channels 2,3 zero,
        grad_rast_db [N,H,W,4] or None when no derivatives were requested)."""

    # -------------------------------------------------------------------------------- texture
    def texture_fwd(
        self,
        levels: Sequence[Tensor],
        uv: Tensor,
        uv_da: Optional[Tensor],
        mip_level_bias: Optional[Tensor],
        filter_mode: str,
        boundary_mode: str,
    ) -> Tensor:
        """levels[0] is the texture ([B,H,W,C] or cube [B,6,S,S,C], B = 1 or N); levels[1:] are
        the mip levels (same batch and channels, sizes of spec §3.6), possibly empty.
        filter_mode in {'nearest', 'linear', 'linear-mipmap-nearest', 'linear-mipmap-linear'}
        (never 'auto'); boundary_mode in {'wrap', 'clamp', 'zero', 'cube'}; cube iff 'cube'.
        uv [N, h, w, 2|3]; uv_da [N, h, w, 4|6] or None; mip_level_bias [N, h, w] or None.
        Returns [N, h, w, C]."""

    def texture_bwd(
        self,
        levels: Sequence[Tensor],
        uv: Tensor,
        uv_da: Optional[Tensor],
        mip_level_bias: Optional[Tensor],
        dy: Tensor,
        filter_mode: str,
        boundary_mode: str,
    ) -> tuple[list[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        """Returns (grads per level (list, same length/shapes as levels), grad_uv or None for
        'nearest', grad_uv_da or None, grad_mip_level_bias or None). Per spec §3.6 table."""

    # ------------------------------------------------------------------------------ antialias
    def antialias_topology_hash(self, tri: Tensor, reuse: bool = False) -> Any:
        """Build the edge → opposite-vertex structure for ``tri`` (opaque to the API layer).

        ``reuse=True`` (the API layer's own, per-call topology): the backend may hand back a structure it
        keeps between calls, brought up to date with ``tri``'s current content. The backward must then
        not depend on it (a later call may rebuild it before this call's backward runs)."""

    def antialias_fwd(
        self, color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, topology: Any
    ) -> tuple[Tensor, Any]:
        """Returns (out like color, saved work data passed back to antialias_bwd)."""

    def antialias_bwd(
        self,
        color: Tensor,
        rast: Tensor,
        pos: Tensor,
        tri: Tensor,
        dy: Tensor,
        work: Any,
        topology: Any,
        pos_gradient_boost: float,
    ) -> tuple[Tensor, Tensor]:
        """Returns (grad_color like color, grad_pos like pos)."""

    # Optional: a backend may also offer the op with its own autograd node (the API layer then uses it
    # instead of wiring antialias_fwd/antialias_bwd into a Python autograd.Function):
    #   antialias_autograd(color, rast, pos, tri, topology, pos_gradient_boost) -> out


def backend_name(t: torch.Tensor) -> str:
    """'reference' for CPU tensors, 'cuda' for CUDA tensors."""
    return "cuda" if t.is_cuda else "reference"
