"""Installing into the inactive slot never disturbs what boots until the pointer switches."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from domain.firmware.errors import SlotError
from edge.firmware.simulator import make_wheel
from edge.firmware.slots import SlotState, SlotStore

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def _wheel(tmp_path: Path, version: str) -> Path:
    name, data = make_wheel(version)
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _probe(store: SlotStore, slot: str) -> str:
    return (store.slot_dir(slot) / "ondijon_probe.py").read_text()


def test_a_fresh_gateway_boots_the_base_install(tmp_path: Path) -> None:
    state = SlotStore(tmp_path / "fw").read()
    assert state == SlotState()
    assert state.version_of(state.active, "1.0.0") == "1.0.0"


def test_install_fills_the_inactive_slot_without_touching_the_pointer(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "fw")
    slot = store.install(_wheel(tmp_path, "1.1.0"), "1.1.0")
    assert slot == "a"
    assert _probe(store, "a") == 'VERSION = "1.1.0"\n'
    assert store.installed_version("a") == "1.1.0"
    assert store.read() == SlotState()


def test_switch_commit_and_the_next_install_alternate_slots(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "fw")
    store.install(_wheel(tmp_path, "1.1.0"), "1.1.0")
    trial = store.switch_to_trial("a", "1.1.0", "camp-7")
    assert (trial.active, trial.trial, trial.committed) == ("a", "a", None)
    committed = store.commit(NOW)
    assert (committed.active, committed.trial, committed.committed) == ("a", None, "a")
    assert committed.last_outcome is not None
    assert (committed.last_outcome.result, committed.last_outcome.campaign_id) == (
        "committed",
        "camp-7",
    )
    assert store.install(_wheel(tmp_path, "1.2.0"), "1.2.0") == "b"
    assert _probe(store, "a") == 'VERSION = "1.1.0"\n'


def test_roll_back_returns_to_the_committed_slot_and_says_why(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "fw")
    store.install(_wheel(tmp_path, "1.1.0"), "1.1.0")
    store.switch_to_trial("a", "1.1.0")
    store.commit(NOW)
    store.install(_wheel(tmp_path, "1.2.0"), "1.2.0")
    store.switch_to_trial("b", "1.2.0")
    state = store.roll_back("drivers did not come up", NOW)
    assert (state.active, state.committed, state.trial) == ("a", "a", None)
    assert state.last_outcome is not None
    assert (state.last_outcome.version, state.last_outcome.reason) == (
        "1.2.0",
        "drivers did not come up",
    )
    store.mark_reported()
    reported = store.read().last_outcome
    assert reported is not None and reported.reported


def test_no_install_or_second_switch_during_a_trial(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "fw")
    store.install(_wheel(tmp_path, "1.1.0"), "1.1.0")
    store.switch_to_trial("a", "1.1.0")
    with pytest.raises(SlotError, match=r"trial of 1\.1\.0 is in progress"):
        store.install(_wheel(tmp_path, "1.2.0"), "1.2.0")
    with pytest.raises(SlotError, match="not the inactive slot"):
        store.switch_to_trial("a", "1.1.0")


def test_switch_refuses_a_slot_without_a_complete_install(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "fw")
    with pytest.raises(SlotError) as excinfo:
        store.switch_to_trial("a", "1.1.0")
    assert excinfo.value.field == "slots.a"
    store.install(_wheel(tmp_path, "1.1.0"), "1.1.0")
    with pytest.raises(SlotError, match=r"complete install of 1\.2\.0"):
        store.switch_to_trial("a", "1.2.0")
    with pytest.raises(SlotError, match="no trial to commit"):
        store.commit(NOW)


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("evil", ["../escape.py", "/etc/passwd", "pkg\\..\\x.py"])
def test_a_wheel_cannot_write_outside_its_slot(tmp_path: Path, evil: str) -> None:
    wheel = tmp_path / "evil.whl"
    wheel.write_bytes(_zip({"x-1.0.dist-info/METADATA": b"", evil: b"boom"}))
    store = SlotStore(tmp_path / "fw")
    with pytest.raises(SlotError, match="unsafe path"):
        store.install(wheel, "1.0.0")
    assert not (tmp_path / "escape.py").exists()
    assert store.installed_version("a") is None


def test_not_a_wheel_is_refused(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "fw")
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip")
    with pytest.raises(SlotError, match="not a readable wheel"):
        store.install(junk, "1.0.0")
    junk.write_bytes(_zip({"module.py": b""}))
    with pytest.raises(SlotError, match=r"no \.dist-info"):
        store.install(junk, "1.0.0")


def test_purelib_data_lands_at_the_slot_root(tmp_path: Path) -> None:
    name, data = make_wheel(
        "1.1.0",
        {
            "ondijon-1.1.0.data/purelib/extra_mod.py": b"X = 1\n",
            "ondijon-1.1.0.data/scripts/tool": b"#!/bin/sh\n",
        },
    )
    wheel = tmp_path / name
    wheel.write_bytes(data)
    store = SlotStore(tmp_path / "fw")
    store.install(wheel, "1.1.0")
    assert (store.slot_dir("a") / "extra_mod.py").read_text() == "X = 1\n"
    assert not (store.slot_dir("a") / "tool").exists()


def test_an_unreadable_pointer_falls_back_to_its_previous_copy(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "fw")
    store.install(_wheel(tmp_path, "1.1.0"), "1.1.0")
    store.switch_to_trial("a", "1.1.0")
    store.commit(NOW)
    (tmp_path / "fw" / "state.json").write_bytes(b'{"format": 1, "comm')
    previous = store.read()
    assert (previous.active, previous.trial) == ("a", "a")
    (tmp_path / "fw" / "state.prev.json").write_bytes(b"\0\0\0")
    assert store.read() == SlotState()
