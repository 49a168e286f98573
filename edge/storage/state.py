"""The agent's state file: what it holds and what it has counted, across power cuts.

One TinyDB file on :class:`~edge.storage.atomic.AtomicJSONStorage` (every change is one
atomic rewrite; a torn file is recovered from the last good copy and reported) with:

- the desired-state documents per kind (version, SHA-256 digest and the payload bytes,
  base64 in the JSON), with stale or replayed versions refused by :func:`judge_document`;
- the operators' overrides (``schedule_pb2.Override`` messages, by id);
- per-device counters (operating hours, switch count, energy), which only go up;
- a free-form firmware bookkeeping record (slot, pending version, health-check state).

Callers use the typed methods of :class:`AgentState`, never TinyDB itself. Every method
that changes something writes the file once (fsync included): batch counter updates.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from tinydb import TinyDB
from tinydb.table import Document, Table

from edge.storage.atomic import AtomicJSONStorage, PathLike, RecoveryCallback, StorageRecovery
from edge.storage.errors import DocumentRefusedError, StateError
from protos.ondijon.v1 import link_pb2, schedule_pb2

_SINGLE = 1  # doc_id of the one record of the overrides, counters and firmware tables


@dataclass(frozen=True)
class StoredDocument:
    """A desired-state document as held by the agent."""

    kind: link_pb2.DocumentKind.ValueType
    version: int
    digest: bytes
    payload: bytes


class DocumentVerdict(enum.Enum):
    """What :func:`judge_document` decided for a document that is not refused."""

    NEW = "new"  # newer than what is held: store it and apply it
    ALREADY_HELD = "already_held"  # same content re-delivered: acknowledge, change nothing


def kind_name(kind: int) -> str:
    """``schedule`` for ``DOCUMENT_KIND_SCHEDULE``, as used in error fields."""
    try:
        name = link_pb2.DocumentKind.Name(link_pb2.DocumentKind.ValueType(kind))
        return name.removeprefix("DOCUMENT_KIND_").lower()
    except ValueError:
        return str(kind)


def judge_document(held: StoredDocument | None, incoming: StoredDocument) -> DocumentVerdict:
    """Decide whether an incoming document replaces the held one (pure).

    A document must name a known kind, have a version from 1 and a digest equal to the
    SHA-256 of its payload. A version not above the held one is refused as stale or
    replayed, unless its digest is the held one's (an idempotent re-delivery).

    Raises:
        DocumentRefusedError: naming the field (``documents[schedule].version``) and why.
    """
    name = kind_name(incoming.kind)
    where = f"documents[{name}]"
    if incoming.kind not in link_pb2.DocumentKind.values() or incoming.kind == 0:
        raise DocumentRefusedError(f"{where}.kind", "unknown document kind")
    if incoming.version < 1:
        raise DocumentRefusedError(f"{where}.version", "must be 1 or more")
    if hashlib.sha256(incoming.payload).digest() != incoming.digest:
        raise DocumentRefusedError(f"{where}.digest", "is not the SHA-256 of the payload")
    if held is None or incoming.version > held.version:
        return DocumentVerdict.NEW
    if incoming.digest == held.digest:
        return DocumentVerdict.ALREADY_HELD
    raise DocumentRefusedError(
        f"{where}.version",
        f"version {incoming.version} is not newer than the held version {held.version}"
        " (stale or replayed)",
    )


@dataclass(frozen=True)
class DeviceCounters:
    """What a device has done since it was installed (or an increment of that)."""

    operating_hours: float = 0.0
    switch_count: int = 0
    energy_wh: float = 0.0

    def plus(self, other: DeviceCounters) -> DeviceCounters:
        """The sum of two counters."""
        return DeviceCounters(
            self.operating_hours + other.operating_hours,
            self.switch_count + other.switch_count,
            self.energy_wh + other.energy_wh,
        )


def _check_increment(device_id: str, delta: DeviceCounters) -> None:
    where = f"counters[{device_id}]"
    if not device_id:
        raise StateError("counters[]", "device id must not be empty")
    for name in ("operating_hours", "switch_count", "energy_wh"):
        value = getattr(delta, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StateError(f"{where}.{name}", "must be a number")
        if not math.isfinite(value) or value < 0:
            raise StateError(f"{where}.{name}", "counters only go up: must be finite and >= 0")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise StateError(where, f"stored value is not base64 ({exc})") from exc


class AgentState:
    """The agent's durable state, one atomic file (see the module docstring)."""

    def __init__(self, path: PathLike, *, on_recovery: RecoveryCallback | None = None) -> None:
        """Open (or create on first write) the state file at ``path``.

        Args:
            path: the JSON file; ``<path>.bak`` holds the previous good copy.
            on_recovery: called once if the file was unreadable and had to be recovered.
        """
        self._db = TinyDB(path, storage=AtomicJSONStorage, on_recovery=on_recovery)
        storage = self._db.storage
        assert isinstance(storage, AtomicJSONStorage)
        self._storage = storage

    @property
    def recovered(self) -> StorageRecovery | None:
        """The recovery made when the file was opened, if it was unreadable."""
        return self._storage.recovered

    def close(self) -> None:
        """Release the file (every change is already on disk)."""
        self._db.close()

    def __enter__(self) -> AgentState:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Desired-state documents -----------------------------------------------------------

    def document(self, kind: link_pb2.DocumentKind.ValueType) -> StoredDocument | None:
        """The held document of ``kind``, if any."""
        row = self._documents.get(doc_id=int(kind))
        return None if row is None else self._to_document(row)

    def documents(self) -> list[StoredDocument]:
        """All held documents, by kind."""
        rows = sorted(self._documents.all(), key=lambda row: row.doc_id)
        return [self._to_document(row) for row in rows]

    def held_documents(self) -> list[link_pb2.HeldDocument]:
        """What the agent holds, as said in its Hello."""
        return [
            link_pb2.HeldDocument(kind=d.kind, version=d.version, digest=d.digest)
            for d in self.documents()
        ]

    def accept_document(self, document: link_pb2.DesiredDocument) -> DocumentVerdict:
        """Store a desired-state document unless it is stale, replayed or corrupt.

        Returns:
            ``NEW`` if stored (the caller applies it), ``ALREADY_HELD`` if the same content
            was re-delivered (nothing written).

        Raises:
            DocumentRefusedError: refused (see :func:`judge_document`); nothing changed.
        """
        incoming = StoredDocument(
            document.kind, document.version, document.digest, document.payload
        )
        verdict = judge_document(self.document(document.kind), incoming)
        if verdict is DocumentVerdict.NEW:
            row = {
                "kind": int(incoming.kind),
                "version": incoming.version,
                "digest": _b64(incoming.digest),
                "payload": _b64(incoming.payload),
            }
            self._replace(self._documents, int(incoming.kind), row)
        return verdict

    # Overrides -------------------------------------------------------------------------

    def overrides(self) -> list[schedule_pb2.Override]:
        """The stored overrides, by id."""
        stored = self._single(self._db.table("overrides"))
        result = []
        for override_id in sorted(stored):
            message = schedule_pb2.Override()
            message.ParseFromString(_unb64(stored[override_id], f"overrides[{override_id}]"))
            result.append(message)
        return result

    def put_override(self, override: schedule_pb2.Override) -> None:
        """Store ``override`` (replacing one with the same id).

        Raises:
            StateError: the override has no id or no expiry.
        """
        if not override.id:
            raise StateError("overrides[].id", "must not be empty")
        if not override.HasField("expiry"):
            raise StateError(f"overrides[{override.id}].expiry", "an override must expire")
        table = self._db.table("overrides")
        stored = self._single(table)
        stored[override.id] = _b64(override.SerializeToString(deterministic=True))
        self._replace(table, _SINGLE, stored)

    def remove_override(self, override_id: str) -> bool:
        """Forget an override; ``False`` if it was not stored."""
        table = self._db.table("overrides")
        stored = self._single(table)
        if stored.pop(override_id, None) is None:
            return False
        self._replace(table, _SINGLE, stored)
        return True

    def drop_expired_overrides(self, now: datetime) -> list[str]:
        """Forget the overrides whose expiry is at or before ``now``; their ids."""
        if now.tzinfo is None:
            raise StateError("now", "must be timezone-aware")
        expired = [o.id for o in self.overrides() if o.expiry.ToDatetime(tzinfo=UTC) <= now]
        if expired:
            table = self._db.table("overrides")
            stored = self._single(table)
            for override_id in expired:
                del stored[override_id]
            self._replace(table, _SINGLE, stored)
        return expired

    # Device counters -------------------------------------------------------------------

    def counters(self, device_id: str) -> DeviceCounters:
        """The counters of one device (zero if never counted)."""
        return self.all_counters().get(device_id, DeviceCounters())

    def all_counters(self) -> dict[str, DeviceCounters]:
        """The counters of every counted device."""
        stored = self._single(self._db.table("counters"))
        result = {}
        for device_id, values in stored.items():
            try:
                result[device_id] = DeviceCounters(
                    float(values["operating_hours"]),
                    int(values["switch_count"]),
                    float(values["energy_wh"]),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise StateError(
                    f"counters[{device_id}]", f"stored value is malformed ({exc})"
                ) from exc
        return result

    def add_counters(self, increments: Mapping[str, DeviceCounters]) -> dict[str, DeviceCounters]:
        """Add increments to several devices' counters in one write.

        Returns:
            The new counters of the devices incremented.

        Raises:
            StateError: an increment is negative or not finite; nothing is written.
        """
        for device_id, delta in increments.items():
            _check_increment(device_id, delta)
        if not increments:
            return {}
        current = self.all_counters()
        updated = {
            device_id: current.get(device_id, DeviceCounters()).plus(delta)
            for device_id, delta in increments.items()
        }
        current.update(updated)
        stored = {
            device_id: {
                "operating_hours": c.operating_hours,
                "switch_count": c.switch_count,
                "energy_wh": c.energy_wh,
            }
            for device_id, c in sorted(current.items())
        }
        self._replace(self._db.table("counters"), _SINGLE, stored)
        return updated

    # Firmware bookkeeping --------------------------------------------------------------

    def firmware(self) -> dict[str, Any]:
        """The firmware bookkeeping record (empty if never written)."""
        return self._single(self._db.table("firmware"))

    def update_firmware(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into the firmware record (a ``None`` value removes the key).

        Returns:
            The new record.

        Raises:
            StateError: a value is not JSON (``firmware.<key>``); nothing is written.
        """
        record = self.firmware()
        for key, value in changes.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise StateError(f"firmware.{key}", f"must be JSON ({exc})") from exc
            if value is None:
                record.pop(key, None)
            else:
                record[key] = value
        self._replace(self._db.table("firmware"), _SINGLE, record)
        return record

    # Internals -------------------------------------------------------------------------

    @property
    def _documents(self) -> Table:
        return self._db.table("documents")

    @staticmethod
    def _to_document(row: Mapping[str, Any]) -> StoredDocument:
        where = f"documents[{kind_name(int(row.get('kind', 0)))}]"
        try:
            return StoredDocument(
                kind=link_pb2.DocumentKind.ValueType(int(row["kind"])),
                version=int(row["version"]),
                digest=_unb64(row["digest"], f"{where}.digest"),
                payload=_unb64(row["payload"], f"{where}.payload"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(where, f"stored value is malformed ({exc})") from exc

    @staticmethod
    def _single(table: Table) -> dict[str, Any]:
        row = table.get(doc_id=_SINGLE)
        return {} if row is None else dict(row)

    @staticmethod
    def _replace(table: Table, doc_id: int, value: Mapping[str, Any]) -> None:
        # One storage write either way: TinyDB's upsert would merge keys, not replace them.
        if table.contains(doc_id=doc_id):
            replacement = dict(value)

            def swap(doc: MutableMapping[Any, Any]) -> None:
                doc.clear()
                doc.update(replacement)

            table.update(swap, doc_ids=[doc_id])
        else:
            table.insert(Document(dict(value), doc_id=doc_id))


__all__ = [
    "AgentState",
    "DeviceCounters",
    "DocumentVerdict",
    "StoredDocument",
    "judge_document",
    "kind_name",
]
