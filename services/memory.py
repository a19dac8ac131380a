"""Handing a finished job's freed memory back to the system, so a long-lived process stays at its working size.

glibc keeps memory that Python and numpy free in its heaps (buffers under its mmap threshold, which rises to 32 MiB
as large blocks come and go), and one job's scattered leftovers raise the process's floor for good: the first soak
(``bench/results/soak.md``) saw a pool process step up ~60 MiB around job 900 and never come back. ``malloc_trim(0)``
returns every free page of every heap; it costs milliseconds. Other C libraries (musl, macOS) have no such call and
keep their own policy: there this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from functools import cache

log = logging.getLogger(__name__)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> bool:
    """Returns the heaps' free pages to the system; False where the C library cannot (nothing to do there)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
