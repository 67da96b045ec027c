"""Fast large messages: glibc's malloc told to reuse freed blocks.

Every dream step moves megabytes through fresh buffers on both ends: the
gathered frames, their bytes, the protobuf message, gRPC's own copies. By
default glibc hands large blocks back to the OS when they are freed, so the
next step maps them anew and the first touch of every page faults. Measured on
a 2-core CPU: serializing 64 frames (786 KB) took 2.2 ms that way and 0.12 ms
with the blocks reused, and a round trip of 64 frames fell from 3.1 to 1.2 ms.

The price is memory: up to 256 MiB of freed memory stays in the process for
reuse, and the setting holds for the whole process, so a library never applies
it unasked. ``wmsim serve`` owns its process and applies it (``--no-tune-malloc``
leaves malloc alone); ``serve()`` called as a library, remote simulators and
dream envs apply it only when given ``tune_malloc=True``.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks up to 32 MiB come from the heap
TRIM_THRESHOLD = 256 * 2**20  # freed memory kept before the heap shrinks


def keep_freed_memory() -> bool:
    """Apply the setting to this process (see the module docstring); whether it applied.

    It applies on glibc only; elsewhere nothing changes and the answer is False.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):  # not glibc: musl, macOS, Windows
        return False
