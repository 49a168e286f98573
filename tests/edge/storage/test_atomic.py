"""Atomic writes and the TinyDB storage that recovers from its last good copy."""

from __future__ import annotations

import json
import os
import random
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tinydb import TinyDB

from edge.events import Priority
from edge.storage import atomic
from edge.storage.atomic import (
    AtomicJSONStorage,
    RecoveryOutcome,
    StorageRecovery,
    discard_stale_temporaries,
    write_atomic,
)
from edge.storage.errors import StorageWriteError


def _open(path: Path, reports: list[StorageRecovery] | None = None) -> TinyDB:
    return TinyDB(
        path,
        storage=AtomicJSONStorage,
        on_recovery=None if reports is None else reports.append,
    )


def _write_two_states(path: Path) -> None:
    with _open(path) as db:
        db.table("lamps").insert({"name": "first"})
        db.table("lamps").insert({"name": "second"})


def _names(db: TinyDB) -> list[str]:
    return [row["name"] for row in db.table("lamps").all()]


# write_atomic ----------------------------------------------------------------------------


def test_write_atomic_replaces_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "gateway.crt"
    write_atomic(target, b"old")
    write_atomic(target, b"new certificate")
    assert target.read_bytes() == b"new certificate"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.crt"]


def test_write_atomic_sets_the_mode_before_the_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes_seen_while_writing: list[int] = []
    real_write = os.write

    def spying_write(fd: int, data: Any) -> int:
        modes_seen_while_writing.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spying_write)
    target = tmp_path / "gateway.key"
    write_atomic(target, b"-----BEGIN PRIVATE KEY-----", mode=0o600)
    assert modes_seen_while_writing and set(modes_seen_while_writing) == {0o600}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_failed_write_keeps_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"good")

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageWriteError) as caught:
        write_atomic(target, b"never seen")
    assert caught.value.field == str(target)
    assert "Input/output error" in caught.value.reason
    monkeypatch.undo()
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_atomic_into_a_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageWriteError):
        write_atomic(tmp_path / "absent" / "x.json", b"{}")


def test_stale_temporaries_of_a_cut_write_are_discarded(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    (tmp_path / ".state.json.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".state.json.bak.def456.tmp").write_bytes(b"half")
    (tmp_path / ".other.json.abc123.tmp").write_bytes(b"not ours")
    assert discard_stale_temporaries(target) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.abc123.tmp"]


# AtomicJSONStorage -----------------------------------------------------------------------


def test_storage_round_trips_and_keeps_the_previous_state_as_backup(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _write_two_states(path)
    with _open(path) as db:
        assert _names(db) == ["first", "second"]
        assert db.storage.recovered is None
    backup = json.loads((tmp_path / "state.json.bak").read_text())
    assert [row["name"] for row in backup["lamps"].values()] == ["first"]


def test_without_hard_links_the_backup_is_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: object, target: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "state.json"
    _write_two_states(path)
    backup = json.loads((tmp_path / "state.json.bak").read_text())
    assert [row["name"] for row in backup["lamps"].values()] == ["first"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.json.bak"]


def test_a_fresh_storage_reports_nothing_and_creates_its_directory(tmp_path: Path) -> None:
    reports: list[StorageRecovery] = []
    with _open(tmp_path / "new" / "state.json", reports) as db:
        assert db.tables() == set()
        db.table("t").insert({"a": 1})
    assert reports == []
    assert (tmp_path / "new" / "state.json").exists()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda raw: raw[: len(raw) // 2], "not valid JSON"),
        (lambda raw: b"\x00" * len(raw), "empty"),
        (lambda raw: b"", "empty"),
        (lambda raw: b"[1, 2, 3]", "not a TinyDB document"),
        (lambda raw: b"\xff\xfe garbage", "not valid JSON"),
    ],
    ids=["torn", "zero-filled", "zero-length", "wrong-shape", "binary-garbage"],
)
def test_an_unreadable_main_file_is_restored_from_the_backup_and_reported(
    tmp_path: Path, damage: Any, reason: str
) -> None:
    path = tmp_path / "state.json"
    _write_two_states(path)
    path.write_bytes(damage(path.read_bytes()))
    reports: list[StorageRecovery] = []
    with _open(path, reports) as db:
        assert _names(db) == ["first"]
        assert db.storage.recovered == reports[0]
    assert len(reports) == 1
    assert reports[0].outcome is RecoveryOutcome.RESTORED_FROM_BACKUP
    assert reason in reports[0].reason
    assert (tmp_path / "state.json.corrupt").exists()
    # Repaired: the next start has nothing to report.
    again: list[StorageRecovery] = []
    with _open(path, again) as db:
        assert _names(db) == ["first"]
    assert again == []


def test_a_missing_main_file_with_a_backup_is_restored(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _write_two_states(path)
    path.unlink()
    reports: list[StorageRecovery] = []
    with _open(path, reports) as db:
        assert _names(db) == ["first"]
    assert "missing" in reports[0].reason


def test_both_copies_unreadable_starts_empty_reports_an_alarm_and_keeps_working(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    _write_two_states(path)
    path.write_bytes(b'{"lamps": {"1": {"na')
    (tmp_path / "state.json.bak").write_bytes(b"\x00\x00\x00")
    reports: list[StorageRecovery] = []
    with _open(path, reports) as db:
        assert db.tables() == set()
        db.table("lamps").insert({"name": "after"})
    assert reports[0].outcome is RecoveryOutcome.STARTED_EMPTY
    assert "main file not valid JSON" in reports[0].reason
    assert "backup empty" in reports[0].reason
    event = reports[0].to_event(datetime(2026, 3, 1, tzinfo=UTC))
    assert event.type == "storage.recovered" and event.priority is Priority.ALARM
    assert event.attributes["outcome"] == "started_empty"
    with _open(path) as db:
        assert _names(db) == ["after"]


def test_a_restore_is_reported_as_an_event_not_an_alarm() -> None:
    report = StorageRecovery("/x/state.json", RecoveryOutcome.RESTORED_FROM_BACKUP, "torn")
    assert report.to_event(datetime(2026, 3, 1, tzinfo=UTC)).priority is Priority.EVENT


def test_a_non_json_value_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _write_two_states(path)
    before = path.read_bytes()
    with _open(path) as db:
        with pytest.raises(StorageWriteError):
            db.table("lamps").insert({"name": object()})
        assert _names(db) == ["first", "second"]
    assert path.read_bytes() == before


def test_temporaries_left_by_a_cut_are_cleaned_when_the_storage_opens(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _write_two_states(path)
    (tmp_path / ".state.json.0123.tmp").write_bytes(b"{")
    with _open(path):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.json.bak"]


def test_a_cut_inside_a_write_leaves_a_backup_independent_of_the_main_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    _write_two_states(path)
    real = atomic.write_atomic

    def killed_writing_the_main_file(target: Any, data: bytes, *, mode: int = 0o600) -> None:
        if Path(target) == path:
            raise KeyboardInterrupt  # the process dies between the backup and the main file
        real(target, data, mode=mode)

    monkeypatch.setattr(atomic, "write_atomic", killed_writing_the_main_file)
    with pytest.raises(KeyboardInterrupt), _open(path) as db:
        db.table("lamps").insert({"name": "third"})
    monkeypatch.undo()
    backup = tmp_path / "state.json.bak"
    assert path.stat().st_ino != backup.stat().st_ino, "the backup is the main file"
    # The disk then garbles the main file in place: the backup is untouched.
    with path.open("r+b") as f:
        f.write(b"\x00\xff garbled sector")
    reports: list[StorageRecovery] = []
    with _open(path, reports) as db:
        assert _names(db) == ["first", "second"]
    assert [r.outcome for r in reports] == [RecoveryOutcome.RESTORED_FROM_BACKUP]


# Power cuts -----------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_points_always_leaves_the_last_or_previous_state(
    tmp_path: Path, kill_after: Any
) -> None:
    path = tmp_path / "state.json"

    def writer(report: Any) -> None:
        rng = random.Random(os.getpid())
        with _open(path) as db:
            table = db.table("counter")
            row = table.get(doc_id=1)
            n = 0 if row is None else row["n"]
            while True:
                n += 1
                # Sizes vary so that a write cut in place would leave a torn tail.
                blob = "x" * rng.randint(30_000, 250_000)
                if row is None:
                    table.insert({"n": n, "blob": blob})
                    row = {"n": n}
                else:
                    table.update({"n": n, "blob": blob}, doc_ids=[1])
                report(str(n))

    rng = random.Random(20260301)
    last_reported = 0
    for _ in range(30):
        lines = kill_after(writer, rng.randint(1, 12))
        if lines:
            last_reported = int(lines[-1])
        main = json.loads(path.read_text())["counter"]["1"]["n"]
        assert main in (last_reported, last_reported + 1)
        if (tmp_path / "state.json.bak").exists():
            backup = json.loads((tmp_path / "state.json.bak").read_text())["counter"]["1"]["n"]
            assert backup in (main - 1, main)
            # Two files, whatever the kill interrupted: damage to one never reaches the other.
            assert path.stat().st_ino != (tmp_path / "state.json.bak").stat().st_ino
        reports: list[StorageRecovery] = []
        with _open(path, reports) as db:
            assert db.table("counter").get(doc_id=1)["n"] == main
        assert reports == []
        assert not list(tmp_path.glob(".*.tmp"))
        last_reported = main
    assert last_reported >= 30
