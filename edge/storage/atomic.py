"""Atomic file writes, and a TinyDB storage that survives a power cut at any byte.

A street cabinet loses power without warning. Every file the agent writes goes through
:func:`write_atomic`: the bytes go to a temporary file in the same directory, which is
flushed and fsynced, renamed over the target with ``os.replace`` and the directory is
fsynced, so the name points either to the old complete content or to the new one.

:class:`AtomicJSONStorage` is a TinyDB storage built on that (TinyDB's stock
``JSONStorage`` rewrites the file in place, so a cut mid-write leaves it torn). Before each
write the current good content is kept as ``<name>.bak``: an independent copy, itself
written atomically. (Not a hard link: a kill between linking and replacing the main file
left both names on one inode, and damage to one was damage to both.) On start, a main
file that is missing, empty, torn or not TinyDB-shaped JSON is set aside as
``<name>.corrupt``, the backup is restored and a :class:`StorageRecovery` is reported; if
the backup is unreadable too the storage starts empty and reports that. It never raises on
read: the street keeps running, and the agent turns the report into an event.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from edge.events import EquipmentEvent, Priority
from edge.storage.errors import StorageWriteError
from foundation import files

PathLike = str | os.PathLike[str]


def write_atomic(path: PathLike, data: bytes, *, mode: int = files.PRIVATE_FILE) -> None:
    """Replace the file at ``path`` with ``data``, atomically and durably.

    The mode is set on the temporary file before the first byte is written, so a key
    written with ``mode=0o600`` is never readable by others, even for an instant.

    Raises:
        StorageWriteError: the file could not be written; the old content is untouched.
    """
    try:
        files.write_atomic(path, data, mode=mode)
    except OSError as exc:
        raise StorageWriteError(str(path), exc.strerror or str(exc)) from exc


def discard_stale_temporaries(path: PathLike) -> int:
    """Remove temporary files left by writes of ``path`` that a power cut interrupted.

    Only call it when no write of that file (or of a file whose name starts with the same
    name, such as its ``.bak``) is under way.

    Returns:
        How many were removed.
    """
    target = Path(path)
    removed = 0
    for leftover in target.parent.glob(f"{files.temporary_prefix(target)}*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            removed += 1
    return removed


class RecoveryOutcome(enum.Enum):
    """What was done with a stored file found unreadable."""

    RESTORED_FROM_BACKUP = "restored_from_backup"
    STARTED_EMPTY = "started_empty"
    # Set aside, what could be read copied into a new file (the outbox).
    SALVAGED = "salvaged"


@dataclass(frozen=True)
class StorageRecovery:
    """A report that a stored file was unreadable and what was done about it."""

    path: str
    outcome: RecoveryOutcome
    reason: str
    details: Mapping[str, str] = field(default_factory=dict)

    def to_event(self, at: datetime) -> EquipmentEvent:
        """The event the agent records for this recovery.

        Starting empty or salvaging lost content (documents, counters, events), so it is
        an alarm; a restore from the backup lost at most the last write, so it is an event.
        """
        lost = self.outcome is not RecoveryOutcome.RESTORED_FROM_BACKUP
        return EquipmentEvent(
            device_id="storage",
            type="storage.recovered",
            priority=Priority.ALARM if lost else Priority.EVENT,
            at=at,
            message=f"{self.path}: {self.outcome.value}: {self.reason}",
            attributes={
                "path": self.path,
                "outcome": self.outcome.value,
                "reason": self.reason,
                **self.details,
            },
        )


RecoveryCallback = Callable[[StorageRecovery], None]


def _judge(path: Path) -> tuple[str | None, str | None]:
    """(text, None) for a readable TinyDB file, (None, reason) otherwise."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, "missing"
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    if not raw.strip(b" \t\r\n\x00"):
        return None, "empty"
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
        return None, "not a TinyDB document (tables must be JSON objects)"
    return text, None


class AtomicJSONStorage(Storage):
    """A TinyDB storage that writes atomically and recovers from its last good copy.

    Use it as ``TinyDB(path, storage=AtomicJSONStorage, on_recovery=callback)``. It is the
    only writer of its file: the content is read from disk once and then kept in memory.

    Attributes:
        recovered: the recovery made when the file was first read, if any.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        on_recovery: RecoveryCallback | None = None,
        mode: int = files.PRIVATE_FILE,
    ) -> None:
        """Open the storage at ``path`` (created on the first write).

        Args:
            path: the JSON file; its directory is created if missing.
            on_recovery: called once if the file had to be recovered on first read.
            mode: permission bits of the file and its backup.
        """
        super().__init__()
        self._path = Path(path)
        self._backup = self._path.with_name(self._path.name + ".bak")
        self._corrupt = self._path.with_name(self._path.name + ".corrupt")
        self._mode = mode
        self._on_recovery = on_recovery
        self._text: str | None = None
        self._loaded = False
        # Only a file known to hold a good state may become the backup.
        self._main_good = False
        self.recovered: StorageRecovery | None = None
        if not self._path.parent.exists():
            files.private_directory(self._path.parent)
        discard_stale_temporaries(self._path)
        self._load()

    @property
    def path(self) -> Path:
        """The main file."""
        return self._path

    def read(self) -> dict[str, dict[str, Any]] | None:
        """The database content, or ``None`` when empty (TinyDB's convention)."""
        if self._text is None:
            return None
        data: dict[str, dict[str, Any]] = json.loads(self._text)
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        """Replace the database content atomically, keeping the previous one as backup.

        Raises:
            StorageWriteError: the content is not JSON or could not be written; the files
                and the content read back are unchanged.
        """
        try:
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StorageWriteError(str(self._path), f"not JSON-serialisable ({exc})") from exc
        if self._main_good:
            self._keep_previous()
        write_atomic(self._path, text.encode("utf-8"), mode=self._mode)
        self._text = text
        self._main_good = True

    def close(self) -> None:
        """Nothing to release: every write is complete when it returns."""

    def _keep_previous(self) -> None:
        # The bytes known to be in the main file, copied: the backup is another inode, so
        # nothing that happens to the main file (a torn write, a flipped sector) reaches it.
        if self._text is not None:
            write_atomic(self._backup, self._text.encode("utf-8"), mode=self._mode)

    def _load(self) -> None:
        text, main_problem = _judge(self._path)
        if main_problem is None:
            self._text, self._main_good = text, True
            return
        if main_problem == "missing" and not self._backup.exists():
            return  # a fresh storage, nothing was ever committed
        backup_text, backup_problem = _judge(self._backup)
        self._set_aside_main()
        if backup_text is not None:
            self._text = backup_text
            # Repaired now, so a second power cut before the next write does not report again.
            with contextlib.suppress(StorageWriteError):
                write_atomic(self._path, backup_text.encode("utf-8"), mode=self._mode)
                self._main_good = True
            self._report(RecoveryOutcome.RESTORED_FROM_BACKUP, f"main file {main_problem}")
        else:
            self._report(
                RecoveryOutcome.STARTED_EMPTY,
                f"main file {main_problem}; backup {backup_problem}",
            )

    def _set_aside_main(self) -> None:
        # Kept for the post-mortem; only the latest corrupt copy, so the disk cannot fill.
        with contextlib.suppress(OSError):
            os.replace(self._path, self._corrupt)

    def _report(self, outcome: RecoveryOutcome, reason: str) -> None:
        self.recovered = StorageRecovery(str(self._path), outcome, reason)
        if self._on_recovery is not None:
            self._on_recovery(self.recovered)
