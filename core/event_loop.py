"""The event loop that jobgate's processes run on: uvloop where it is installed (it is a
dependency everywhere but Windows), asyncio's own elsewhere. uvloop cut the server's CPU per
CreateJob by about a quarter here (bench/production.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
