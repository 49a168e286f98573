"""The two agent slots and the pointer that says which one boots.

Layout under the agent's state directory (``/var/lib/ondijon/firmware``)::

    state.json          the pointer (SlotState), replaced atomically; state.prev.json is
                        the previous good copy, read if state.json is ever unreadable
    slots/a/, slots/b/  an unpacked release each, with .ondijon-slot.json written last
    slots/.staging/     where a release is unpacked before it becomes a slot

``committed`` is the slot known good (``None``: the base install the gateway was
provisioned with, which is always there); ``active`` is the one the launcher boots;
``trial`` is set while ``active`` runs a new release that has not passed its health check
and stability period. ``previous`` is the slot committed before the current one (``None``:
the base install): where the launcher falls back when the committed release crash-loops.
``starts`` counts the launcher's starts of the committed release, in the same machine boot
(``boot_id``), that did not reach the stability period; the agent resets it once it has
run that long. A release is only ever unpacked into the slot that is neither active nor
committed, and the pointer only names a slot after that slot's marker is durable.

Installing unpacks the wheel with :mod:`zipfile` rather than ``pip install --target``: a
wheel is a zip whose root is importable as is (the format was designed for it), the
release's SHA-256 was already checked against the signed manifest, and unpacking needs no
subprocess, no network, no resolver, and lets every file be fsynced before the slot is
named. Only the ``ondijon`` distribution lives in a slot (no dependencies, like
``--no-deps``): third-party libraries come from the base virtualenv, so a release that
needs a new dependency must ship as a new base install.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from domain.firmware.errors import SlotError
from domain.firmware.version import VersionError, parse_version
from edge.firmware.durable import CrashPoint, fsync_dir, fsync_tree, no_crash, write_atomic

SLOTS = ("a", "b")
STATE_FORMAT = 1
MARKER = ".ondijon-slot.json"
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024

Result = Literal["committed", "rolled_back"]


@dataclass(frozen=True)
class Outcome:
    """How the last trial ended, kept until it is reported to the orchestrator."""

    version: str
    result: Result
    reason: str
    at: datetime
    reported: bool = False
    campaign_id: str = ""


@dataclass(frozen=True)
class SlotState:
    """The pointer: which slot is committed, which boots, and the trial in progress."""

    committed: str | None = None
    active: str | None = None
    trial: str | None = None
    boot_count: int = 0
    versions: Mapping[str, str] = field(default_factory=dict)
    last_outcome: Outcome | None = None
    campaign_id: str = ""
    previous: str | None = None
    starts: int = 0
    boot_id: str = ""

    def version_of(self, slot: str | None, base_version: str) -> str:
        """The version installed in ``slot`` (``None``: the base install's ``base_version``)."""
        return base_version if slot is None else self.versions.get(slot, base_version)

    def inactive(self) -> str:
        """The slot a new release may be unpacked into."""
        return next(s for s in SLOTS if s not in (self.active, self.committed))

    def rolled_back(self, reason: str, now: datetime) -> SlotState:
        """This state after giving up the trial (or a damaged slot) for the committed one."""
        failed = self.trial if self.trial is not None else self.active
        version = self.versions.get(failed, "unknown") if failed is not None else "base"
        return replace(
            self,
            active=self.committed,
            trial=None,
            boot_count=0,
            starts=0,
            last_outcome=Outcome(version, "rolled_back", reason, now, False, self.campaign_id),
        )


class SlotStore:
    """Reads and durably writes the pointer, and installs releases into the inactive slot."""

    def __init__(self, state_dir: Path, *, crash: CrashPoint = no_crash) -> None:
        self.state_dir = state_dir
        self.slots_dir = state_dir / "slots"
        self._state_file = state_dir / "state.json"
        self._previous_file = state_dir / "state.prev.json"
        self._crash = crash

    def slot_dir(self, slot: str) -> Path:
        """Directory of ``slot`` (``a`` or ``b``)."""
        return self.slots_dir / slot

    def read(self) -> SlotState:
        """The current pointer; the previous copy if the current one is unreadable, else the
        initial state (boot the base install)."""
        for candidate in (self._state_file, self._previous_file):
            try:
                return _decode(json.loads(candidate.read_bytes()))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return SlotState()

    def write(self, state: SlotState) -> None:
        """Replace the pointer atomically, keeping the current one as the previous copy."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            current = self._state_file.read_bytes()
        except FileNotFoundError:
            current = None
        if current is not None:
            write_atomic(self._previous_file, current, crash=self._crash)
        write_atomic(self._state_file, _encode(state), crash=self._crash)

    def installed_version(self, slot: str) -> str | None:
        """Version in ``slot`` if its install completed (its marker is there), else ``None``."""
        try:
            marker = json.loads((self.slot_dir(slot) / MARKER).read_bytes())
            version = marker["version"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return version if isinstance(version, str) else None

    def install(self, wheel: Path, version: str) -> str:
        """Unpack ``wheel`` (already verified) into the inactive slot; return that slot.

        The pointer is not touched: until :meth:`switch_to_trial`, the agent boots exactly as
        before, whatever happens here.

        Raises:
            SlotError: a trial is in progress, or the wheel cannot be unpacked.
        """
        state = self.read()
        if state.trial is not None:
            raise SlotError("slots", f"a trial of {state.versions.get(state.trial)} is in progress")
        target = state.inactive()
        self.slots_dir.mkdir(parents=True, exist_ok=True)
        staging = self.slots_dir / ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        _unpack_wheel(wheel, staging)
        fsync_tree(staging)
        self._crash("install:unpacked")
        marker = {"format": STATE_FORMAT, "version": version, "wheel": wheel.name}
        write_atomic(staging / MARKER, json.dumps(marker).encode(), crash=self._crash)
        self._crash("install:marked")
        old = self.slot_dir(target)
        if old.exists():
            # Renamed first so a cut mid-delete never leaves a half slot under a slot's name.
            doomed = self.slots_dir / f".old-{target}"
            shutil.rmtree(doomed, ignore_errors=True)
            os.rename(old, doomed)
            fsync_dir(self.slots_dir)
            self._crash("install:cleared")
            shutil.rmtree(doomed)
        os.rename(staging, old)
        fsync_dir(self.slots_dir)
        self._crash("install:placed")
        return target

    def switch_to_trial(self, slot: str, version: str, campaign_id: str = "") -> SlotState:
        """Point the next boot at ``slot`` as a trial of ``version`` (for ``campaign_id``).

        Raises:
            SlotError: the slot is not completely installed with that version, or is the
                committed one, or a trial is already running.
        """
        state = self.read()
        if slot not in SLOTS or slot in (state.committed, state.active):
            raise SlotError("slot", f"{slot!r} is not the inactive slot")
        if state.trial is not None:
            raise SlotError("slots", "a trial is already in progress")
        if self.installed_version(slot) != version:
            raise SlotError(f"slots.{slot}", f"does not hold a complete install of {version}")
        new = replace(
            state,
            active=slot,
            trial=slot,
            boot_count=0,
            versions={**state.versions, slot: version},
            campaign_id=campaign_id,
            # The slot that held the previous release now holds this one.
            previous=None if state.previous == slot else state.previous,
        )
        self.write(new)
        self._crash("switch:written")
        return new

    def commit(self, now: datetime, reason: str = "health check passed") -> SlotState:
        """Make the running trial the committed version (the one committed before becomes
        ``previous``, the fallback if this one crash-loops).

        Raises:
            SlotError: no trial is in progress.
        """
        state = self.read()
        if state.trial is None or state.trial != state.active:
            raise SlotError("slots", "no trial to commit")
        version = state.versions.get(state.trial, "unknown")
        new = replace(
            state,
            committed=state.trial,
            trial=None,
            boot_count=0,
            starts=0,
            previous=state.committed,
            last_outcome=Outcome(version, "committed", reason, now, False, state.campaign_id),
        )
        self.write(new)
        self._crash("commit:written")
        return new

    def roll_back(self, reason: str, now: datetime) -> SlotState:
        """Give up the trial: the next boot runs the committed version again."""
        state = self.read()
        if state.trial is None:
            return state
        new = state.rolled_back(reason, now)
        self.write(new)
        self._crash("rollback:written")
        return new

    def mark_stable(self) -> None:
        """The committed release has run its stability period: its starts stop counting."""
        state = self.read()
        if state.starts:
            self.write(replace(state, starts=0))

    def mark_reported(self) -> None:
        """Record that the last outcome reached the orchestrator."""
        state = self.read()
        if state.last_outcome is not None and not state.last_outcome.reported:
            self.write(replace(state, last_outcome=replace(state.last_outcome, reported=True)))


def unpacked_size(wheel: Path) -> int:
    """Bytes the files of ``wheel`` take once unpacked (from its central directory).

    Raises:
        SlotError: not a readable zip.
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            return sum(i.file_size for i in archive.infolist() if not i.is_dir())
    except (OSError, zipfile.BadZipFile) as exc:
        raise SlotError("wheel", f"{wheel.name} is not a readable wheel: {exc}") from exc


def _unpack_wheel(wheel: Path, into: Path) -> None:
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise SlotError("wheel", f"{wheel.name} is not a readable wheel: {exc}") from exc
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
            raise SlotError("wheel", f"unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        if not any(PurePosixPath(i.filename).parts[0].endswith(".dist-info") for i in infos):
            raise SlotError("wheel", f"{wheel.name} has no .dist-info: not a wheel")
        for info in infos:
            relative = _install_path(info.filename)
            if relative is None:
                continue
            destination = into.joinpath(*relative.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, destination.open("wb") as sink:
                shutil.copyfileobj(source, sink)


def _install_path(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or not path.parts:
        raise SlotError("wheel", f"unsafe path in wheel: {name!r}")
    top = path.parts[0]
    if top.endswith(".data"):
        # purelib/platlib belong at the root; scripts, headers and data are not used here.
        if len(path.parts) > 2 and path.parts[1] in ("purelib", "platlib"):
            return PurePosixPath(*path.parts[2:])
        return None
    return path


def _encode(state: SlotState) -> bytes:
    outcome = state.last_outcome
    document: dict[str, Any] = {
        "format": STATE_FORMAT,
        "committed": state.committed,
        "active": state.active,
        "trial": state.trial,
        "boot_count": state.boot_count,
        "versions": dict(state.versions),
        "last_outcome": None
        if outcome is None
        else {
            "version": outcome.version,
            "result": outcome.result,
            "reason": outcome.reason,
            "at": outcome.at.astimezone(UTC).isoformat(),
            "reported": outcome.reported,
            "campaign_id": outcome.campaign_id,
        },
        "campaign_id": state.campaign_id,
        "previous": state.previous,
        "starts": state.starts,
        "boot_id": state.boot_id,
    }
    return json.dumps(document, sort_keys=True, indent=1).encode()


def _decode(document: Mapping[str, Any]) -> SlotState:
    if document["format"] != STATE_FORMAT:
        raise ValueError("unknown state format")
    # Fields added later are optional: a state written by an older agent still reads.
    slots = {k: document.get(k) for k in ("committed", "active", "trial", "previous")}
    if any(v is not None and v not in SLOTS for v in slots.values()):
        raise ValueError("unknown slot")
    versions = {str(k): str(v) for k, v in dict(document["versions"]).items() if k in SLOTS}
    for version in versions.values():
        try:
            parse_version(version)
        except VersionError as exc:
            raise ValueError(str(exc)) from exc
    raw = document["last_outcome"]
    outcome = None
    if raw is not None:
        result = raw["result"]
        if result not in ("committed", "rolled_back"):
            raise ValueError("unknown result")
        outcome = Outcome(
            str(raw["version"]),
            result,
            str(raw["reason"]),
            datetime.fromisoformat(raw["at"]),
            bool(raw["reported"]),
            str(raw.get("campaign_id", "")),
        )
    return SlotState(
        committed=slots["committed"],
        active=slots["active"],
        trial=slots["trial"],
        boot_count=int(document["boot_count"]),
        versions=versions,
        last_outcome=outcome,
        campaign_id=str(document.get("campaign_id", "")),
        previous=slots["previous"],
        starts=int(document.get("starts", 0)),
        boot_id=str(document.get("boot_id", "")),
    )
