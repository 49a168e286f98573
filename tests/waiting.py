"""Waiting in tests that run real servers and processes: poll a condition, never sleep a
fixed time and hope."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], object | Awaitable[object]], timeout: float = 20.0, every: float = 0.05
) -> None:
    """Poll ``check`` (a function, or a coroutine function) until it returns something true;
    fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(every)
