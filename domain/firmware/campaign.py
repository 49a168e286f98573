"""What a firmware campaign records about each gateway, shared by the campaign core
(:mod:`orchestrator.firmware.rollout`) and the store that keeps campaigns: where a gateway
stands (:class:`Outcome`, after ``FirmwareStage``), which outcome may replace which
(:func:`replaces`), and the lines of a campaign's reasons and history (:class:`Note`).
Pure values, no I/O."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Gateways named in a note line, at most.
_NAMED = 3


class Outcome(enum.Enum):
    """Where a gateway stands, named after ``FirmwareStage`` (without its prefix)."""

    DOWNLOADING = 1
    VERIFIED = 2
    INSTALLED = 3
    REBOOTING = 4
    COMMITTED = 5
    ROLLED_BACK = 6
    REFUSED = 7
    FAILED = 8
    CANCELLED = 9

    @classmethod
    def from_stage(cls, stage: int) -> Outcome | None:
        """The outcome for a ``FirmwareStage`` value (``None`` for UNSPECIFIED/unknown)."""
        try:
            return cls(stage)
        except ValueError:
            return None

    @property
    def failed(self) -> bool:
        return self in (Outcome.ROLLED_BACK, Outcome.REFUSED, Outcome.FAILED)

    @property
    def final(self) -> bool:
        return self.failed or self in (Outcome.COMMITTED, Outcome.CANCELLED)

    @property
    def past_point_of_no_return(self) -> bool:
        """The gateway switched to the new release: a cancel no longer stops it."""
        return self in (Outcome.REBOOTING, Outcome.COMMITTED, Outcome.ROLLED_BACK)


def replaces(held: Outcome, new: Outcome) -> bool:
    """Whether ``new`` may replace ``held`` for the same offer (timing aside).

    Failures and cancels are final; COMMITTED gives way only to a failure (the release
    crash-looped after its commit and the gateway fell back); a progress stage never
    replaces an outcome.
    """
    if held.failed or held is Outcome.CANCELLED:
        return False
    if held is Outcome.COMMITTED:
        return new.failed
    return True


@dataclass(frozen=True)
class Note:
    """A line of a campaign's reasons or history, rendered within each reader's scope.

    ``text`` is a template: ``{n}`` is how many of ``gateways`` the reader may see,
    ``{names}`` up to three of them (each with its ``details``, if any), ``{of}`` how many
    of ``among`` it may see; ``{sizes}`` the visible sizes of ``waves``. A line about
    gateways (``gateways`` or ``among`` given) is not shown to a reader who may see none.
    """

    text: str
    gateways: tuple[str, ...] = ()
    among: tuple[str, ...] = ()
    details: tuple[tuple[str, str], ...] = ()
    waves: tuple[tuple[str, ...], ...] = ()

    def render(self, visible: Callable[[str], bool] | None = None) -> str | None:
        """The line for a reader who may see the gateways ``visible`` accepts (``None``:
        all of them); ``None`` when the line is not for this reader."""
        seen = visible or (lambda _: True)
        shown = [g for g in self.gateways if seen(g)]
        about = (*self.gateways, *self.among)
        if about and not any(seen(g) for g in about):
            return None
        details = dict(self.details)
        names = [f"{g} ({details[g]})" if details.get(g) else g for g in shown]
        sizes = ", ".join(str(sum(1 for g in wave if seen(g))) for wave in self.waves)
        return self.text.format(
            n=len(shown),
            names=_names(names),
            of=sum(1 for g in self.among if seen(g)),
            sizes=sizes,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "gateways": list(self.gateways),
            "among": list(self.among),
            "details": [list(d) for d in self.details],
            "waves": [list(w) for w in self.waves],
        }

    @classmethod
    def from_json(cls, value: object) -> Note:
        """A stored note; a plain string (stored before notes existed) is shown as is."""
        if not isinstance(value, dict):
            return cls(str(value).replace("{", "{{").replace("}", "}}"))
        return cls(
            text=str(value["text"]),
            gateways=tuple(value.get("gateways", ())),
            among=tuple(value.get("among", ())),
            details=tuple((str(g), str(d)) for g, d in value.get("details", ())),
            waves=tuple(tuple(w) for w in value.get("waves", ())),
        )


def note(text: str) -> Note:
    """A note that names no gateway (braces in ``text`` are shown as they are)."""
    return Note(text.replace("{", "{{").replace("}", "}}"))


def _names(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_NAMED])
    return shown + (f" and {len(ids) - _NAMED} more" if len(ids) > _NAMED else "")
