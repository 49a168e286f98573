"""Safety latches that survive a restart: a bollard's reversal count, lockout and faults.

A latch is set by the bollard's rules (three reversals into the same obstacle, a travel
timeout, a contradiction between the limit switches and the travel time) and cleared only
by an explicit reset: an operator's command or a technician's key on site. Restarting the
agent, a crash, a power cut or a firmware update must never clear one, or a bollard that
locked itself out would rise three more times into the same car after every restart.

:class:`LatchFile` keeps every bollard's latches of a cabinet in one small JSON file,
rewritten atomically (temporary file, fsync, ``os.replace``, fsync of the directory) on
every change, so a power cut leaves either the old or the new content. A file that cannot
be read (torn by a failing card, edited by hand) is not guessed at: every bollard then
starts latched with the fault ``latches_unreadable`` until someone resets it, the
fail-safe reading of "we no longer know what was latched".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from edge.equipment.bollard.rules import Latches
from foundation import files

#: The fault a bollard starts with when the latch file cannot be read.
UNREADABLE = "latches_unreadable"


class LatchStore(Protocol):
    """Where a controller keeps its latches (a file in production, a dict in tests)."""

    def load(self, device_id: str) -> Latches:
        """The latches held for ``device_id`` (none held: :class:`Latches` empty)."""
        ...

    def save(self, device_id: str, latches: Latches) -> None:
        """Make ``latches`` durable before returning."""
        ...


class MemoryLatches:
    """Latches kept in memory: for a controller whose restarts a test plays by hand."""

    def __init__(self) -> None:
        self.held: dict[str, Latches] = {}

    def load(self, device_id: str) -> Latches:
        return self.held.get(device_id, Latches())

    def save(self, device_id: str, latches: Latches) -> None:
        self.held[device_id] = latches


class LatchFile:
    """The latches of every bollard of a cabinet, in one atomically written JSON file.

    After the file was found unreadable it is set aside as ``<name>.corrupt`` and the new
    file says so (``"unknown": reason``): from then on a bollard with no entry of its own
    is latched with :data:`UNREADABLE`, and a reset writes its explicit, clean entry.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._held: dict[str, Latches] = {}
        #: Why the latches were lost, or "" (the file was fine or absent: a new cabinet).
        self.unknown = ""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self._lost(f"unreadable ({exc.strerror or exc})")
            return
        try:
            self._held, self.unknown = _parse(raw)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            self._lost(f"not a latch file ({exc})")

    @property
    def path(self) -> Path:
        """Where the latches live."""
        return self._path

    def load(self, device_id: str) -> Latches:
        held = self._held.get(device_id)
        if held is not None:
            return held
        return Latches(faults=(UNREADABLE,)) if self.unknown else Latches()

    def save(self, device_id: str, latches: Latches) -> None:
        self._held[device_id] = latches
        self._write()

    def _lost(self, reason: str) -> None:
        self.unknown = reason
        self._path.replace(self._path.with_name(self._path.name + ".corrupt"))
        self._write()

    def _write(self) -> None:
        document: dict[str, object] = {
            device: {
                "reversals": held.reversals,
                "locked_out": held.locked_out,
                "faults": list(held.faults),
            }
            for device, held in sorted(self._held.items())
        }
        body = {"unknown": self.unknown, "bollards": document} if self.unknown else document
        files.write_atomic(self._path, json.dumps(body, indent=1).encode())


def _parse(raw: bytes) -> tuple[dict[str, Latches], str]:
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("the top level must be an object")
    unknown = ""
    if "unknown" in data:
        unknown, data = str(data["unknown"]) or "unknown", data["bollards"]
        if not isinstance(data, dict):
            raise ValueError("bollards: must be an object")
    held: dict[str, Latches] = {}
    for device, entry in data.items():
        reversals = entry["reversals"]
        locked = entry["locked_out"]
        faults = entry["faults"]
        if isinstance(reversals, bool) or not isinstance(reversals, int) or reversals < 0:
            raise ValueError(f"{device}.reversals: must be a count")
        if not isinstance(locked, bool):
            raise ValueError(f"{device}.locked_out: must be true or false")
        if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
            raise ValueError(f"{device}.faults: must be a list of names")
        held[str(device)] = Latches(reversals, locked, tuple(faults))
    return held, unknown
