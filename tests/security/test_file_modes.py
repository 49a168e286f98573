"""Every file the orchestrator and the agent create has the mode SECURITY.md promises,
whatever the umask they run under: directories 0700, files 0600, and only the public
certificates and the CRL 0644 (foundation/files.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.agent import Agent
from edge.link import Backoff
from foundation.clock import ManualClock
from provisioning.ca import CertificateAuthority
from tests.conftest import offline_agent_config, started_city
from tests.waiting import eventually

pytestmark = pytest.mark.integration

PUBLIC = {"root.pem", "issuing.pem", "crl.pem"}


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def modes(roots: list[Path]) -> dict[str, int]:
    """The permission bits of each root and of everything under it."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            if path.is_symlink():
                continue
            found[str(path)] = stat.S_IMODE(path.stat().st_mode)
    return found


def wrong(found: dict[str, int]) -> dict[str, str]:
    problems = {}
    for name, mode in found.items():
        path = Path(name)
        expected = 0o700 if path.is_dir() else 0o644 if path.name in PUBLIC else 0o600
        if mode != expected:
            problems[name] = f"{mode:o}, expected {expected:o}"
    return problems


async def burn_and_persist_twice(agent: Agent, clock: ManualClock) -> None:
    """Two writes of the state file (the second keeps the first as the backup): the lamps
    (lit at their default level, no schedule) burn a minute at a time until the persist
    loop has written twice, since counters that did not grow are not written again."""
    backup = agent.config.state_dir / "state.json.bak"

    def a_minute_later() -> bool:
        clock.advance(60)
        return backup.exists()

    await eventually(a_minute_later)


async def test_every_file_is_private_under_a_022_umask(tmp_path: Path, lamp_table: object) -> None:
    with umask(0o022):
        ca = CertificateAuthority.init(tmp_path / "ca", now=datetime.now(UTC))
        async with started_city(tmp_path, ca) as city:
            config = city.config
            agent_config = await city.enrolled("dj-001", lamps=lamp_table(2))  # type: ignore[operator]
            clock = ManualClock(datetime.now(UTC))
            agent = Agent(agent_config, clock)
            agent.link.backoff = Backoff(base_s=0.05, cap_s=0.3)
            task = asyncio.create_task(agent.run())
            try:
                await eventually(lambda: agent.link.status.sessions >= 1)
                await eventually(lambda: agent.outbox.pending_count == 0)
                await burn_and_persist_twice(agent, clock)  # the state file and its backup
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    store = sorted(tmp_path.glob("orchestrator.db*"))
    assert store, "no store file"
    roots = [config.state_dir, tmp_path / "ca", agent_config.state_dir, city.admin.directory]
    found = modes(roots) | modes(store)
    # The installer's configuration file is the installer's to protect, not the agent's.
    found.pop(str(agent_config.state_dir / "agent.toml"))
    names = {Path(n).name for n in found}
    # What is checked: the keys, the certificates, the CRL, the store, the agent's state.
    for expected in (
        "server.key",
        "crl.pem",
        "state.json",
        "state.json.bak",
        "outbox.sqlite",
        "gateway.key",
        "operator.key",
        "issuing.key",
    ):
        assert expected in names, expected
    assert wrong(found) == {}


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask-022", "umask-000"])
async def test_an_agent_that_never_enrolled_keeps_its_state_private(
    tmp_path: Path, mask: int
) -> None:
    """``ondijon edge run`` before ``ondijon edge enroll``: the agent makes its state
    directory itself (enrollment, which also would, has not run) and runs the street."""
    equipment = '[[lamps]]\nid = "lamp-1"\nbackend = "simulated"\nnominal_power_w = 60\n'
    equipment += '[[bollards]]\nid = "b-1"\nbackend = "simulated"\n'
    with umask(mask):
        config = offline_agent_config(tmp_path, "dj-new", equipment)
        assert not config.state_dir.exists()
        clock = ManualClock(datetime.now(UTC))
        agent = Agent(config, clock)
        task = asyncio.create_task(agent.run())
        try:
            await eventually(lambda: bool(agent.link.status.last_error))  # not enrolled
            await burn_and_persist_twice(agent, clock)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    found = modes([config.state_dir])
    names = {Path(n).name for n in found}
    for expected in ("state", "state.json", "state.json.bak", "outbox.sqlite"):
        assert expected in names, expected
    assert wrong(found) == {}
