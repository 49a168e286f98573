"""The node's flash: its program, kept across reboots, written rarely and atomically.

Flash wears out (NOR flash takes ~100,000 erase cycles per sector; LittleFS spreads
them), so the node writes only when the gateway sends a program that differs from the
one it holds (a retained program arriving again on every reconnection costs nothing),
and counts every write it ever made: the count lives in the same file as the program
(``<count>\\n<program JSON>``), so counting costs no write of its own.

A write goes to ``program.tmp`` then is renamed over ``program.json``: on LittleFS (the
default filesystem of ESP32 and RP2040 ports) and POSIX the rename replaces the old file
atomically. On FAT the old file must be removed first; the window in between leaves only
the temporary file, which :meth:`Flash.load` then reads. A torn or invalid file is
reported (:attr:`Flash.fault`) and ignored: the node runs on its default level until the
gateway sends the program again.
"""

import os

from edge.node.bus import decode_program, encode_program
from edge.node.errors import InvalidMessage
from edge.node.program import Program

PROGRAM_FILE = "program.json"
TEMP_FILE = "program.tmp"


class Flash:
    """The program file in ``directory`` (a string path, as MicroPython's ``os`` wants).

    Attributes:
        writes: writes made to flash, ever (as far as the file remembers).
        fault: why the stored program could not be read at :meth:`load`, or None.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.writes = 0
        self.fault: str | None = None
        self._held: Program | None = None

    def _path(self, name: str) -> str:
        return self.directory + "/" + name

    def load(self) -> Program | None:
        """The stored program, or None (with :attr:`fault` set if a file was unusable)."""
        self.fault = None
        for name in (PROGRAM_FILE, TEMP_FILE):
            try:
                with open(self._path(name), "rb") as f:
                    data = f.read()
            except OSError:
                continue
            try:
                count, program = _parse(data)
            except (InvalidMessage, ValueError) as exc:
                self.fault = name + ": " + str(exc)
                continue
            self.writes = count
            self._held = program
            return program
        return None

    def save(self, program: Program) -> bool:
        """Store ``program`` unless it is the one held. Returns whether flash was written."""
        if program.same_as(self._held):
            return False
        data = str(self.writes + 1).encode() + b"\n" + encode_program(program)
        temp = self._path(TEMP_FILE)
        with open(temp, "wb") as f:
            f.write(data)
        try:
            os.rename(temp, self._path(PROGRAM_FILE))
        except OSError:
            # FAT refuses to rename over an existing file; load() reads the temporary
            # file if the cut comes between these two calls.
            os.remove(self._path(PROGRAM_FILE))
            os.rename(temp, self._path(PROGRAM_FILE))
        self.writes += 1
        self._held = program
        return True


def _parse(data: bytes) -> tuple[int, Program]:
    head, sep, body = bytes(data).partition(b"\n")
    if not sep:
        raise ValueError("torn: no program after the write count")
    count = int(head)
    if count < 1:
        raise ValueError("write count must be positive")
    return count, decode_program(body)
