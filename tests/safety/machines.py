"""What the safety suite's state machines share: a start instant and driving an event loop
from Hypothesis's synchronous rules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

START = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)  # the night Paris springs forward


def drain(loop: asyncio.AbstractEventLoop, rounds: int = 40) -> None:
    """Let every task of ``loop`` run until it waits on the (manual) clock again."""

    async def turns() -> None:
        for _ in range(rounds):
            await asyncio.sleep(0)

    loop.run_until_complete(turns())
