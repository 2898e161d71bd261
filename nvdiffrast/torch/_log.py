"""Log level (spec §2.6): the process-wide C++ log threshold of PyTorch's c10 library.

torch exposes no Python accessor for it, but c10 exports the flag as the plain C symbol
``FLAGS_caffe2_log_level`` (an ``int``), which ``ctypes`` reaches without pybind. 0 = info,
1 = warning, 2 = error, 3 = fatal. Setting it also changes torch's own C++ logging, as upstream
does. If the symbol cannot be found (an unusual torch build), a module-private level is used instead
so the functions still behave consistently; our native code reads the level through c10 either way.
"""

from __future__ import annotations

import ctypes
import glob
import os
from typing import Optional

_FALLBACK: list[int] = [1]
_FLAG: list[Optional[ctypes.c_int]] = []


def _flag() -> Optional[ctypes.c_int]:
    if not _FLAG:
        import torch

        libdir = os.path.join(os.path.dirname(torch.__file__), "lib")
        found: Optional[ctypes.c_int] = None
        for pattern in ("libc10.so*", "libc10.dylib", "c10.dll"):
            for path in sorted(glob.glob(os.path.join(libdir, pattern))):
                try:
                    found = ctypes.c_int.in_dll(ctypes.CDLL(path), "FLAGS_caffe2_log_level")
                    break
                except (OSError, ValueError):
                    continue
            if found is not None:
                break
        _FLAG.append(found)
    return _FLAG[0]


def get_log_level() -> int:
    """Return the current minimum level of messages printed by the native layer (0 = info … 3 = fatal)."""
    flag = _flag()
    return int(flag.value) if flag is not None else _FALLBACK[0]


def set_log_level(level: int) -> None:
    """Set the minimum level of native log messages: 0 = info, 1 = warning (default), 2 = error, 3 = fatal.

    This is torch's process-global C++ log threshold, so it affects torch's own C++ messages too.
    """
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"set_log_level(): level must be an int (0 = info … 3 = fatal), got {type(level).__name__}")
    flag = _flag()
    if flag is not None:
        flag.value = int(level)
    else:
        _FALLBACK[0] = int(level)
