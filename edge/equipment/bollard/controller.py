"""Retractable bollards: configuration, the driver protocol, the gpiozero backend, the controller.

The safety rules live in :mod:`edge.equipment.bollard.rules` (pure); this module is the thin
shell around them:

- :class:`BollardConfig` is one bollard's entry of the agent configuration (pins, limits).
- :class:`BollardDriver` is what a backend implements; :class:`GpioBollard` drives gpiozero
  devices on any pin factory, and :mod:`edge.equipment.sim.bollard` simulates the whole
  bollard on gpiozero mock pins; :mod:`edge.equipment.registry` picks one from the config.
- :class:`BollardController` owns a driver, runs the rules on every input change and at
  their deadlines (on the clock's monotonic reading), keeps the rules' latches in a
  :class:`~edge.equipment.bollard.latches.LatchStore`, emits events and answers
  :meth:`BollardController.state`. Any exception while it evaluates (a sensor read that
  raises, in a pin callback or a timer) switches the motors off at once and ends
  :meth:`BollardController.run` with :class:`BollardFailure`, for the agent's supervisor
  to alarm and restart it.
- :func:`target_from_setting` is the one mapping from a schedule's bollard setting to the
  rules' target.

Wiring of the safety inputs (vehicle loop, pressure edge, emergency key, and the loop
detector's fault output): fail-safe by default. Their contacts are normally closed, so an
open circuit (a cut wire, a dead detector, a loose terminal) reads occupied, obstructed,
emergency, in fault. ``safety_contacts = "normally_open"`` makes a cut wire read clear and
is refused unless ``supervised_wiring = true`` says those circuits are supervised by other
means (end-of-line resistors read by the detector, a detector fault output wired to
``loop_fault_pin``). Limit switches are normally open; a stuck one is caught by the rules
(travel time). ``reset_pin`` is an optional key switch for the technician on site.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from gpiozero import DigitalInputDevice, DigitalOutputDevice, GPIOZeroError

from domain.access import AccessDecision, LocalAccessList
from domain.schedule.model import AccessPolicy, BollardPosition, BollardSetting
from edge.equipment.bollard.config import (
    INPUT_PINS,
    OPTIONAL_INPUT_PINS,
    BollardConfig,
)
from edge.equipment.bollard.latches import LatchStore, MemoryLatches
from edge.equipment.bollard.rules import (
    Access,
    BollardError,
    BollardInputs,
    BollardOutputs,
    BollardTarget,
    Latches,
    Mode,
    Phase,
    Position,
)
from edge.equipment.device import BOLLARD, DeviceKindValue
from edge.events import (
    EquipmentConfigError,
    EquipmentError,
    EquipmentEvent,
    EventSink,
    Priority,
)
from foundation.clock import Clock
from protos.ondijon.v1 import schedule_pb2, state_pb2

#: Where the rules' time line starts: the clock's monotonic seconds are added to it.
MONOTONIC_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class BollardFailure(EquipmentError):
    """A bollard controller stopped on an unexpected error; its motors were switched off.

    Attributes:
        device_id: the bollard.
        cause: the error that stopped it.
    """

    def __init__(self, device_id: str, cause: BaseException) -> None:
        super().__init__(f"bollard {device_id}: {type(cause).__name__}: {cause}")
        self.device_id = device_id
        self.cause = cause


_POSITIONS = {BollardPosition.UP: Position.UP, BollardPosition.DOWN: Position.DOWN}
_ACCESS = {
    AccessPolicy.OPEN: Access.OPEN,
    AccessPolicy.LIST: Access.LIST,
    AccessPolicy.CLOSED: Access.CLOSED,
}


def target_from_setting(setting: BollardSetting) -> BollardTarget:
    """The one mapping from a schedule's bollard setting to the rules' target.

    A setting may leave one aspect unsaid:

    - no position: it follows the access policy (OPEN: down; LIST, CLOSED: up);
    - no access: UP means CLOSED (up is the barrier: nobody passes but emergencies), DOWN
      means OPEN;
    - neither: the default target, down and open (a bollard never rises on a guess).
    """
    access = _ACCESS.get(setting.access) if setting.access is not None else None
    position = _POSITIONS.get(setting.position) if setting.position is not None else None
    if position is None and access is None:
        return BollardTarget()
    if position is None:
        position = Position.DOWN if access is Access.OPEN else Position.UP
    if access is None:
        access = Access.OPEN if position is Position.DOWN else Access.CLOSED
    return BollardTarget(position=position, access=access)


@dataclass(frozen=True)
class BollardReadings:
    """The inputs as the driver reads them (true: active; for the safety inputs, an open
    circuit is active)."""

    up_limit: bool = False
    down_limit: bool = False
    loop_occupied: bool = False
    obstruction: bool = False
    emergency: bool = False
    loop_fault: bool = False
    reset: bool = False


class BollardDriver(Protocol):
    """What a bollard backend implements."""

    def read(self) -> BollardReadings:
        """The inputs now."""
        ...

    def drive(self, outputs: BollardOutputs) -> None:
        """Set the outputs, switching off before switching on."""
        ...

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from any thread) whenever an input changes."""
        ...

    async def run(self) -> None:
        """Whatever the backend needs in the background; runs until cancelled."""
        ...

    def close(self) -> None:
        """Release the pins (motors off)."""
        ...


class GpioBollard:
    """A bollard wired to gpiozero devices, on any pin factory."""

    def __init__(self, config: BollardConfig, *, pin_factory: Any = None) -> None:
        """Claim the pins.

        Raises:
            EquipmentConfigError: naming the pin gpiozero refused (invalid or in use).
        """
        self._callback: Callable[[], None] | None = None
        self._devices: list[Any] = []
        self._config = config
        try:
            self._motor_up = self._output(config, "motor_up_pin", pin_factory)
            self._motor_down = self._output(config, "motor_down_pin", pin_factory)
            self._light = self._output(config, "warning_light_pin", pin_factory)
            self._inputs = {
                name: self._input(config, name, pin_factory)
                for name in INPUT_PINS + OPTIONAL_INPUT_PINS
                if getattr(config, name) is not None
            }
        except BaseException:
            self.close()
            raise

    def _output(self, config: BollardConfig, name: str, pin_factory: Any) -> Any:
        try:
            device = DigitalOutputDevice(
                getattr(config, name), initial_value=False, pin_factory=pin_factory
            )
        except GPIOZeroError as exc:
            raise EquipmentConfigError(config.field(name), str(exc)) from exc
        self._devices.append(device)
        return device

    def _input(self, config: BollardConfig, name: str, pin_factory: Any) -> Any:
        try:
            device = DigitalInputDevice(
                getattr(config, name), pull_up=config.inputs_pull_up, pin_factory=pin_factory
            )
        except GPIOZeroError as exc:
            raise EquipmentConfigError(config.field(name), str(exc)) from exc
        self._devices.append(device)
        device.when_activated = self._changed
        device.when_deactivated = self._changed
        return device

    def _changed(self) -> None:
        if self._callback is not None:
            self._callback()

    def read(self) -> BollardReadings:
        active: dict[str, bool] = {}
        for name, device in self._inputs.items():
            # gpiozero's is_active: the contact is closed (pull-up: the pin reads low).
            closed = bool(device.is_active)
            active[name] = not closed if self._config.normally_closed(name) else closed
        return BollardReadings(
            up_limit=active["up_limit_pin"],
            down_limit=active["down_limit_pin"],
            loop_occupied=active["loop_pin"],
            obstruction=active["edge_pin"],
            emergency=active["emergency_pin"],
            loop_fault=active.get("loop_fault_pin", False),
            reset=active.get("reset_pin", False),
        )

    def drive(self, outputs: BollardOutputs) -> None:
        # Off before on, so a reversal never has both motor contactors closed, even briefly.
        if not outputs.motor_up:
            self._motor_up.off()
        if not outputs.motor_down:
            self._motor_down.off()
        if outputs.motor_up:
            self._motor_up.on()
        if outputs.motor_down:
            self._motor_down.on()
        self._light.value = outputs.warning_light
        if self._motor_up.value and self._motor_down.value:
            self._motor_up.off()
            self._motor_down.off()
            raise BollardError("both motor outputs were on: switched off")

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    async def run(self) -> None:
        # gpiozero watches the pins in its own threads; nothing to do here.
        await asyncio.Event().wait()

    def close(self) -> None:
        for device in self._devices:
            with contextlib.suppress(Exception):
                device.close()
        self._devices.clear()


_MOTION = {
    Phase.UNKNOWN: state_pb2.BOLLARD_MOTION_UNSPECIFIED,
    Phase.DOWN: state_pb2.BOLLARD_MOTION_DOWN,
    Phase.WARNING: state_pb2.BOLLARD_MOTION_DOWN,
    Phase.RISING: state_pb2.BOLLARD_MOTION_RISING,
    Phase.UP: state_pb2.BOLLARD_MOTION_UP,
    Phase.LOWERING: state_pb2.BOLLARD_MOTION_LOWERING,
    Phase.FAULT: state_pb2.BOLLARD_MOTION_FAULT,
}
_MODE = {
    Mode.AUTOMATIC: state_pb2.BOLLARD_MODE_AUTOMATIC,
    Mode.HELD_UP: state_pb2.BOLLARD_MODE_HELD_UP,
    Mode.HELD_DOWN: state_pb2.BOLLARD_MODE_HELD_DOWN,
}


class BollardController:
    """Runs one bollard: its rules, its driver, its access list, its latches.

    Until the schedule says otherwise the target is down with free passage: a bollard never
    rises on a guess. Methods other than :meth:`run` are called from the event loop's thread;
    driver callbacks may come from any thread. The rules run on the clock's monotonic
    reading; events are stamped with the wall clock.
    """

    def __init__(
        self,
        *,
        config: BollardConfig,
        driver: BollardDriver,
        clock: Clock,
        sink: EventSink,
        access_list: LocalAccessList | None = None,
        target: BollardTarget | None = None,
        mode: Mode = Mode.AUTOMATIC,
        latches: LatchStore | None = None,
    ) -> None:
        self._config = config
        self._rules = config.rules()
        self._driver = driver
        self._clock = clock
        self._sink = sink
        self._access = access_list or LocalAccessList()
        self._target = target or BollardTarget()
        self._mode = mode
        self._source = "default"
        self._granted_until: datetime | None = None
        self._latch_store = latches or MemoryLatches()
        self._latches = self._latch_store.load(config.device_id)
        self._situation = self._rules.start(self._mono(), mode, self._latches)
        self._readings = BollardReadings()
        self._deadline: datetime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rearm = asyncio.Event()
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._reset_held = False

    @property
    def device_id(self) -> str:
        """The bollard's id."""
        return self._config.device_id

    @property
    def kind(self) -> DeviceKindValue:
        """A bollard (:class:`edge.equipment.device.Device`)."""
        return BOLLARD

    def close(self) -> None:
        """Release the driver's pins (call after :meth:`run` has ended)."""
        self._driver.close()

    @property
    def driver(self) -> BollardDriver:
        """The backend (the bench drives a simulated bollard's car and obstacles through it)."""
        return self._driver

    @property
    def phase(self) -> Phase:
        """What the bollard is doing, in the rules' detail."""
        return self._situation.phase

    @property
    def latches(self) -> Latches:
        """What holds until an explicit reset (persisted on every change)."""
        return self._situation.latches

    async def run(self) -> None:
        """Run the bollard until cancelled; the motors are switched off on the way out.

        Each run starts from the limit switches (position unknown) with the persisted
        latches, so a supervisor may call it again after a failure.

        Raises:
            BollardFailure: an evaluation raised (a sensor read, a pin write); the motors
                were switched off before it was raised.
        """
        self._failure = None
        self._failed.clear()
        self._situation = self._rules.start(self._mono(), self._mode, self._latches)
        self._deadline = None
        self._loop = asyncio.get_running_loop()
        self._driver.on_change(self._input_changed)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._driver.run())
                group.create_task(self._follow_deadlines())
                group.create_task(self._watch_failure())
        except* BollardFailure as failures:
            raise failures.exceptions[0] from None
        except* Exception as errors:
            # The driver's own loop failed: same treatment as a failed evaluation.
            raise self._fail(errors.exceptions[0]) from None
        finally:
            self._loop = None
            self._safe_outputs()

    async def fail_safe(self) -> None:
        """Motors off (what a failure leaves; :meth:`run` already did it before raising)."""
        self._safe_outputs()

    def apply(self, target: BollardTarget, source: str = "default") -> None:
        """Follow a new schedule decision (``source`` as in ``DeviceState.source``)."""
        self._target = target
        self._source = source
        self._evaluate_guarded()

    def set_mode(self, mode: Mode) -> None:
        """An operator's mode. It is not a reset: a lockout or a fault holds."""
        self._mode = mode
        self._evaluate_guarded()

    def reset(self, by: str = "operator") -> None:
        """An explicit reset (``by`` an operator or a technician on site): clears a
        reversal lockout and the faults, durably, and records who did it."""
        self._situation, events = self._rules.reset(self._situation, self._mono(), by)
        self._keep_latches()
        self._emit(events)
        self._evaluate_guarded()

    def set_access_list(self, access_list: LocalAccessList) -> None:
        """Use a new (already validated) access list from now on."""
        self._access = access_list

    def present(self, identifier: str) -> AccessDecision:
        """An identifier shown at the reader; lowers the bollard for a passage if granted.

        The identifier is checked locally and never recorded in clear.
        """
        decision = self._access.check(identifier, self.device_id, self._clock.now())
        if decision.granted:
            refusal = self._policy_refusal()
            if refusal:
                decision = AccessDecision(False, refusal, decision.digest_prefix, decision.label)
        attributes = {"credential": decision.digest_prefix, "reason": decision.reason}
        if decision.granted:
            self._granted_until = self._mono() + timedelta(seconds=self._config.passage_s)
            attributes["label"] = decision.label
            message = f"passage granted to {decision.digest_prefix}"
        else:
            message = f"passage refused to {decision.digest_prefix}: {decision.reason}"
        kind = "access_granted" if decision.granted else "access_refused"
        self._emit([self._event(kind, message, attributes)])
        self._evaluate_guarded()
        return decision

    def state(self) -> state_pb2.DeviceState:
        """The bollard's state for the orchestrator."""
        s = self._situation
        faults = list(s.faults)
        if s.locked_out:
            faults.append("reversal_lockout")
        if self._failure is not None:
            faults.append("controller_failed")
        message = state_pb2.DeviceState(
            device_id=self.device_id,
            kind=schedule_pb2.DEVICE_KIND_BOLLARD,
            source="sensor" if self._readings.emergency else self._source,
            bollard=state_pb2.BollardState(
                motion=_MOTION[s.phase],
                mode=_MODE[s.mode],
                loop_occupied=self._readings.loop_occupied,
                emergency=self._readings.emergency,
                reversals=s.reversals,
                faults=faults,
            ),
        )
        message.observed_at.FromDatetime(self._clock.now())
        return message

    # -- shell ---------------------------------------------------------------------------------

    def _mono(self) -> datetime:
        return MONOTONIC_EPOCH + timedelta(seconds=self._clock.monotonic())

    def _policy_refusal(self) -> str:
        if self._mode is not Mode.AUTOMATIC:
            return f"mode_{self._mode.value}"
        if self._target.access is Access.CLOSED:
            return "policy_closed"
        return ""

    def _input_changed(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._evaluate_guarded)

    async def _follow_deadlines(self) -> None:
        while True:
            self._evaluate()
            self._rearm.clear()
            deadline = self._deadline
            if deadline is None:
                await self._rearm.wait()
                continue
            wait = (deadline - self._mono()).total_seconds()
            sleeper = asyncio.ensure_future(self._clock.sleep(wait))
            rearmed = asyncio.ensure_future(self._rearm.wait())
            try:
                await asyncio.wait({sleeper, rearmed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                rearmed.cancel()
                await asyncio.gather(sleeper, rearmed, return_exceptions=True)

    async def _watch_failure(self) -> None:
        await self._failed.wait()
        assert self._failure is not None
        raise BollardFailure(self.device_id, self._failure)

    def _evaluate_guarded(self) -> None:
        """Evaluate from a callback or a command: a failure stops the controller safely."""
        try:
            self._evaluate()
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> BollardFailure:
        """Motors off now, and have :meth:`run` end with the failure."""
        self._safe_outputs()
        if self._failure is None:
            self._failure = exc
        self._failed.set()
        return BollardFailure(self.device_id, exc)

    def _safe_outputs(self) -> None:
        # Best effort: the pin that failed may be one of these; the others still go off.
        with contextlib.suppress(Exception):
            self._driver.drive(BollardOutputs())

    def _evaluate(self) -> None:
        if self._loop is None or self._failure is not None:
            return  # nothing moves before run(), nor after a failure until a restart
        now = self._mono()
        self._readings = readings = self._driver.read()
        if readings.reset and not self._reset_held:
            self._situation, events = self._rules.reset(self._situation, now, "technician on site")
            self._emit(events)
        self._reset_held = readings.reset
        inputs = BollardInputs(
            up_limit=readings.up_limit,
            down_limit=readings.down_limit,
            loop_occupied=readings.loop_occupied,
            obstruction=readings.obstruction,
            emergency=readings.emergency,
            loop_fault=readings.loop_fault,
            target=self._target,
            mode=self._mode,
            granted_until=self._granted_until,
        )
        self._situation, outputs, events, deadline = self._rules.step(self._situation, inputs, now)
        self._driver.drive(outputs)
        self._keep_latches()
        self._emit(events)
        if deadline != self._deadline:
            self._deadline = deadline
            self._rearm.set()

    def _keep_latches(self) -> None:
        latches = self._situation.latches
        if latches != self._latches:
            # Durable before anything else happens: a power cut right after a lockout must
            # not bring the bollard back unlocked.
            self._latch_store.save(self.device_id, latches)
            self._latches = latches

    def _emit(self, events: list[EquipmentEvent]) -> None:
        wall = self._clock.now()
        for event in events:
            self._sink(replace(event, at=wall))

    def _event(self, kind: str, message: str, attributes: dict[str, str]) -> EquipmentEvent:
        return EquipmentEvent(
            device_id=self.device_id,
            type=kind,
            priority=Priority.EVENT,
            at=self._clock.now(),
            message=message,
            attributes=attributes,
        )


__all__ = [
    "BollardConfig",
    "BollardController",
    "BollardDriver",
    "BollardFailure",
    "BollardReadings",
    "GpioBollard",
    "target_from_setting",
]
