"""The kill storm: an agent killed, cut off, stalled and lied to by its disk, with exact
accounting at the end.

The real agent runs in its own process (:mod:`tests.nothing_lost.agent_driver`: 100 lamps
metered on a clock running an hour a second, a lamp whose failure flaps, a 1 MiB outbox
so that long offline stretches drop metering) behind a :class:`LinkProxy`. Round after
round the storm does one of:

- SIGKILL the agent and start it again;
- restart the orchestrator;
- cut the link in the middle of a message, stall it, or flip a byte in it;
- take the link away for a while (the outbox fills and drops its oldest metering);
- damage the agent's files between two runs, with a backlog in them (the link taken away
  first): cut the outbox's write-ahead log inside a frame (a disk that drops acknowledged
  writes), garble a page of the outbox, or put back an older image of the whole state
  directory.

At the end the agent drains with no more faults, and every sequence is accounted for:

- every event stored by the orchestrator is one the agent promised (reported after its
  durable append) under that sequence, or an event of the outbox's own (a gap, a
  recovery, a renumbered copy of a promised one), or one made durable by an append that a
  kill interrupted before it could report it (at most one append per kill);
- every promise is stored under its sequence, or listed in an ``outbox.gap`` event, or
  renumbered (after a conflict, or at the welcome after the disk went back: the driver
  reports where each copy went, and a copy may in turn be listed lost), or, dropped for
  room before that welcome, listed under a fresh number (the gap event keeps the old one
  in ``numbered_before``); only a promise the disk itself destroyed (given, or copied,
  after the point a cut log or an older image went back to, and never delivered) may be
  missing;
- no sequence is both stored and listed as lost, and every sequence missing below the
  highest stored one is listed. One exception, counted apart: an event listed lost (a
  damaged file could no longer give it back, or it was dropped for room) that the disk
  gave back when it went back to an older state (an image put back, a log whose last
  commits were cut, the drop among them) and that was delivered after all (the promise is
  then stored under its sequence, with the content promised).
- a promised event is stored once: a copy sent again (an image put back after a copy of
  one of its events was delivered) is kept under its own sequence and marked a copy of
  the stored one (``StoredEvent.copy_of``, the same content).

The short storm runs in ``make test``; the long one (220 rounds) with::

    ONDIJON_LONG=1 .venv/bin/pytest -m slow tests/nothing_lost/test_kill_storm.py -s
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.config import AgentConfig
from edge.storage.outbox import Outbox
from foundation.clock import ManualClock
from provisioning.ca import CertificateAuthority
from tests.conftest import City, started_city
from tests.nothing_lost.agent_driver import wire_fingerprint
from tests.nothing_lost.damage import (
    cut_wal,
    garble_leaf,
    leaf_pages,
    page_size,
    restore_image,
    take_image,
)
from tests.nothing_lost.harness import (
    AgentProcess,
    LinkProxy,
    gateway,
    listed_lost,
    stored_events,
)
from tests.waiting import eventually

pytestmark = [pytest.mark.integration]

LONG = os.environ.get("ONDIJON_LONG", "") not in ("", "0")
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
SPEED = 7200.0  # two hours a second: 800 readings a second, a 1 MiB outbox full in ~5 s
LINK_FAULTS = ("kill", "restart", "cut", "stall", "flip", "offline")
DISK_FAULTS = ("wal", "garble", "image")
# The most events one append holds (a monitoring pass over 100 lamps).
APPEND_AT_MOST = 101
# The outbox's own events, stored without a promise from the driver.
OWN = {"outbox.gap", "outbox.rewound", "outbox.conflict", "storage.recovered"}


@dataclass
class Ledger:
    """What the agent promised, and what its disk may have destroyed since."""

    promised: dict[int, set[str]] = field(default_factory=dict)
    # Every promise and renumbered copy in the order the runs made them (numbers can be
    # given again).
    order: list[tuple[int, str]] = field(default_factory=list)
    # What happened, round by round (written beside the storm for a failure's reader).
    journal: list[str] = field(default_factory=list)
    runs: int = 0
    promises_by_run: list[tuple[int, int, str]] = field(default_factory=list)
    # The event each number was last given to, and where renumberings moved each
    # (number, fingerprint): a copy keeps its event, and may then be dropped or lost.
    at_number: dict[int, str] = field(default_factory=dict)
    copies: dict[tuple[int, str], int] = field(default_factory=dict)
    copied: dict[int, set[str]] = field(default_factory=dict)
    # How many promises had been made when the image was taken.
    image_at: int = 0
    at_risk: set[tuple[int, str]] = field(default_factory=set)
    # What the outbox held when the image was taken (sequence, fingerprint; renumbered
    # copies too): put back, it gives them back.
    imaged: set[tuple[int, str]] = field(default_factory=set)
    # What a disk gave back when it went back (the exception counted apart).
    restorable: set[tuple[int, str]] = field(default_factory=set)
    faults: Counter[str] = field(default_factory=Counter)

    def take(self, run: AgentProcess) -> None:
        for kind, sequence, what in run.reported:
            if kind == "R":
                self.promised.setdefault(sequence, set()).add(what)
                self.order.append((sequence, what))
                self.at_number[sequence] = what
            elif (fp := self.at_number.get(int(what))) is not None:
                self.copies[(int(what), fp)] = sequence
                self.copied.setdefault(sequence, set()).add(fp)
                self.order.append((sequence, fp))
                self.at_number[sequence] = fp
        if run.promised:
            self.journal.append(
                f"run {self.runs} promised {len(run.promised)}:"
                f" {min(run.promised)}..{max(run.promised)}"
            )
            self.promises_by_run += [(self.runs, s, fp) for s, fp in run.promised.items()]
        self.runs += 1

    def disk_went_back_to(self, last: int) -> None:
        """The outbox now ends at ``last``: what was promised above it may be gone."""
        for given in (self.promised, self.copied):
            for sequence, fps in given.items():
                if sequence > last:
                    self.at_risk |= {(sequence, fp) for fp in fps}


def outbox_last(state_dir: Path, scratch: Path) -> int:
    """The last sequence the next agent will find (opened on a copy, as it would)."""
    return on_disk(state_dir, scratch)[0]


def on_disk(state_dir: Path, scratch: Path) -> tuple[int, set[tuple[int, str]]]:
    """What the next agent will find (opened on a copy, as it would): the last sequence,
    and every event the outbox holds, as (sequence, fingerprint), renumbered copies too."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    for found in state_dir.glob("outbox.sqlite*"):  # a set-aside file and its marker too
        shutil.copy2(found, scratch / found.name)
    with Outbox(scratch / "outbox.sqlite", clock=ManualClock(START)) as outbox:
        held = outbox.next_batch(10**9, 10**12)
        return outbox.last_sequence, {(e.sequence, wire_fingerprint(e)) for e in held}


def settle_files(state_dir: Path, ledger: Ledger, keep: Path) -> None:
    """Open and close the outbox as an agent start would (its log folded in). If that
    start finds the file damaged (an earlier fault) and recovers it, the journal says
    what the recovery found and the file it set aside is kept in ``keep``."""
    with Outbox(state_dir / "outbox.sqlite", clock=ManualClock(START)) as outbox:
        report = outbox.recovered
    if report is not None:
        ledger.journal.append(f"recovered before the garble: {report.reason}")
        keep.mkdir(parents=True, exist_ok=True)
        for found in state_dir.glob("outbox.sqlite.corrupt*"):
            shutil.copy2(found, keep / found.name)


async def damage(
    action: str,
    config: AgentConfig,
    ledger: Ledger,
    rng: random.Random,
    image: Path,
    scratch: Path,
) -> None:
    """One lie of the disk, between two runs of the agent."""
    state = config.state_dir
    if action == "wal":
        wal = state / "outbox.sqlite-wal"
        if wal.exists() and wal.stat().st_size > 32:
            cut_wal(wal, page_size(state / "outbox.sqlite"), rng.randint(1, 3))
        last, held = on_disk(state, scratch)
        ledger.disk_went_back_to(last)
        ledger.journal.append(f"log cut: the outbox ends at {last}")
        # The log cut undid the last commits, those that dropped rows for room with them:
        # what the outbox holds now may have been listed lost since it was written.
        ledger.restorable |= held
    elif action == "garble":
        settle_files(state, ledger, image.with_name(f"set-aside-{len(ledger.journal)}"))
        leaves = leaf_pages(state / "outbox.sqlite", "metering_lane")
        if len(leaves) > 2:
            garble_leaf(state / "outbox.sqlite", "metering_lane", rng.randrange(len(leaves)))
    elif action == "image":
        if not image.exists():
            take_image(state, image)  # kept for a later round
            last, ledger.imaged = on_disk(state, scratch)
            ledger.image_at = len(ledger.order)
            ledger.journal.append(f"image taken at {last}")
            return
        restore_image(image, state)
        shutil.rmtree(image)
        ledger.restorable |= ledger.imaged
        # Whatever was promised since the image is gone from the disk, whatever its number
        # (a run that began over after damage numbers from low again).
        ledger.at_risk |= set(ledger.order[ledger.image_at :])
        ledger.journal.append(f"image put back: the outbox ends at {outbox_last(state, scratch)}")


async def storm(city: City, config: AgentConfig, rounds: int, tmp_path: Path) -> Ledger:
    assert config.source is not None
    rng = random.Random(20261207 + rounds)
    ledger = Ledger()
    clock_at = START
    image, scratch = tmp_path / "image", tmp_path / "scratch"
    # Every kind of fault early, then at random (disk faults a quarter of the time).
    plan = [*LINK_FAULTS, *DISK_FAULTS, "image"]
    while len(plan) < rounds:
        kinds = DISK_FAULTS if rng.random() < 0.25 else LINK_FAULTS
        plan.append(rng.choice(kinds))
    async with LinkProxy(lambda: city.running.port) as proxy:

        def agent(start: datetime) -> AgentProcess:
            assert config.source is not None
            return AgentProcess(
                config.source, start=start, speed=SPEED, flap="lamp-007", address=proxy.address
            )

        run = agent(clock_at)
        await run.start()
        for number, action in enumerate(plan[:rounds]):
            await asyncio.sleep(rng.uniform(0.1, 0.6))
            ledger.faults[action] += 1
            ledger.journal.append(f"round {number}: {action}")
            if action in DISK_FAULTS:
                proxy.online = False  # a backlog for the disk to damage
                proxy.cut_now()
                await asyncio.sleep(rng.uniform(1.0, 2.5))
            if action in ("kill", *DISK_FAULTS):
                await run.kill()
                ledger.take(run)
                clock_at = run.simulated_now()
                if action != "kill":
                    await damage(action, config, ledger, rng, image, scratch)
                run = agent(clock_at)
                await run.start()
                proxy.online = True
            elif action == "restart":
                await city.restart()
            elif action == "cut":
                proxy.cut_after(rng.randint(500, 60_000))
            elif action == "flip":
                proxy.flip_after(rng.randint(200, 30_000))
            elif action == "stall":
                proxy.stall()  # a congested line: bytes held, nobody told
                await asyncio.sleep(rng.uniform(0.3, 1.5))
                proxy.resume()
            elif action == "offline":
                proxy.online = False
                proxy.cut_now()
                await asyncio.sleep(rng.uniform(3.0, 7.0))  # days of a cabinet: it fills
                proxy.online = True
        # No more faults: the same process drains what is left.
        await run.kill()
        ledger.take(run)
        clock_at = run.simulated_now()
        final = AgentProcess(config.source, start=clock_at, speed=0.001, address=proxy.address)
        await final.start()
        await eventually(lambda: final.pending == 0 and final.last_sequence > 0, timeout=120)
        await final.stop()
        ledger.take(final)
    (tmp_path / "storm-journal.txt").write_text("\n".join(ledger.journal) + "\n")
    (tmp_path / "storm-promises.tsv").write_text(
        "".join(f"{run}\t{s}\t{fp}\n" for run, s, fp in ledger.promises_by_run)
    )
    return ledger


async def account(city: City, gateway_id: str, ledger: Ledger) -> dict[str, int]:
    """The exact accounting of the module docstring; the figures."""
    events = await stored_events(city, gateway_id)
    stored = {e.event.sequence: e.event for e in events}
    fingerprints = {s: wire_fingerprint(e) for s, e in stored.items()}
    stored_fps = Counter(fingerprints.values())
    # Sent again by an image put back after a copy was delivered: kept, marked as a copy.
    marked = {e.event.sequence: e.copy_of for e in events if e.copy_of}
    for sequence, original in marked.items():
        assert fingerprints[sequence] == fingerprints.get(original), (
            f"#{sequence} marked a copy of #{original}, which holds another event"
        )
    listed = listed_lost(e.event for e in events)
    # Numbered over the lost life's numbers, dropped for room before the welcome: listed
    # under fresh numbers (in ``listed``), the provisional ones kept for the record.
    moved = listed_lost((e.event for e in events), "numbered_before")
    promised_fps = {fp for fps in ledger.promised.values() for fp in fps}

    both = set(stored) & listed
    brought_back = {s for s in both if (s, fingerprints[s]) in ledger.restorable}
    both = sorted(both - brought_back)
    assert not both, f"stored and listed as lost: {both[:20]}; " + "; ".join(
        f"#{e.event.sequence} {e.event.message} ({dict(e.event.attributes).get('reason', '')})"
        for e in events
        if e.event.type == "outbox.gap" and listed_lost([e.event]) & set(both)
    )
    g = await gateway(city, gateway_id)
    for gap in g.missing:
        assert set(range(gap.first, gap.last + 1)) <= listed, f"unexplained gap {gap}"
    unreported = 0
    for sequence, event in stored.items():
        fp = fingerprints[sequence]
        if fp in ledger.promised.get(sequence, set()) or event.type in OWN or fp in promised_fps:
            continue
        unreported += 1  # durable, and the kill came before the driver could say so
    kills = sum(ledger.faults[k] for k in ("kill", *DISK_FAULTS)) + 1
    assert unreported <= kills * (APPEND_AT_MOST + 1), f"{unreported} events nobody promised"

    def copies_of(sequence: int, fp: str) -> list[int]:
        """Where renumberings moved this event, one copy after the other."""
        found: list[int] = []
        while (sequence, fp) in ledger.copies and len(found) < 100:
            sequence = ledger.copies[(sequence, fp)]
            found.append(sequence)
        return found

    unaccounted, destroyed, renumbered, listed_again, copy_lost = [], 0, 0, 0, 0
    for sequence, fps in ledger.promised.items():
        for fp in fps:
            if fingerprints.get(sequence) == fp or sequence in listed:
                continue
            copies = copies_of(sequence, fp)
            if sequence in moved and not stored_fps[fp]:
                listed_again += 1  # dropped, listed under a fresh number
            elif stored_fps[fp]:
                renumbered += 1  # recorded again under another sequence
            elif any(c in listed or c in moved for c in copies):
                copy_lost += 1  # renumbered, then the copy dropped or lost, and listed
            elif (sequence, fp) in ledger.at_risk or any((c, fp) in ledger.at_risk for c in copies):
                destroyed += 1  # the disk itself went back past it (or past its copy)
            else:
                unaccounted.append(sequence)
    assert not unaccounted, f"promised and neither stored nor listed: {unaccounted[:20]}"
    # A promised event is stored once, not twice under two sequences.
    once = Counter(fp for s, fp in fingerprints.items() if s not in marked)
    twice = [fp for fp, n in once.items() if n > 1 and fp in promised_fps]
    assert not twice, f"{len(twice)} promised events stored twice"
    return {
        "promised": sum(len(fps) for fps in ledger.promised.values()),
        "stored": len(stored),
        "listed lost": len(listed),
        "renumbered": renumbered,
        "stored again as copies of a delivered event": len(marked),
        "dropped before a welcome, listed under a new number": listed_again,
        "renumbered, then the copy listed lost": copy_lost,
        "listed lost, then given back by a disk that went back": len(brought_back),
        "destroyed by the disk": destroyed,
        "own events": sum(1 for e in stored.values() if e.type in OWN),
        "durable but unreported at a kill": unreported,
    }


ROUNDS = [
    12,
    pytest.param(
        220,
        marks=[
            pytest.mark.slow,
            pytest.mark.skipif(not LONG, reason="the long version: set ONDIJON_LONG=1"),
            pytest.mark.timeout(3600),
        ],
    ),
]


@pytest.mark.parametrize("rounds", ROUNDS)
async def test_a_kill_storm_loses_nothing_it_did_not_list(
    tmp_path: Path, ca: CertificateAuthority, lamp_table: object, rounds: int
) -> None:
    # The agent's clock runs two hours a second ahead of the orchestrator's: a long storm
    # takes it weeks ahead, which the orchestrator must accept here.
    async with started_city(tmp_path, ca, max_clock_ahead_s=5 * 365 * 86400.0) as city:
        config = await city.enrolled(
            "nl-storm",
            lamps=lamp_table(100),  # type: ignore[operator]
            outbox="max_bytes = 1048576",
        )
        ledger = await storm(city, config, rounds, tmp_path)
        figures = await account(city, config.gateway_id, ledger)
    faults = ", ".join(f"{kind} {n}" for kind, n in sorted(ledger.faults.items()))
    print(
        f"\nkill storm, {rounds} rounds: faults injected {sum(ledger.faults.values())} ({faults})"
    )
    print("  events accounted: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    assert figures["promised"] > 1000
