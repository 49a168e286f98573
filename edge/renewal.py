"""Certificate renewal on the agent: when to renew, and renewing over the mutual-TLS link.

A gateway's certificate lives a few days. The agent renews it at two thirds of its
lifetime over the link it already has (``Enrollment.Renew`` on the mutual-TLS port, EST's
re-enroll), with a new key made on the gateway (:func:`edge.identity.renew`). Once the
orchestrator has answered, it closes the stream opened with the older certificate and the
link reconnects on the new one; the older certificate stays valid until it expires, so a
renewal lost on the way never locks the cabinet out.

Time here is wall time, not the agent's clock: TLS peers judge a certificate against the
real time, while the agent's clock may be simulated (demo, bench).

A renewal that fails is retried with backoff while the link is up; the last third of the
lifetime (over two days with the default seven-day certificates) is the margin for an
orchestrator outage. An agent offline past its certificate's expiry cannot renew (TLS
refuses an expired certificate): it comes back by enrolling again with a fresh token
(``ondijon gateway token`` in the control room, ``ondijon edge enroll`` at the cabinet).

The timer of each link session is a child of the agent's supervisor (``spawn``): a failure
nobody foresaw is logged, alarmed and the timer restarted on the same link after a backoff;
the next session's timer replaces it; none outlives the agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import grpc

from edge.config import AgentConfig
from edge.identity import Credentials, EnrollmentError, IdentityFilesError, Renewed, renew
from edge.supervisor import Child, Spawn
from foundation.clock import Clock, SystemClock
from foundation.escaping import escape

log = logging.getLogger("ondijon.edge.renewal")

RENEW_AT = 2 / 3
RETRY_FIRST_S = 60.0
RETRY_MAX_S = 3600.0

Renew = Callable[[AgentConfig, grpc.aio.Channel], Awaitable[Renewed]]

# The clock renewals are timed by; tests replace it to move through a lifetime.
wall_clock: Clock = SystemClock()


def renewal_time(not_before: datetime, not_after: datetime) -> datetime:
    """When a certificate valid from ``not_before`` to ``not_after`` should be renewed."""
    return not_before + (not_after - not_before) * RENEW_AT


def renewal_due(not_before: datetime, not_after: datetime, now: datetime) -> bool:
    return now >= renewal_time(not_before, not_after)


def retry_delay(attempt: int) -> float:
    """Seconds before retry number ``attempt`` (0-based) of a failed renewal."""
    return min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** min(attempt, 16))


class Renewal:
    """Keeps one agent's certificate renewed while its link is up.

    Args:
        config: the agent's configuration.
        spawn: the owner of the renewal timers (the agent's supervisor).
        renew: how a renewal is made (the real one by default).
    """

    def __init__(self, config: AgentConfig, *, spawn: Spawn, renew: Renew = renew) -> None:
        self.config = config
        self._spawn = spawn
        self._renew = renew
        self._task: asyncio.Task[None] | None = None
        self.renewed = 0

    def on_connected(self, channel: grpc.aio.Channel, credentials: Credentials) -> None:
        """A stream is up on ``channel`` with ``credentials``: renew on it when due."""
        self.close()
        self._task = self._spawn(Child("renewal", lambda: self._run(channel, credentials)))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self, channel: grpc.aio.Channel, credentials: Credentials) -> None:
        clock = wall_clock
        at = renewal_time(credentials.not_before, credentials.not_after)
        if not await _unless_closed(channel, clock.sleep_until(at)):
            return
        attempt = 0
        while True:
            try:
                leaf = await self._renew(self.config, channel)
            except grpc.aio.UsageError:
                return  # the channel closed with its stream; the next one takes over
            except (EnrollmentError, IdentityFilesError, OSError, ValueError) as exc:
                if clock.now() >= credentials.not_after:
                    log.error(
                        "certificate expired at %s without renewal (%s): enroll again with a "
                        "fresh token (`ondijon edge enroll`)",
                        credentials.not_after,
                        escape(str(exc)),  # the orchestrator's words
                    )
                    return
                delay = retry_delay(attempt)
                log.warning(
                    "certificate renewal failed (%s); retrying in %.0f s", escape(str(exc)), delay
                )
                attempt += 1
                retry_at = clock.now() + timedelta(seconds=delay)
                if not await _unless_closed(channel, clock.sleep_until(retry_at)):
                    return
                continue
            self.renewed += 1
            log.info(
                "renewed (was valid until %s, now until %s); reconnecting on the new one",
                credentials.not_after,
                leaf.not_valid_after_utc,
            )
            return


async def _shutdown(channel: grpc.aio.Channel) -> None:
    state = channel.get_state(try_to_connect=False)
    while state is not grpc.ChannelConnectivity.SHUTDOWN:
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=False)


async def _unless_closed(channel: grpc.aio.Channel, wait: Awaitable[None]) -> bool:
    """Wait for ``wait``; False if ``channel`` closed first (its stream is gone)."""
    waiting = asyncio.ensure_future(wait)
    closing = asyncio.ensure_future(_shutdown(channel))
    try:
        await asyncio.wait({waiting, closing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        closing.cancel()
    return waiting.done() and not waiting.cancelled()
