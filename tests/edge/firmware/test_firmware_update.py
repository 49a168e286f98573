"""From offer to committed version, and a power cut at every step still boots a good one."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain.firmware.errors import DownloadError
from edge.firmware.boot import confirm_trial, resolve_boot_slot
from edge.firmware.durable import CrashPoint, no_crash
from edge.firmware.simulator import ReleaseSimulator
from edge.firmware.slots import SlotStore
from edge.firmware.update import TrustPolicy, apply_offer, pending_report
from foundation.clock import ManualClock
from protos.ondijon.v1 import firmware_pb2

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
BASE = "1.0.0"
Stage = firmware_pb2.FirmwareStage


class PowerCut(BaseException):
    """The plug is pulled: nothing after this point runs."""


def _offer(sim: ReleaseSimulator, version: str) -> firmware_pb2.FirmwareOffer:
    release = sim.releases[version]
    return firmware_pb2.FirmwareOffer(
        campaign_id="camp-9",
        version=version,
        manifest=firmware_pb2.ReleaseManifest(
            manifest=release.manifest,
            signatures=[
                firmware_pb2.ReleaseSignature(key_id=s.key_id, signature=s.signature)
                for s in release.signatures
            ],
        ),
    )


def _running(store: SlotStore) -> str:
    state = store.read()
    return state.version_of(state.active, BASE)


async def _take(
    sim: ReleaseSimulator,
    store: SlotStore,
    version: str,
    crash: CrashPoint = no_crash,
    reports: list[firmware_pb2.FirmwareProgress] | None = None,
) -> int:
    return await apply_offer(
        _offer(sim, version),
        fetcher=sim.fetcher(version, chunk_size=512),
        store=store,
        trust=TrustPolicy(sim.pinned),
        running_version=_running(store),
        clock=ManualClock(NOW),
        report=(reports if reports is not None else []).append,
        request_restart=lambda: None,
        crash=crash,
    )


async def _boot_and_check(store: SlotStore, healthy: bool, crash: CrashPoint = no_crash) -> str:
    """One start of the agent: the launcher's choice, then the trial's health checks."""
    slot = resolve_boot_slot(store.state_dir, now=NOW, crash=crash)
    state = store.read()
    version = state.version_of(state.active, BASE)
    if slot is not None:
        # What boots is a complete install of the version the pointer claims.
        assert store.installed_version(slot.name) == version
        assert (slot / "ondijon_probe.py").read_text() == f'VERSION = "{version}"\n'

    async def check() -> bool:
        return healthy

    clock = ManualClock(NOW)
    task = asyncio.ensure_future(
        confirm_trial(
            SlotStore(store.state_dir, crash=crash),
            {"agent": check},
            clock,
            deadline=timedelta(seconds=30),
            interval=timedelta(seconds=30),
            request_restart=lambda: None,
        )
    )
    while not task.done():
        await asyncio.sleep(0)
        clock.advance(30)
    task.result()
    return version


async def test_an_offer_goes_from_download_to_commit(tmp_path: Path) -> None:
    sim = ReleaseSimulator()
    sim.publish("1.1.0", created=NOW)
    store = SlotStore(tmp_path / "fw")
    reports: list[firmware_pb2.FirmwareProgress] = []
    assert await _take(sim, store, "1.1.0", reports=reports) == Stage.FIRMWARE_STAGE_REBOOTING
    stages = [r.stage for r in reports]
    assert stages[0] == Stage.FIRMWARE_STAGE_DOWNLOADING
    assert stages[-3:] == [
        Stage.FIRMWARE_STAGE_VERIFIED,
        Stage.FIRMWARE_STAGE_INSTALLED,
        Stage.FIRMWARE_STAGE_REBOOTING,
    ]
    assert all(r.campaign_id == "camp-9" and r.running_version == BASE for r in reports)
    assert await _boot_and_check(store, healthy=True) == "1.1.0"
    report = pending_report(store, "1.1.0")
    assert report is not None
    assert (report.stage, report.version, report.campaign_id) == (
        Stage.FIRMWARE_STAGE_COMMITTED,
        "1.1.0",
        "camp-9",
    )
    store.mark_reported()
    assert pending_report(store, "1.1.0") is None


async def test_a_refused_offer_reports_why_and_changes_nothing(tmp_path: Path) -> None:
    sim = ReleaseSimulator()
    sim.publish("0.9.0", created=NOW)
    store = SlotStore(tmp_path / "fw")
    reports: list[firmware_pb2.FirmwareProgress] = []
    assert await _take(sim, store, "0.9.0", reports=reports) == Stage.FIRMWARE_STAGE_REFUSED
    assert "older than the running 1.0.0" in reports[-1].detail
    assert not (tmp_path / "fw").exists()


async def test_a_cut_download_raises_then_resumes(tmp_path: Path) -> None:
    sim = ReleaseSimulator()
    release = sim.publish("1.1.0", created=NOW)
    store = SlotStore(tmp_path / "fw")
    fetcher = sim.fetcher("1.1.0", chunk_size=100, cut_after=300)
    with pytest.raises(DownloadError):
        await apply_offer(
            _offer(sim, "1.1.0"),
            fetcher=fetcher,
            store=store,
            trust=TrustPolicy(sim.pinned),
            running_version=BASE,
            clock=ManualClock(NOW),
            report=lambda _: None,
            request_restart=lambda: None,
        )
    resumed = sim.fetcher("1.1.0")
    stage = await apply_offer(
        _offer(sim, "1.1.0"),
        fetcher=resumed,
        store=store,
        trust=TrustPolicy(sim.pinned),
        running_version=BASE,
        clock=ManualClock(NOW),
        report=lambda _: None,
        request_restart=lambda: None,
    )
    assert stage == Stage.FIRMWARE_STAGE_REBOOTING
    (name,) = release.parts
    assert resumed.requests == [(name, 300, len(release.parts[name]) - 300)]


async def _full_update(
    sim: ReleaseSimulator, store: SlotStore, version: str, healthy: bool, crash: CrashPoint
) -> None:
    cutting = SlotStore(store.state_dir, crash=crash)
    await _take(sim, cutting, version, crash)
    await _boot_and_check(cutting, healthy, crash)


def _cut_at(index: int) -> tuple[CrashPoint, Callable[[], list[str]]]:
    seen: list[str] = []

    def crash(point: str) -> None:
        seen.append(point)
        if len(seen) == index + 1:
            raise PowerCut(point)

    return crash, lambda: seen


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A raised PowerCut tests the order of the steps, not what fsync guarantees: this loop
    skips its thousand real fsyncs (seconds on a busy shared disk) and counts them."""
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    return calls


@pytest.mark.parametrize("healthy", [True, False], ids=["good-release", "bad-release"])
async def test_a_power_cut_at_every_step_leaves_a_bootable_good_version(
    tmp_path: Path, healthy: bool, fsyncs: list[int]
) -> None:
    sim = ReleaseSimulator()
    for version in ("1.1.0", "1.2.0", "1.3.0"):
        sim.publish(version, created=NOW)

    # 1.2.0 committed in slot b; slot a still holds 1.1.0, which 1.3.0 replaces.
    template = SlotStore(tmp_path / "template")
    await _full_update(sim, template, "1.1.0", True, no_crash)
    await _full_update(sim, template, "1.2.0", True, no_crash)

    async def committed_1_2_0(name: str) -> SlotStore:
        await asyncio.to_thread(shutil.copytree, template.state_dir, tmp_path / name)
        return SlotStore(tmp_path / name)

    # Record every crash point of the 1.2.0 -> 1.3.0 update once, uncut.
    points: list[str] = []
    await _full_update(sim, await committed_1_2_0("probe"), "1.3.0", healthy, points.append)
    assert {"download:synced", "install:cleared", "switch:written"} <= set(points)
    assert ("commit:written" if healthy else "rollback:written") in points
    assert fsyncs

    good = {"1.2.0", "1.3.0"} if healthy else {"1.2.0"}
    expected = "1.3.0" if healthy else "1.2.0"
    for index, point in enumerate(points):
        store = await committed_1_2_0(f"cut{index}")
        crash, _ = _cut_at(index)
        with pytest.raises(PowerCut):
            await _full_update(sim, store, "1.3.0", healthy, crash)
        # Power comes back: the agent starts (maybe several times) until no trial is left;
        # every start boots a complete install (checked in _boot_and_check).
        for _ in range(5):
            await _boot_and_check(store, healthy)
            if store.read().trial is None:
                break
        state = store.read()
        assert state.version_of(state.active, BASE) in good, f"cut after {point}"
        # The campaign offers the update again if it did not land.
        if state.version_of(state.active, BASE) != "1.3.0" and healthy:
            await _full_update(sim, store, "1.3.0", healthy, no_crash)
        state = store.read()
        assert state.version_of(state.committed, BASE) == expected, f"cut after {point}"
        assert state.active == state.committed and state.trial is None
        assert resolve_boot_slot(store.state_dir, now=NOW) == store.slot_dir(state.active or "")
