"""Every long-running task of the agent has an owner that restarts it: the supervisor.

One device's failure must never stop the agent or another device. The agent runs each
equipment controller and each of its own loops (schedule, monitor, persistence, link) as a
:class:`Child` of one :class:`Supervisor`, inside one ``asyncio.TaskGroup``:

- when a child's ``run`` raises, the supervisor first calls its ``safe`` action (bollard
  motors off, crossing to flashing amber via its controller, lamps to their default level),
  then reports an ALARM naming the child and the error, then restarts it after a backoff
  (1 s, doubling to :data:`MAX_BACKOFF_S`; a child that ran for longer than that since its
  last start begins again at 1 s), on the injected clock's monotonic time;
- a child that returns is done (one-shot tasks such as the firmware start-up);
- work that starts while the agent runs (a firmware download, the certificate renewal
  timer of one link session) is spawned as a child with :meth:`Supervisor.spawn`: the same
  TaskGroup owns it, so its failure is contained, alarmed and restarted (or, one-shot,
  reported) like any other, and it ends with the agent;
- cancellation (the agent stopping) propagates to every child, and the TaskGroup awaits
  them all: no task outlives its owner, none is left unawaited.

The alarm is whatever the agent passes as ``report`` (an outbox event); the supervisor
itself does no I/O beyond the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from foundation.clock import Clock
from foundation.escaping import escape

log = logging.getLogger("ondijon.edge.supervisor")

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


@dataclass
class Child:
    """A supervised task.

    Attributes:
        name: what the alarm names (a device id, or ``schedule``, ``link`` ...).
        run: the coroutine function to run (and to run again after a failure).
        safe: what puts the child's outputs in their safe state after a failure.
        restart: False for a one-shot task: a failure is reported, not retried.
        failures: how many times it failed (for the state and the tests).
    """

    name: str
    run: Callable[[], Awaitable[None]]
    safe: Callable[[], Awaitable[None]] | None = None
    restart: bool = True
    failures: int = field(default=0)


Report = Callable[[Child, BaseException], None]

Spawn = Callable[[Child], "asyncio.Task[None]"]
"""What an owner hands to code that starts work while the agent runs (:meth:`Supervisor.spawn`)."""


class Supervisor:
    """Runs children in one TaskGroup, restarting each with backoff when it fails."""

    def __init__(self, clock: Clock, report: Report) -> None:
        self._clock = clock
        self._report = report
        self.children: list[Child] = []
        self._group: asyncio.TaskGroup | None = None

    def add(self, child: Child) -> Child:
        """Add a child; call before :meth:`run`."""
        self.children.append(child)
        return child

    def spawn(self, child: Child) -> asyncio.Task[None]:
        """Run ``child`` from now on, in the running supervisor's TaskGroup.

        The task is returned so that the caller can cancel it (a renewal timer replaced by
        the next session's) or wait for it; a failure is contained and reported as for the
        children given to :meth:`add`, and the task never outlives :meth:`run`.

        Raises:
            RuntimeError: the supervisor is not running (not started, or stopped).
        """
        if self._group is None:
            raise RuntimeError(f"{child.name}: the supervisor is not running")
        return self._group.create_task(self._keep(child), name=child.name)

    async def run(self) -> None:
        """Run every child until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for child in self.children:
                    group.create_task(self._keep(child), name=child.name)
                # Open until cancelled, for the children spawned later.
                await asyncio.get_running_loop().create_future()
        finally:
            self._group = None

    async def _keep(self, child: Child) -> None:
        backoff = FIRST_BACKOFF_S
        while True:
            started = self._clock.monotonic()
            try:
                await child.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                child.failures += 1
                await self._contain(child, exc)
                if not child.restart:
                    return
            if self._clock.monotonic() - started > MAX_BACKOFF_S:
                backoff = FIRST_BACKOFF_S
            await self._clock.sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)

    async def _contain(self, child: Child, exc: BaseException) -> None:
        if child.safe is not None:
            try:
                await child.safe()
            except Exception:
                log.exception("%s: the safe state could not be applied", child.name)
        # An error's text may quote what a device, the orchestrator or a file said.
        log.error("%s failed: %s: %s", child.name, type(exc).__name__, escape(str(exc)))
        try:
            self._report(child, exc)
        except Exception:
            log.exception("%s: the failure could not be reported", child.name)
