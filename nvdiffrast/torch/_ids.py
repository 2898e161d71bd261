"""Triangle-id encoding of ``rast[..., 3]`` (spec §2.7).

The channel stores k = triangle index + 1. Up to 2^24 the float value is k itself (exact in float32).
Above that, float32 can no longer represent every integer, so the channel holds the float whose bit
pattern is ``0x4A800000 + k``; those bit patterns are all distinct and all compare greater than
2^24, so decoding is unambiguous.
"""

from __future__ import annotations

import torch

ID_EXACT_LIMIT: int = 1 << 24
ID_BIAS: int = 0x4A800000


def encode_triangle_ids(k: torch.Tensor) -> torch.Tensor:
    """Encode 1-based triangle ids (integer tensor, 0 = empty) into float32 channel values."""
    k64 = k.to(torch.int64)
    small = k64.to(torch.float32)
    big = (k64.clamp(min=ID_EXACT_LIMIT + 1) + ID_BIAS).to(torch.int32).view(torch.float32)
    return torch.where(k64 > ID_EXACT_LIMIT, big, small)


def decode_triangle_ids(v: torch.Tensor) -> torch.Tensor:
    """Decode float32 ``rast[..., 3]`` values into 1-based triangle ids (int64; 0 = empty)."""
    v = v.to(torch.float32).contiguous()
    small = v.clamp(min=0.0, max=float(ID_EXACT_LIMIT)).to(torch.int64)
    big = v.view(torch.int32).to(torch.int64) - ID_BIAS
    return torch.where(v > float(ID_EXACT_LIMIT), big, small)
