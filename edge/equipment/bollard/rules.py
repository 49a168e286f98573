"""The safety rules of a retractable bollard, as a pure state machine.

``BollardRules.step(situation, inputs, now)`` is a function of the last situation, what the
sensors and commands say now, and the time; it returns the next situation, the motor and
light outputs, the events worth recording and the next instant it must be called again even
if nothing changes. It does no I/O, so every rule below is tested exhaustively:

- The bollard rises only when it is wanted up: held up by an operator, or in automatic mode
  when the schedule says up and the access policy is not OPEN and no granted passage is open.
- It never *starts* rising while the vehicle loop is occupied or the pressure edge is
  pressed; it waits down and rises when they clear, if still wanted.
- The warning light is on for at least ``warning_s`` (never below 1 s) before the up motor
  starts, and stays on while the bollard moves either way.
- A pressure edge, a vehicle on the loop or a loop detector in fault during the rise
  reverses it down at once. After ``max_reversals`` reversals in a row the bollard stays
  down (locked out) and an ALARM is raised; a complete rise resets the count.
- Latches (the reversal count, the lockout and the faults, see :class:`Latches`) are
  cleared only by an explicit reset (:meth:`BollardRules.reset`: an operator's command or a
  technician's key on site), never by a mode change; the controller persists them, so a
  restart does not clear them either.
- The emergency-lower input (fire brigade key) wins over everything: it lowers from any
  state, faulted or held up, and keeps the bollard down while active. A fault met during an
  emergency lowering is not retried until the key is turned again or an operator resets.
  A faulted bollard the key lowered stays down when the key is released: still latched.
- Travel that does not reach its limit switch within ``travel_timeout_s`` is a fault (motor
  off, ALARM); both limit switches active at once is a sensor fault. A fault holds until a
  reset.
- The up and down motors are never energised together (:class:`BollardOutputs` refuses it).
- A granted passage is spent when the loop goes from occupied to clear inside its window,
  so one badge lets one vehicle through (no tailgating on a long passage time).

Position comes from both limit switches *and* the travel time: "at the bottom" is the down
switch alone, "at the top" the up switch alone, and the rules also estimate the post's
height from how long each motor ran (nominal ``rise_s`` and ``lower_s``). A switch reached
while the estimate says the post is still more than half way from it (a down switch stuck
mid-travel), or a rest position whose switch lets go with the motors off, is a
``position_contradiction`` / ``position_lost`` fault with an ALARM: never DOWN. At start-up,
or after a reset, a bollard found between the two is lowered first, the safe direction.

Time: ``now`` may be any time line that never steps; the controller passes its clock's
monotonic reading, so a wall-clock step never shortens a warning or stretches a travel.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NamedTuple

from edge.events import EquipmentError, EquipmentEvent, Priority

#: Shortest warning before a rise; configuration cannot go below it.
MIN_WARNING_S = 1.0
#: A limit switch reached while the estimated height is further than this from it (as a
#: fraction of the travel) contradicts the travel time.
POSITION_TOLERANCE = 0.5


class BollardError(EquipmentError):
    """A bollard was asked to do something its safety rules forbid."""


class Position(enum.Enum):
    """Where the schedule wants the bollard when nobody passes."""

    UP = "up"
    DOWN = "down"


class Access(enum.Enum):
    """Who may pass: everybody (OPEN), granted identifiers (LIST), emergencies only (CLOSED)."""

    OPEN = "open"
    LIST = "list"
    CLOSED = "closed"


class Mode(enum.Enum):
    """Automatic (schedule and access list) or held by an operator."""

    AUTOMATIC = "automatic"
    HELD_UP = "held_up"
    HELD_DOWN = "held_down"


class Phase(enum.Enum):
    """What the bollard is doing; WARNING is down with the light on, about to rise."""

    UNKNOWN = "unknown"
    DOWN = "down"
    WARNING = "warning"
    RISING = "rising"
    UP = "up"
    LOWERING = "lowering"
    FAULT = "fault"


@dataclass(frozen=True)
class BollardTarget:
    """The schedule's decision for one bollard (the agent maps the wire setting to it)."""

    position: Position = Position.DOWN
    access: Access = Access.OPEN


@dataclass(frozen=True)
class BollardInputs:
    """Everything the rules look at: sensors, then commands."""

    up_limit: bool = False
    down_limit: bool = False
    loop_occupied: bool = False
    obstruction: bool = False
    emergency: bool = False
    #: The loop detector's own fault output (treated as an occupied loop, and alarmed).
    loop_fault: bool = False
    target: BollardTarget = BollardTarget()
    mode: Mode = Mode.AUTOMATIC
    #: End of the passage opened by the last granted identifier, if any.
    granted_until: datetime | None = None


@dataclass(frozen=True)
class BollardOutputs:
    """The three outputs; both motors on at once is refused."""

    motor_up: bool = False
    motor_down: bool = False
    warning_light: bool = False

    def __post_init__(self) -> None:
        if self.motor_up and self.motor_down:
            raise BollardError("motor_up and motor_down must never be energised together")


@dataclass(frozen=True)
class Latches:
    """What must survive a restart: cleared only by an explicit reset."""

    reversals: int = 0
    locked_out: bool = False
    faults: tuple[str, ...] = ()

    @property
    def latched(self) -> bool:
        """Whether anything keeps the bollard from rising until a reset."""
        return self.locked_out or bool(self.faults)


@dataclass(frozen=True)
class Situation:
    """What the rules remember between two steps."""

    phase: Phase
    since: datetime
    mode: Mode = Mode.AUTOMATIC
    reversals: int = 0
    locked_out: bool = False
    faults: tuple[str, ...] = ()
    #: Estimated height (0 down, 1 up) at ``since``; None when unknown.
    height: float | None = None
    #: Last seen values, to act on edges (emergency key turned, vehicle left the loop).
    emergency: bool = False
    loop_occupied: bool = False
    loop_fault: bool = False
    #: Why the bollard is lowering: "target", "reversal", "emergency" or "recovery".
    lower_cause: str = ""
    #: After a reversal, no new rise before this instant.
    retry_after: datetime | None = None
    #: The ``granted_until`` of a passage already used by a vehicle.
    spent_grant: datetime | None = None

    @property
    def latches(self) -> Latches:
        """The part of the situation that survives a restart."""
        return Latches(self.reversals, self.locked_out, self.faults)


class Step(NamedTuple):
    """The result of one step of the rules."""

    situation: Situation
    outputs: BollardOutputs
    events: list[EquipmentEvent]
    next_deadline: datetime | None


_OUTPUTS = {
    Phase.WARNING: BollardOutputs(warning_light=True),
    Phase.RISING: BollardOutputs(motor_up=True, warning_light=True),
    Phase.LOWERING: BollardOutputs(motor_down=True, warning_light=True),
}


_REST_HEIGHT = {Phase.DOWN: 0.0, Phase.WARNING: 0.0, Phase.UP: 1.0}
_MOVING = (Phase.RISING, Phase.LOWERING)


def outputs_for(phase: Phase) -> BollardOutputs:
    """The outputs a phase drives (everything off unless warning or moving)."""
    return _OUTPUTS.get(phase, BollardOutputs())


@dataclass(frozen=True)
class BollardRules:
    """The rules for one bollard, with its limits.

    Attributes:
        device_id: id of the bollard, put on every event.
        warning_s: light-on time before the up motor starts (at least 1 s).
        travel_timeout_s: longest allowed travel between the limit switches.
        max_reversals: reversals in a row that lock the bollard down.
        retry_pause_s: pause down after a reversal before the next rise.
        rise_s: nominal time of a full rise (for the height estimate).
        lower_s: nominal time of a full lowering.
    """

    device_id: str
    warning_s: float = MIN_WARNING_S
    travel_timeout_s: float = 8.0
    max_reversals: int = 3
    retry_pause_s: float = 3.0
    rise_s: float = 3.0
    lower_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("warning_s", "travel_timeout_s", "retry_pause_s", "rise_s", "lower_s"):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or value != value
                or value
                in (
                    float("inf"),
                    float("-inf"),
                )
            ):
                raise BollardError(f"{name}: must be a finite number")
        if self.rise_s <= 0 or self.lower_s <= 0:
            raise BollardError("rise_s, lower_s: must be positive")
        if max(self.rise_s, self.lower_s) >= self.travel_timeout_s:
            raise BollardError("travel_timeout_s: must exceed the nominal rise_s and lower_s")
        if self.warning_s < MIN_WARNING_S:
            raise BollardError(f"warning_s: must be at least {MIN_WARNING_S} s")
        if self.travel_timeout_s <= 0:
            raise BollardError("travel_timeout_s: must be positive")
        if self.max_reversals < 1:
            raise BollardError("max_reversals: must be at least 1")
        if self.retry_pause_s < 0:
            raise BollardError("retry_pause_s: must not be negative")

    def start(
        self, now: datetime, mode: Mode = Mode.AUTOMATIC, latches: Latches | None = None
    ) -> Situation:
        """The situation at start-up: position unknown until the first step reads the
        switches, with the ``latches`` held before the restart (a fault holds the bollard
        where it is until a reset; a lockout keeps it down)."""
        held = latches or Latches()
        phase = Phase.FAULT if held.faults else Phase.UNKNOWN
        return Situation(
            phase=phase,
            since=now,
            mode=mode,
            reversals=held.reversals,
            locked_out=held.locked_out,
            faults=held.faults,
        )

    def reset(
        self, situation: Situation, now: datetime, by: str = "operator"
    ) -> tuple[Situation, list[EquipmentEvent]]:
        """An explicit reset: clears the reversal lockout and the faults.

        Args:
            by: who reset it (``operator``, ``technician on site``), recorded in the event.

        Returns:
            The cleared situation (call :meth:`step` next) and the event to record.
        """
        held = situation.latches
        cleared = (
            ", ".join([*(["reversal lockout"] if held.locked_out else []), *held.faults])
            or "nothing latched"
        )
        events = [
            self._event(now, "reset", Priority.EVENT, f"reset by {by}: {cleared}", {"by": by})
        ]
        return self._cleared(situation, now), events

    def step(self, situation: Situation, inputs: BollardInputs, now: datetime) -> Step:
        """Decide the outputs for ``inputs`` at ``now``.

        The step runs transitions until the situation is stable, so calling it again with
        the same inputs and time changes nothing and records nothing.
        """
        events: list[EquipmentEvent] = []
        s = situation
        if inputs.mode != s.mode:
            events.append(
                self._event(
                    now,
                    "mode_changed",
                    Priority.EVENT,
                    f"mode {s.mode.value} -> {inputs.mode.value}",
                    {"mode": inputs.mode.value},
                )
            )
            # A mode is not a reset: latches stay until one is done explicitly.
            s = replace(s, mode=inputs.mode)
        if inputs.loop_fault and not s.loop_fault:
            events.append(self._fault_event(now, "loop_detector", "loop detector in fault"))
        if not inputs.loop_fault and s.loop_fault:
            events.append(
                self._event(
                    now,
                    "fault_cleared",
                    Priority.EVENT,
                    "loop detector healthy again",
                    {"fault": "loop_detector"},
                )
            )
        if inputs.emergency and not s.emergency:
            events.append(self._event(now, "emergency_lowering", Priority.EVENT, "emergency input"))
        if not inputs.emergency and s.emergency:
            events.append(self._event(now, "emergency_cleared", Priority.EVENT, "emergency input"))
        if inputs.up_limit and inputs.down_limit and "limit_switches" not in s.faults:
            s = replace(s, faults=(*s.faults, "limit_switches"))
            events.append(self._fault_event(now, "limit_switches", "both limit switches active"))
        if (
            inputs.granted_until is not None
            and now < inputs.granted_until
            and s.loop_occupied
            and not inputs.loop_occupied
        ):
            s = replace(s, spent_grant=inputs.granted_until)
        for _ in range(len(Phase) + 2):
            nxt = self._transition(s, inputs, now, events)
            if nxt is None:
                break
            s = nxt
        else:  # pragma: no cover - the transitions below always settle
            raise BollardError(f"rules did not settle in phase {s.phase.value}")
        s = replace(
            s,
            emergency=inputs.emergency,
            loop_occupied=inputs.loop_occupied,
            loop_fault=inputs.loop_fault,
        )
        return Step(s, outputs_for(s.phase), events, self._deadline(s, inputs, now))

    def wants_up(self, situation: Situation, inputs: BollardInputs, now: datetime) -> bool:
        """Whether the bollard should be up now, all things considered but the loop."""
        if inputs.emergency or situation.latches.latched:
            # A latch holds until a reset, wherever the post is: a faulted bollard the
            # emergency key lowered stays down when the key is released.
            return False
        if situation.mode is not Mode.AUTOMATIC:
            return situation.mode is Mode.HELD_UP
        target = inputs.target
        if target.position is Position.DOWN or target.access is Access.OPEN:
            return False
        granted = inputs.granted_until
        passage_open = (
            target.access is Access.LIST
            and granted is not None
            and now < granted
            and granted != situation.spent_grant
        )
        return not passage_open

    # -- transitions -------------------------------------------------------------------------

    def _transition(
        self, s: Situation, inputs: BollardInputs, now: datetime, events: list[EquipmentEvent]
    ) -> Situation | None:
        """One transition from ``s``, or None when ``s`` is stable for these inputs."""
        bottom = inputs.down_limit and not inputs.up_limit
        top = inputs.up_limit and not inputs.down_limit
        if inputs.emergency:
            if s.phase is Phase.LOWERING:
                return self._lowering(s, inputs, now, events)
            if s.phase is Phase.FAULT:
                # Once per turn of the key: a failed emergency lowering is not retried in a loop.
                if s.emergency or bottom:
                    return None
                return self._lower(s, now, "emergency", events)
            if bottom and s.phase is not Phase.RISING:
                return None if s.phase is Phase.DOWN else self._enter(s, Phase.DOWN, now)
            return self._lower(s, now, "emergency", events)
        if inputs.up_limit and inputs.down_limit and s.phase is not Phase.FAULT:
            return self._enter(s, Phase.FAULT, now)
        want = self.wants_up(s, inputs, now)
        blocked = inputs.loop_occupied or inputs.obstruction or inputs.loop_fault
        if s.phase is Phase.UNKNOWN:
            if bottom:
                return self._enter(s, Phase.DOWN, now)
            if top:
                return self._enter(s, Phase.UP, now)
            return self._lower(s, now, "recovery", events)
        if s.phase in (Phase.DOWN, Phase.WARNING) and not bottom:
            return self._fault(
                s, now, "position_lost", "down limit switch let go with the motors off", events
            )
        if s.phase is Phase.UP and not top:
            return self._fault(
                s, now, "position_lost", "up limit switch let go with the motors off", events
            )
        if s.phase is Phase.DOWN:
            if want and not blocked and (s.retry_after is None or now >= s.retry_after):
                return replace(self._enter(s, Phase.WARNING, now), retry_after=None)
            return None
        if s.phase is Phase.WARNING:
            if not want or blocked:
                return self._enter(s, Phase.DOWN, now)
            if now >= s.since + timedelta(seconds=self.warning_s):
                events.append(self._event(now, "rising", Priority.EVENT, "rising"))
                return replace(self._enter(s, Phase.RISING, now), height=0.0)
            return None
        if s.phase is Phase.RISING:
            return self._rising(s, inputs, now, want, events)
        if s.phase is Phase.UP:
            return None if want else self._lower(s, now, "target", events)
        if s.phase is Phase.LOWERING:
            return self._lowering(s, inputs, now, events)
        return None  # FAULT: held until a reset (or the emergency key lowers it)

    def _rising(
        self,
        s: Situation,
        inputs: BollardInputs,
        now: datetime,
        want: bool,
        events: list[EquipmentEvent],
    ) -> Situation | None:
        if inputs.obstruction or inputs.loop_occupied or inputs.loop_fault:
            cause = (
                "obstruction"
                if inputs.obstruction
                else "loop_occupied"
                if inputs.loop_occupied
                else "loop_detector_fault"
            )
            count = s.reversals + 1
            events.append(
                self._event(
                    now,
                    "reversed",
                    Priority.EVENT,
                    f"rise reversed ({cause}), {count} in a row",
                    {"cause": cause, "reversals": str(count)},
                )
            )
            locked = count >= self.max_reversals
            if locked:
                events.append(
                    self._event(
                        now,
                        "locked_out",
                        Priority.ALARM,
                        f"{count} reversals in a row: staying down until an operator reset",
                        {"reversals": str(count)},
                    )
                )
            lowered = self._lower(s, now, "reversal", events)
            return replace(lowered, reversals=count, locked_out=locked)
        if inputs.up_limit and not inputs.down_limit:
            height = self.height(s, now)
            if height is not None and height < 1.0 - POSITION_TOLERANCE:
                return self._fault(
                    s,
                    now,
                    "position_contradiction",
                    f"up limit switch after a travel that reaches {height:.0%} of the height",
                    events,
                )
            events.append(self._event(now, "raised", Priority.EVENT, "up"))
            return replace(self._enter(s, Phase.UP, now), reversals=0)
        if not want:
            return self._lower(s, now, "target", events)
        if now >= s.since + timedelta(seconds=self.travel_timeout_s):
            return self._fault(s, now, "rise_timeout", "up limit not reached in time", events)
        return None

    def _lowering(
        self, s: Situation, inputs: BollardInputs, now: datetime, events: list[EquipmentEvent]
    ) -> Situation | None:
        if inputs.down_limit and not inputs.up_limit:
            height = self.height(s, now)
            if height is not None and height > POSITION_TOLERANCE:
                return self._fault(
                    s,
                    now,
                    "position_contradiction",
                    f"down limit switch with the post estimated at {height:.0%} of its height",
                    events,
                )
            events.append(self._event(now, "lowered", Priority.EVENT, "down"))
            pause = s.lower_cause == "reversal"
            retry = now + timedelta(seconds=self.retry_pause_s) if pause else None
            return replace(self._enter(s, Phase.DOWN, now), retry_after=retry)
        if inputs.up_limit and inputs.down_limit and not inputs.emergency:
            return self._enter(s, Phase.FAULT, now)
        if now >= s.since + timedelta(seconds=self.travel_timeout_s):
            return self._fault(s, now, "lower_timeout", "down limit not reached in time", events)
        return None

    def _lower(
        self, s: Situation, now: datetime, cause: str, events: list[EquipmentEvent]
    ) -> Situation:
        events.append(
            self._event(now, "lowering", Priority.EVENT, f"lowering ({cause})", {"cause": cause})
        )
        height = self.height(s, now)
        return replace(self._enter(s, Phase.LOWERING, now), lower_cause=cause, height=height)

    def height(self, s: Situation, now: datetime) -> float | None:
        """The post's estimated height at ``now`` (0 down, 1 up), None when unknown."""
        if s.height is None:
            return None
        elapsed = max(0.0, (now - s.since).total_seconds())
        if s.phase is Phase.RISING:
            return min(1.0, s.height + elapsed / self.rise_s)
        if s.phase is Phase.LOWERING:
            return max(0.0, s.height - elapsed / self.lower_s)
        return s.height

    def _fault(
        self, s: Situation, now: datetime, fault: str, message: str, events: list[EquipmentEvent]
    ) -> Situation:
        events.append(self._fault_event(now, fault, message))
        faults = s.faults if fault in s.faults else (*s.faults, fault)
        return replace(self._enter(s, Phase.FAULT, now), faults=faults)

    def _enter(self, s: Situation, phase: Phase, now: datetime) -> Situation:
        # At rest the height is what the switch says; moving, the caller estimates it.
        height = _REST_HEIGHT.get(phase, s.height if phase in _MOVING else None)
        return replace(s, phase=phase, since=now, lower_cause="", height=height)

    def _cleared(self, s: Situation, now: datetime) -> Situation:
        phase = Phase.UNKNOWN if s.phase is Phase.FAULT else s.phase
        since = now if phase is not s.phase else s.since
        return replace(
            s,
            phase=phase,
            since=since,
            reversals=0,
            locked_out=False,
            faults=(),
            retry_after=None,
            height=None if phase is Phase.UNKNOWN else s.height,
        )

    def _deadline(self, s: Situation, inputs: BollardInputs, now: datetime) -> datetime | None:
        times: list[datetime] = []
        if s.phase is Phase.WARNING:
            times.append(s.since + timedelta(seconds=self.warning_s))
        if s.phase in (Phase.RISING, Phase.LOWERING):
            times.append(s.since + timedelta(seconds=self.travel_timeout_s))
        if s.retry_after is not None:
            times.append(s.retry_after)
        if inputs.granted_until is not None:
            times.append(inputs.granted_until)
        future = [t for t in times if t > now]
        return min(future) if future else None

    def _fault_event(self, now: datetime, fault: str, message: str) -> EquipmentEvent:
        return self._event(now, "fault", Priority.ALARM, message, {"fault": fault})

    def _event(
        self,
        now: datetime,
        kind: str,
        priority: Priority,
        message: str,
        attributes: dict[str, str] | None = None,
    ) -> EquipmentEvent:
        return EquipmentEvent(
            device_id=self.device_id,
            type=kind,
            priority=priority,
            at=now,
            message=message,
            attributes=attributes or {},
        )
