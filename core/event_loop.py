"""The event loop that jobgate's processes run on: uvloop where it is installed (it is a
dependency everywhere but Windows), asyncio's own elsewhere. uvloop cut the server's CPU per
CreateJob by about a quarter here (bench/production.py).

The cyclic garbage collector is tuned for a long-running service. By default a server holding
thousands of streams ran a full collection every few seconds under load, each stopping every
call for 100-450 ms. What was imported before the loop starts is frozen (never scanned again),
and collections run less often: most garbage here is freed by reference counting anyway.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Allocations before a young collection; young collections before a middle one; middle ones
# before a full one (CPython's defaults: 700, 10, 10).
GC_THRESHOLDS = (20_000, 50, 100)


def run(main: Coroutine[Any, Any, T]) -> T:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
