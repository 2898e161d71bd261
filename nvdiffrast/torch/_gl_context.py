"""``RasterizeGLContext``: rasterization with OpenGL (spec §3.2, the v0.3.3 behavior).

The context owns an OpenGL >= 4.3 core context (EGL on Linux, WGL on Windows) from the native
module ``nvdiffrast._gl``; only ``rasterize`` (and ``DepthPeeler``) use it. Its outputs have exactly
the layout of the CUDA rasterizer, and every gradient and every other op runs on the backend of the
tensors' device. CUDA tensors are exchanged with OpenGL through CUDA-GL interop (no host round trip);
a context created with ``device='cpu'`` takes CPU tensors and works on any OpenGL 4.3 driver,
including Mesa's software rasterizer. See ``docs/opengl.md`` for threads, requirements and
troubleshooting.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from .. import _loader
from ._context import DeviceLike, resolve_device

_MODES = ("automatic", "manual")




class RasterizeGLContext:
    """Rasterizer context backed by an OpenGL context.

    Args:
        output_db: whether ``rasterize`` computes the barycentric derivatives ``rast_db``. When
            False, ``rast_db`` has shape ``[N, H, W, 0]`` and gradients through it are off.
        mode: ``'automatic'`` (every rasterization makes the GL context current on the calling
            thread and releases it afterwards) or ``'manual'`` (call :meth:`set_context` on the
            thread that rasterizes and :meth:`release_context` when done).
        device: None (the current CUDA device, or the CPU when CUDA is unavailable), a
            ``torch.device``, a string such as ``'cuda:1'`` or ``'cpu'``, or a CUDA device index.
            The inputs of ``rasterize`` must be on this device. On Linux the EGL device that drives
            this CUDA device renders.

    Attributes: ``output_db``, ``mode``, ``device``, ``active_depth_peeler`` (the active
    ``DepthPeeler`` or None) and ``cpp_wrapper`` (the native context object).

    Raises:
        AssertionError: ``output_db`` is not a bool or ``mode`` is not one of the two modes.
        RuntimeError: no OpenGL 4.3 context can be created; the message says what was found and
            what to install.
        ImportError: the native module ``nvdiffrast._gl`` is missing from this installation.
    """

    def __init__(self, output_db: bool = True, mode: str = "automatic", device: DeviceLike = None) -> None:
        if not isinstance(output_db, bool):
            raise AssertionError(f"RasterizeGLContext(): output_db must be a bool, got {type(output_db).__name__}")
        if not isinstance(mode, str) or mode not in _MODES:
            raise AssertionError(f"RasterizeGLContext(): mode must be 'automatic' or 'manual', got {mode!r}")
        self.output_db: bool = output_db
        self.mode: str = mode
        self.device: torch.device = resolve_device(device, "RasterizeGLContext")
        self._follows_inputs: bool = False
        self.active_depth_peeler: Optional[Any] = None
        self.cpp_wrapper: Any = None
        _loader.load_gl()
        _loader.preload_llvm_users()
        index = self.device.index if self.device.type == "cuda" else -1
        self.cpp_wrapper = torch.classes.nvdiffrast_gl.Context(int(index), output_db, mode == "manual")

    def __repr__(self) -> str:
        return f"RasterizeGLContext(output_db={self.output_db}, mode='{self.mode}', device='{self.device}')"

    def set_context(self) -> None:
        """Make the GL context current on the calling thread (manual mode only)."""
        if self.mode != "manual":
            raise AssertionError("RasterizeGLContext.set_context(): only allowed in mode='manual'")
        self.cpp_wrapper.set_context()

    def release_context(self) -> None:
        """Release the GL context from the calling thread (manual mode only)."""
        if self.mode != "manual":
            raise AssertionError("RasterizeGLContext.release_context(): only allowed in mode='manual'")
        self.cpp_wrapper.release_context()

    def gl_info(self) -> str:
        """One line describing the OpenGL driver, renderer and EGL/WGL path of this context."""
        return str(self.cpp_wrapper.info())

    def _set_limits(self, max_tile: int = 0, max_images_per_pass: int = 0, max_storage_bytes: int = 0) -> None:
        """Test hook: cap the tile size, the images per pass and the bytes bound per shader storage
        block below the driver's limits (0 = no cap), so the splitting paths run on small inputs."""
        self.cpp_wrapper.set_limits(int(max_tile), int(max_images_per_pass), int(max_storage_bytes))

    def _rasterize_fwd(
        self,
        pos: Tensor,
        tri: Tensor,
        resolution: Sequence[int],
        ranges: Optional[Tensor],
        prev_rast: Optional[Tensor],
    ) -> tuple[Tensor, Tensor]:
        """Forward rasterization for the public ``rasterize`` (arguments already validated).

        Returns ``(rast, rast_db)`` as the CUDA backend; ``rast_db`` is ``[N, H, W, 0]`` when
        ``output_db`` is False. ``prev_rast`` (depth peeling): fragments at or in front of that
        layer's depth are discarded, and pixels empty there stay empty.
        """
        height, width = int(resolution[0]), int(resolution[1])
        prev_z: Optional[Tensor] = None
        if prev_rast is not None:
            # Empty pixels get +inf so every fragment there is discarded.
            prev_z = torch.where(prev_rast[..., 3] > 0, prev_rast[..., 2], math.inf).contiguous()
        if pos.dim() != 2:
            ranges = None
        rast, rast_db = self.cpp_wrapper.rasterize(pos, tri, height, width, ranges, prev_z)
        return rast, rast_db
