"""The one base of every "field: reason" error, and what it promises: nothing was changed.

Each subsystem keeps its own small hierarchy (``ScheduleError``, ``SignalPlanError``,
``StorageError``, ``ConfigError``, ...) under :class:`FieldError`, so one place can turn any
of them into a message for a person: the command line prints ``ondijon: error: <field>:
<reason>`` and exits 2 (``ondijon/cli.py``), whatever the subsystem.

A peer's answer (the orchestrator's gRPC status and details) is a field error too: the
orchestrator writes its details as ``field: reason``, and :meth:`FieldError.answered` keeps
the status in front, as the command line has always printed it
(``PERMISSION_DENIED: token: already used``).
"""

from __future__ import annotations

import re
from typing import Self

# What a field path looks like: ``lamps[3].pwm_pin``, ``--waves``, ``manifest.parts.app``.
_FIELD = re.compile(r"-{0,2}[A-Za-z_][\w.\-]*(\[[^\]\s]*\][\w.\-]*)*")


class FieldError(Exception):
    """Something named by a field path is wrong, and nothing was changed.

    Attributes:
        field: the path of what is wrong (``signals[0].poll_intervall_s``), or ``""`` when a
            peer's answer named none.
        reason: why, in words an operator understands.
        status: the name of the peer's gRPC status code when a peer answered with this error
            (``NOT_FOUND``), else ``None``.
    """

    status: str | None = None

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason

    @classmethod
    def answered(cls, status: str, details: str) -> Self:
        """The error a peer answered with: its status code's name and its details as written.

        ``str()`` is ``"<status>: <details>"``; ``field`` and ``reason`` are read from the
        details when they say ``field: reason``.
        """
        field, reason = split_field(details)
        error = cls(field, reason)
        error.status = status
        error.args = (f"{status}: {details}",)
        return error


def split_field(text: str) -> tuple[str, str]:
    """``"field: reason"`` as ``(field, reason)``; text that names no field as ``("", text)``."""
    field, sep, reason = text.partition(": ")
    if sep and _FIELD.fullmatch(field):
        return field, reason
    return "", text
