"""Certificate renewal: the agent renews at two thirds of the lifetime over its mutual-TLS
link, then reconnects on the new certificate; failures are retried; an agent past expiry
says it must enroll again (edge/renewal.py, Enrollment.Renew)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography import x509

from edge import renewal
from edge.config import AgentConfig
from edge.identity import Credentials, EnrollmentError, install_identity, load_credentials
from edge.renewal import Renewal, renewal_due, renewal_time, retry_delay
from edge.supervisor import Child, Supervisor
from foundation.clock import ManualClock
from provisioning.ca import load_certs, make_csr, new_private_key
from provisioning.identity import Identity, Role
from tests.conftest import City
from tests.edge.test_agent import running
from tests.waiting import eventually

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_renewal_is_due_at_two_thirds_of_the_lifetime() -> None:
    end = T0 + timedelta(days=6)
    assert renewal_time(T0, end) == T0 + timedelta(days=4)
    assert not renewal_due(T0, end, T0 + timedelta(days=4) - timedelta(seconds=1))
    assert renewal_due(T0, end, T0 + timedelta(days=4))


def test_failed_renewals_back_off_to_an_hour() -> None:
    delays = [retry_delay(i) for i in range(10)]
    assert delays[:3] == [60.0, 120.0, 240.0]
    assert delays == sorted(delays) and delays[-1] == 3600.0
    assert retry_delay(10_000) == 3600.0


def short_lived(city: City, config: AgentConfig, minutes: float) -> str:
    """Give the gateway a certificate of ``minutes`` (as if issued long ago)."""
    key = new_private_key()
    now = datetime.now(UTC)
    issued = city.ca.issue_for_csr(
        make_csr(key, config.gateway_id),
        Identity(Role.GATEWAY, config.gateway_id),
        now=now,
        lifetime=timedelta(minutes=minutes),
    )
    store = city.running.app.runner.store
    with store.engine.begin() as conn:
        store.record_certificate(
            conn,
            serial_hex=issued.serial_hex,
            role="gateway",
            name=config.gateway_id,
            not_before=issued.certificate.not_valid_before_utc,
            not_after=issued.not_after,
        )
    install_identity(config, key, issued.chain_pem)
    return issued.serial_hex


@pytest.mark.integration
async def test_the_agent_renews_over_its_link_and_reconnects_on_the_new_certificate(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = await city.enrolled("dj-001")
    old_serial = short_lived(city, config, minutes=60)
    # Forty-five minutes into a one-hour certificate: past two thirds.
    wall = ManualClock(datetime.now(UTC) + timedelta(minutes=45))
    monkeypatch.setattr(renewal, "wall_clock", wall)
    hub = city.running.app.hub
    async with running(config) as agent:
        await eventually(lambda: agent.link.status.sessions >= 2)
        await eventually(
            lambda: (s := hub.session("dj-001")) is not None and s.cert_serial != old_serial
        )
        session = hub.session("dj-001")
        assert session is not None
        new = load_certs(load_credentials(config).chain_pem)[0]
        assert session.cert_serial == format(new.serial_number, "x")
        # The new certificate has the configured lifetime, so no renewal loop follows.
        assert new.not_valid_after_utc - new.not_valid_before_utc > timedelta(days=6)
        sessions = agent.link.status.sessions
        await asyncio.sleep(0.3)
        assert agent.link.status.sessions == sessions
    renewals = [
        r
        for r in (
            await city.running.app.runner.read(
                lambda c: city.running.app.runner.store.audit_entries(c)
            )
        )
        if r["action"] == "gateway.renew"
    ]
    assert len(renewals) == 1 and old_serial in renewals[0]["detail"]


def credentials(not_before: datetime, not_after: datetime) -> Credentials:
    return Credentials(b"", b"", b"", not_before, not_after)


class Leaf:
    """What the agent reads of a renewed certificate."""

    not_valid_after_utc = T0 + timedelta(days=12)


class Owner:
    """The agent's supervisor running on its own, and what it reported."""

    def __init__(self) -> None:
        self.clock = ManualClock(T0)  # the supervisor's backoff, not the renewal's wall
        self.failures: list[tuple[str, BaseException]] = []
        self.supervisor = Supervisor(self.clock, lambda c, e: self.failures.append((c.name, e)))


@asynccontextmanager
async def supervised() -> AsyncIterator[Owner]:
    owner = Owner()
    task = asyncio.create_task(owner.supervisor.run())
    await asyncio.sleep(0)
    try:
        yield owner
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def keeper_of(owner: Owner, renew: object) -> Renewal:
    class Config:
        gateway_id = "dj-001"

    return Renewal(Config(), spawn=owner.supervisor.spawn, renew=renew)  # type: ignore[arg-type]


async def settle(check: Callable[[], bool]) -> None:
    """Let the event loop run (no time passes) until ``check`` holds."""
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("did not settle")


# What an orchestrator's answer, quoted in an error, may hold: a line and an escape sequence.
FORGED = "\n2026-03-01 00:00:00 INFO forged\x1b]0;owned\x07"


def one_line_each(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Our log lines, each checked to be one line with no terminal escape.

    Only the project's loggers: grpc's asyncio poller may log a multi-line traceback of its own
    ("Event loop is closed") when a channel of an earlier test is collected late; that line is not
    text from outside passing through our code.
    """
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("ondijon")]
    for message in messages:
        assert "\n" not in message and "\x1b" not in message and "\x07" not in message
    return messages


async def test_a_failed_renewal_is_retried_until_it_succeeds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wall = ManualClock(T0 + timedelta(days=5))
    monkeypatch.setattr(renewal, "wall_clock", wall)
    calls: list[datetime] = []
    leaf = Leaf()

    async def renew(config: AgentConfig, channel: grpc.aio.Channel) -> x509.Certificate:
        calls.append(wall.now())
        if len(calls) < 3:
            raise EnrollmentError.answered("UNAVAILABLE", f"orchestrator down{FORGED}")
        return leaf  # type: ignore[return-value]

    chan = grpc.aio.insecure_channel("localhost:1")
    async with supervised() as owner:
        keeper = keeper_of(owner, renew)
        keeper.on_connected(chan, credentials(T0, T0 + timedelta(days=7)))
        await settle(lambda: len(calls) == 1)
        wall.advance(59)
        await settle(lambda: True)
        assert len(calls) == 1
        wall.advance(1)
        await settle(lambda: len(calls) == 2)
        wall.advance(120)
        await settle(lambda: keeper.renewed == 1)
        assert calls == [T0 + timedelta(days=5, seconds=s) for s in (0, 60, 180)]
        assert owner.failures == []  # foreseen failures are the timer's own business
    warned = [m for m in one_line_each(caplog) if "renewal failed" in m]
    assert len(warned) == 2 and "down\\n2026-03-01 00:00:00 INFO forged\\x1b]0;owned" in warned[0]
    await chan.close()


async def test_an_unforeseen_failure_of_the_timer_is_reported_and_it_runs_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(renewal, "wall_clock", ManualClock(T0 + timedelta(days=5)))
    calls = 0

    async def renew(config: AgentConfig, channel: grpc.aio.Channel) -> x509.Certificate:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError(f"a bug nobody foresaw{FORGED}")
        return Leaf()  # type: ignore[return-value]

    chan = grpc.aio.insecure_channel("localhost:1")
    async with supervised() as owner:
        keeper = keeper_of(owner, renew)
        keeper.on_connected(chan, credentials(T0, T0 + timedelta(days=7)))
        await settle(lambda: len(owner.failures) == 1)
        ((name, error),) = owner.failures
        assert name == "renewal" and "a bug nobody foresaw" in str(error)
        assert keeper.renewed == 0
        (logged,) = [m for m in one_line_each(caplog) if m.startswith("renewal failed")]
        assert logged.endswith("foresaw\\n2026-03-01 00:00:00 INFO forged\\x1b]0;owned\\x07")
        owner.clock.advance(1)  # the supervisor's first backoff
        await settle(lambda: keeper.renewed == 1)
        assert calls == 2
    await chan.close()


async def test_the_timer_ends_with_its_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(renewal, "wall_clock", ManualClock(T0))

    async def renew(config: AgentConfig, channel: grpc.aio.Channel) -> x509.Certificate:
        raise AssertionError("not due")

    chan = grpc.aio.insecure_channel("localhost:1")
    async with supervised() as owner:
        keeper = keeper_of(owner, renew)
        keeper.on_connected(chan, credentials(T0, T0 + timedelta(days=7)))
        await asyncio.sleep(0)
        timer = keeper._task
        assert timer is not None and not timer.done()
    assert timer.done()
    await chan.close()


async def test_a_timer_needs_an_owner_that_runs() -> None:
    with pytest.raises(RuntimeError, match="renewal: the supervisor is not running"):
        Owner().supervisor.spawn(Child("renewal", asyncio.sleep))  # type: ignore[arg-type]


async def test_past_expiry_the_agent_says_to_enroll_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wall = ManualClock(T0 + timedelta(days=8))
    monkeypatch.setattr(renewal, "wall_clock", wall)

    async def renew(config: AgentConfig, channel: grpc.aio.Channel) -> x509.Certificate:
        raise EnrollmentError.answered("UNAVAILABLE", "handshake failed")

    chan = grpc.aio.insecure_channel("localhost:1")
    async with supervised() as owner:
        keeper = keeper_of(owner, renew)
        with caplog.at_level(logging.ERROR):
            keeper.on_connected(chan, credentials(T0, T0 + timedelta(days=7)))
            await settle(lambda: keeper._task is not None and keeper._task.done())
        assert "enroll again with a fresh token" in caplog.text
        assert owner.failures == []
    await chan.close()


async def test_a_closed_link_ends_the_renewal_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(renewal, "wall_clock", ManualClock(T0))

    async def renew(config: AgentConfig, channel: grpc.aio.Channel) -> x509.Certificate:
        raise AssertionError("not due")

    chan = grpc.aio.insecure_channel("localhost:1")
    async with supervised() as owner:
        keeper = keeper_of(owner, renew)
        keeper.on_connected(chan, credentials(T0, T0 + timedelta(days=7)))
        await asyncio.sleep(0)
        await chan.close()
        assert keeper._task is not None
        await asyncio.wait_for(keeper._task, 5)
        assert owner.failures == []
