"""The ``ondijon`` admin commands as an operator types them, against a real orchestrator over
mutual TLS and a real agent: what is printed, the exit code, and that a refusal changes
nothing (the store's commands and documents, the lamps, the bollard).

Most commands run ``ondijon.cli.main`` in a thread (the city's loop keeps running); those
whose point is the process itself (a closed pipe, a refused certificate) run
``python -m ondijon.cli`` as a user would.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain import documents
from edge.agent import Agent
from ondijon.cli import main
from ondijon.demo import SIGNAL
from orchestrator.store.database import NewEvent
from protos.ondijon.v1 import link_pb2, schedule_pb2, state_pb2
from provisioning.ca import CertificateAuthority
from provisioning.identity import Identity, Role
from provisioning.profile import Profile
from tests.conftest import City
from tests.edge.test_agent import lighting, put_schedule, running
from tests.security.conftest import snapshot
from tests.waiting import eventually

pytestmark = pytest.mark.integration

EQUIPMENT = {
    "lamps": "\n".join(
        f'[[lamps]]\nid = "lamp-00{i}"\nbackend = "simulated"\nnominal_power_w = 60' for i in (1, 2)
    ),
    "bollards": '[[bollards]]\nid = "bollard-1"\nbackend = "simulated"\n',
    "signals": SIGNAL,
}


@dataclass
class Said:
    code: int
    out: str
    err: str


@dataclass
class Cabinet:
    city: City
    agent: Agent
    gateway_id: str

    async def ondijon(self, *argv: str) -> Said:
        """``ondijon ARGV --profile ADMIN`` in a thread; what it printed and returned."""
        return await ondijon(self.city.admin, *argv)

    def orders(self) -> dict[str, object]:
        """What an operator's command can change in the store: commands and documents."""
        tables = snapshot(self.city.running.app)
        return {name: tables[name] for name in ("commands", "desired_documents")}

    def lamp(self, device_id: str) -> int:
        return next(
            lamp.controller.level
            for lamp in self.agent.lamps
            if lamp.controller.device_id == device_id
        )


async def ondijon(profile: Profile, *argv: str) -> Said:
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    out, err = StringIO(), StringIO()

    def run() -> int:
        with redirect_stdout(out), redirect_stderr(err):
            return main([*argv, "--profile", str(profile.directory)])

    code = await asyncio.to_thread(run)
    return Said(code, out.getvalue(), err.getvalue())


def one_error(said: Said) -> str:
    """The refusal's one line (exit 2, nothing on stdout)."""
    assert said.code == 2, said
    assert said.out == "", said
    [line] = said.err.splitlines()
    assert line.startswith("ondijon: error: "), said
    return line.removeprefix("ondijon: error: ")


@pytest.fixture
async def cabinet(city: City) -> AsyncIterator[Cabinet]:
    config = await city.enrolled("dj-cli", **EQUIPMENT)
    # The agent's clock is the operator's (overrides start now); it runs 10x real time so
    # the simulated bollard and crossing move.
    async with running(config, clock_step_s=0.1, start=datetime.now(UTC)) as agent:
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        await put_schedule(city, "dj-cli", lighting(40))
        await eventually(lambda: all(lamp.controller.level == 40 for lamp in agent.lamps))
        held = Cabinet(city, agent, "dj-cli")

        async def reported() -> bool:
            said = await held.ondijon("devices", "dj-cli", "--json")
            return len(json.loads(said.out)) == 4  # 2 lamps, a bollard, a crossing

        for _ in range(100):
            if await reported():
                break
            await asyncio.sleep(0.1)
        yield held


# -- overrides ---------------------------------------------------------------------------------


async def test_an_override_is_seen_then_cancelled_and_the_schedule_resumes(
    cabinet: Cabinet,
) -> None:
    said = await cabinet.ondijon(
        "command", "override", "dj-cli", "--level", "100", "--minutes", "30", "--device", "lamp-001"
    )
    assert said.code == 0 and said.err == "", said
    [line] = said.out.splitlines()
    override_id = line.split()[1]
    assert line.startswith(f"override {override_id} on dj-cli: lamp-001 at 100 % until ")
    assert line.endswith(": done")
    assert cabinet.lamp("lamp-001") == 100 and cabinet.lamp("lamp-002") == 40

    async def listed() -> list[dict[str, object]]:
        said = await cabinet.ondijon("override", "list", "dj-cli", "--json")
        assert said.code == 0, said
        entries: list[dict[str, object]] = json.loads(said.out)
        return entries

    for _ in range(100):  # the lamp's next state report names the override
        entries = await listed()
        if entries and entries[0].get("following"):
            break
        await asyncio.sleep(0.1)
    [entry] = entries
    assert entry["override"]["id"] == override_id  # type: ignore[index]
    assert entry["following"] == ["lamp-001"] and entry["status"] == "COMMAND_STATUS_DONE"

    table = (await cabinet.ondijon("override", "list", "dj-cli")).out.splitlines()
    assert table[0].split() == [
        "OVERRIDE", "KIND", "DEVICES", "SETS", "PRIORITY", "UNTIL", "STATUS", "FOLLOWED", "BY", "BY"
    ]  # fmt: skip
    assert table[1].startswith(override_id) and "lamps 100 %" in table[1]
    assert table[1].split()[-2:] == ["lamp-001", "admin"]

    said = await cabinet.ondijon("override", "cancel", "dj-cli", override_id)
    assert said.code == 0, said
    assert said.out.strip() == f"override {override_id} on dj-cli: cancelled; the schedule resumes"
    await eventually(lambda: cabinet.lamp("lamp-001") == 40)
    assert await listed() == []

    # Cancelling it again, or an override that never was: refused, nothing sent.
    before = cabinet.orders()
    for unknown in (override_id, "no-such-override"):
        line = one_error(await cabinet.ondijon("override", "cancel", "dj-cli", unknown))
        assert line == (
            f"override_id: no override '{unknown}' in force on dj-cli (see `ondijon override list`)"
        )
    assert cabinet.orders() == before


async def test_refusals_are_one_line_naming_the_field_and_change_nothing(
    cabinet: Cabinet, tmp_path: Path
) -> None:
    before = cabinet.orders()
    cases = {
        ("command", "override", "dj-cli", "--level", "-1"): (
            "--level: must be 0 (off) to 100 %, got -1"
        ),
        ("command", "override", "dj-cli", "--level", "101"): (
            "--level: must be 0 (off) to 100 %, got 101"
        ),
        ("command", "override", "dj-cli", "--level", "50", "--minutes", "0"): (
            "--minutes: must be more than 0 and at most 7 days, got 0"
        ),
        # A lamp the cabinet does not have: refused by the orchestrator from the states
        # the agent reported, not stored and reported done.
        ("command", "override", "dj-cli", "--level", "50", "--device", "lamp-009"): (
            "INVALID_ARGUMENT: command.override.device_ids[0]: dj-cli has no lamp 'lamp-009' "
            "(it has lamp-001, lamp-002)"
        ),
        ("bollard", "lower", "dj-cli", "bollard-9"): (
            "INVALID_ARGUMENT: command.bollard.device_id: dj-cli has no bollard 'bollard-9' "
            "(it has bollard-1)"
        ),
        ("signal", "flash", "dj-cli", "--device", "crossing-9"): (
            "INVALID_ARGUMENT: command.override.device_ids[0]: dj-cli has no signal controller "
            "'crossing-9' (it has carrefour)"
        ),
        ("events", "dj-cli", "--limit", "0"): "--limit: must be 1 to 1000, got 0",
    }
    for argv, expected in cases.items():
        assert one_error(await cabinet.ondijon(*argv)) == expected, argv

    # An empty document is not a schedule: refused at the admin API, the cabinet keeps
    # the one it runs.
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    line = one_error(await cabinet.ondijon("desired", "put", "dj-cli", "schedule", str(empty)))
    assert line.startswith("INVALID_ARGUMENT: programs: a schedule with no program is refused")
    assert cabinet.orders() == before
    assert [lamp.controller.level for lamp in cabinet.agent.lamps] == [40, 40]
    held = cabinet.agent.state.document(link_pb2.DOCUMENT_KIND_SCHEDULE)
    assert held is not None and held.version == 1


async def test_the_gateway_refuses_what_the_orchestrator_could_not_check(city: City) -> None:
    # A cabinet of lamps only: the orchestrator has no crossing of it to check a name
    # against, so the agent does, and the CLI says so in one line.
    config = await city.enrolled("dj-lamps", lamps=EQUIPMENT["lamps"])
    async with running(config, start=datetime.now(UTC)) as agent:
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        line = one_error(
            await ondijon(city.admin, "signal", "flash", "dj-lamps", "--device", "carrefour")
        )
        assert line == "override.device_ids: dj-lamps refused it: no signal 'carrefour'"
        assert agent.overrides == []

    # An offline gateway: the command waits for it, and the CLI says it is queued.
    await city.register("dj-off")
    said = await ondijon(
        city.admin, "command", "override", "dj-off", "--level", "80", "--wait", "0.3"
    )
    assert said.code == 0, said
    assert said.out.split(": ", 2)[-1].startswith("queued: dj-off has not answered yet;")
    [listed] = json.loads((await ondijon(city.admin, "override", "list", "dj-off", "--json")).out)
    assert listed["status"] == "COMMAND_STATUS_PENDING" and "following" not in listed


# -- bollards and crossings -----------------------------------------------------------------


async def test_a_bollard_lowered_and_released_and_a_crossing_flashed(cabinet: Cabinet) -> None:
    bollard = cabinet.agent.bollards[0]
    said = await cabinet.ondijon("bollard", "lower", "dj-cli", "bollard-1")
    assert said.code == 0, said
    assert said.out.strip() == "bollard bollard-1 on dj-cli: held down until `ondijon bollard auto`"
    assert bollard.state().bollard.mode == state_pb2.BOLLARD_MODE_HELD_DOWN
    said = await cabinet.ondijon("bollard", "auto", "dj-cli", "bollard-1")
    assert said.out.strip() == "bollard bollard-1 on dj-cli: back to its schedule and access list"
    assert bollard.state().bollard.mode == state_pb2.BOLLARD_MODE_AUTOMATIC

    said = await cabinet.ondijon("signal", "flash", "dj-cli", "--minutes", "20")
    assert said.code == 0, said
    assert " on dj-cli: every crossing flashing amber until " in said.out
    assert said.out.strip().endswith(": done")
    crossing = cabinet.agent.signals[0]
    await eventually(
        lambda: crossing.state().signal.mode == schedule_pb2.SIGNAL_MODE_FLASHING_AMBER
    )
    listed = (await cabinet.ondijon("override", "list", "dj-cli")).out.splitlines()
    assert len(listed) == 2 and "flashing amber" in listed[1] and " signal " in listed[1]


# -- reading back ---------------------------------------------------------------------------


async def test_listings_have_headers_and_json_and_the_schedule_reads_back(
    cabinet: Cabinet,
) -> None:
    said = await cabinet.ondijon("gateway", "list")
    header, row = said.out.splitlines()
    assert header.split() == [
        "GATEWAY",
        "STATE",
        "COMMUNE",
        "FIRMWARE",
        "LAST",
        "SEEN",
        "DOCUMENTS",
    ]
    assert row.split()[:3] == ["dj-cli", "online", "Dijon"]
    assert " s ago " in row and row.endswith("in sync")
    [gateway] = json.loads((await cabinet.ondijon("gateway", "list", "--json")).out)
    assert gateway["gateway_id"] == "dj-cli" and gateway["connected"] is True
    assert gateway["last_seen"].endswith("Z")

    devices = (await cabinet.ondijon("devices", "dj-cli")).out.splitlines()
    assert devices[0].split() == ["DEVICE", "KIND", "STATE", "DECIDED", "BY", "OBSERVED"]
    assert [line.split()[0] for line in devices[1:]] == [
        "bollard-1", "carrefour", "lamp-001", "lamp-002"
    ]  # fmt: skip
    lamp = next(line for line in devices if line.startswith("lamp-001"))
    assert "lit 40 %" in lamp and "program:all-day" in lamp

    said = await cabinet.ondijon("desired", "get", "dj-cli", "schedule")
    assert said.code == 0 and said.err.startswith("schedule for dj-cli: version 1, issued 20")
    kind = documents.kind_named("schedule")
    assert documents.payload_from_json(kind, said.out, source="") == lighting(40)
    line = one_error(await cabinet.ondijon("desired", "get", "dj-cli", "access-list"))
    assert line == "NOT_FOUND: kind: no document of that kind yet"


async def test_events_newest_first_filtered_and_quiet_on_a_closed_pipe(
    cabinet: Cabinet,
) -> None:
    # A thousand events of known types and priorities, stored as the link stores them.
    store = cabinet.city.running.app.runner.store
    base = 10_000
    now = datetime.now(UTC)
    kinds = [
        ("lamp.failure", link_pb2.EVENT_PRIORITY_ALARM),
        ("lamp.energy", link_pb2.EVENT_PRIORITY_METERING),
        ("bollard.command", link_pb2.EVENT_PRIORITY_EVENT),
    ]
    batch = []
    for n in range(1000):
        kind, priority = kinds[n % 3]
        event = link_pb2.Event(
            sequence=base + n, priority=priority, type=kind, message="x" * 80, device_id="lamp-001"
        )
        event.at.FromDatetime(now + timedelta(milliseconds=n))
        batch.append(
            NewEvent(
                sequence=base + n,
                at=now + timedelta(milliseconds=n),
                priority=priority,
                device_id="lamp-001",
                type=kind,
                payload=event.SerializeToString(),
            )
        )
    with store.engine.begin() as conn:
        store.add_events(conn, "dj-cli", batch, now=now)

    said = await cabinet.ondijon("events", "dj-cli", "--limit", "4")
    header, *rows = said.out.splitlines()
    assert header.split() == ["TIME", "GATEWAY", "SEQ", "PRIORITY", "TYPE", "DEVICE", "MESSAGE"]
    assert [int(r.split()[3]) for r in rows] == [10_999, 10_998, 10_997, 10_996]

    said = await cabinet.ondijon("events", "dj-cli", "--priority", "alarm", "--limit", "3")
    rows = said.out.splitlines()[1:]
    assert [r.split()[4:6] for r in rows] == [["alarm", "lamp.failure"]] * 3
    assert [int(r.split()[3]) for r in rows] == [10_999, 10_996, 10_993]

    said = await cabinet.ondijon(
        "events", "dj-cli", "--type", "bollard.", "--oldest-first", "--json", "--limit", "2"
    )
    listed = json.loads(said.out)
    assert [e["event"]["sequence"] for e in listed] == ["10002", "10005"]
    assert {e["event"]["type"] for e in listed} == {"bollard.command"}

    # `ondijon events | head -n 1`: the header, then quiet (no traceback, no error line).
    shell = await asyncio.to_thread(
        subprocess.run,
        [
            "bash",
            "-c",
            f"{sys.executable} -m ondijon.cli events dj-cli --limit 1000 "
            f"--profile {cabinet.city.admin.directory} | head -n 1; "
            'echo "exit=${PIPESTATUS[0]}" >&2',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"},
    )
    assert shell.stdout.split() == [
        "TIME", "GATEWAY", "SEQ", "PRIORITY", "TYPE", "DEVICE", "MESSAGE"
    ]  # fmt: skip
    assert shell.stderr == "exit=0\n"

    # A copy an agent sent again after its storage went back is listed as one.
    with store.engine.begin() as conn:
        store.mark_copies(conn, "dj-cli", {10_999: 10_996})
    said = await cabinet.ondijon("events", "dj-cli", "--limit", "2")
    rows = said.out.splitlines()[1:]
    assert "(copy of 10996) " in rows[0] and "copy" not in rows[1]
    said = await cabinet.ondijon("events", "dj-cli", "--limit", "1", "--json")
    assert json.loads(said.out)[0]["copy_of"] == "10996"


# -- the operator's certificate ---------------------------------------------------------------


def forged_profile(city: City, name: str, ca: CertificateAuthority, *, now: datetime) -> Profile:
    """A profile for ``city``'s address whose certificate ``ca`` issued at ``now`` for an
    hour, and which trusts ``ca``."""
    key_pem, issued = ca.issue_keypair(
        Identity(Role.OPERATOR, "admin"), now=now, lifetime=timedelta(hours=1)
    )
    directory = city.tmp_path / "profiles" / name
    Profile.write(
        directory,
        address=city.address,
        key_pem=key_pem,
        chain_pem=issued.chain_pem,
        root_pem=ca.root_pem,
    )
    return Profile.load(directory)


async def test_an_expired_or_foreign_certificate_is_one_clear_line(city: City) -> None:
    expired = forged_profile(city, "expired", city.ca, now=datetime.now(UTC) - timedelta(hours=3))
    foreign_ca = CertificateAuthority.init(city.tmp_path / "foreign", now=datetime.now(UTC))
    # Another installation's certificate in this installation's profile.
    stolen = forged_profile(city, "stolen", foreign_ca, now=datetime.now(UTC))
    (stolen.directory / "ca.pem").write_bytes(city.ca.root_pem)
    # Another installation's whole profile pointed at this orchestrator: only the
    # handshake can tell.
    foreign = forged_profile(city, "foreign", foreign_ca, now=datetime.now(UTC))

    def typed(profile: Profile) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ondijon.cli", "gateway", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "ONDIJON_PROFILE": str(profile.directory)},
        )

    answers = await asyncio.gather(
        *(asyncio.to_thread(typed, p) for p in (expired, stolen, foreign))
    )
    expected = [
        "ondijon: error: profile: the operator certificate expired on ",
        "ondijon: error: profile: the operator certificate was not issued by this profile's CA",
        f"ondijon: error: profile: the TLS handshake with {city.address} failed: ",
    ]
    for done, start in zip(answers, expected, strict=True):
        assert done.returncode == 2 and done.stdout == "", done
        [line] = done.stderr.splitlines()
        assert line.startswith(start), done.stderr
        for raw in ("Socket closed", "SSL", "OPENSSL", "Traceback"):
            assert raw not in line
