"""Traffic-signal controllers: the driver protocol, its backends and the agent's controller shell.

The agent never drives signal lamps: a controller in the cabinet does (NTCIP 1202 calls it
an actuated signal controller). The agent selects the timing plan and the mode (normal
plan, flashing amber, dark) that the schedule engine decides, forwards rate-limited bus
priority requests and watches status (plan, conflict-monitor fault, door, communication).

- :class:`SignalControllerDriver` is what a backend implements;
  :mod:`edge.equipment.registry` picks one from :class:`SignalConfig`: ``simulated``
  (:mod:`edge.equipment.sim.crossing`, lamps on gpiozero pins with its own conflict
  monitor) or ``gpio`` (:class:`GpioSignalController`, a controller wired by contacts:
  plan-select and flash/dark outputs, fault and door inputs).
- :class:`SignalController` is the shell: every plan is validated by
  :mod:`domain.signals.plans` and checked against the crossing's safety card
  (:mod:`domain.signals.safety_card`, from the cabinet's configuration) right before it is
  handed over; a refused plan leaves the running one in place and raises an ALARM event,
  and faults and lost communication are reported and alarmed.
- A backend that cannot observe the controller's liveness or confirm the plan it runs
  says so in its status (``liveness_observed``, ``plan_confirmed``); the shell then
  reports the crossing as unconfirmed (an ALARM, plan and mode unknown), never as healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeAlias

from gpiozero import DigitalInputDevice, DigitalOutputDevice, GPIOZeroError

from domain.signals.plans import (
    Intersection,
    PlanStructureError,
    SignalPlan,
    SignalPlanError,
    SignalPlans,
    validate_intersection,
    validate_plan,
    validate_plans,
)
from domain.signals.safety_card import SafetyCard
from edge.equipment.device import SIGNAL, DeviceKindValue
from edge.equipment.signal.bus_priority import (
    BusPriorityDecision,
    BusPriorityLimiter,
    BusPriorityLimits,
    BusPriorityOutcome,
    BusPriorityRequest,
)
from edge.equipment.signal.config import (
    GpioBackendConfig,
    Pin,
)
from edge.events import EquipmentEvent, EventSink, Priority
from foundation.clock import Clock
from protos.ondijon.v1 import schedule_pb2, state_pb2

SignalModeValue: TypeAlias = schedule_pb2.SignalMode.ValueType
NORMAL = schedule_pb2.SIGNAL_MODE_NORMAL
FLASHING_AMBER = schedule_pb2.SIGNAL_MODE_FLASHING_AMBER
DARK = schedule_pb2.SIGNAL_MODE_DARK
UNSPECIFIED = schedule_pb2.SIGNAL_MODE_UNSPECIFIED


class SignalDriverError(Exception):
    """A signal controller did not carry out a command."""


class SignalCommunicationError(SignalDriverError):
    """The controller cannot be reached (cable cut, controller off, bus error)."""


class SignalRefusedError(SignalDriverError):
    """The controller answered and refused the command (e.g. a plan it cannot run)."""


@dataclass(frozen=True)
class SignalStatus:
    """What a controller reports (the fields of ``SignalState``).

    Attributes:
        plan: id of the selected plan, "" if none.
        mode: the mode actually shown (flashing amber after a fault, whatever was asked).
        conflict_fault: the conflict monitor tripped (latched until a technician resets it).
        door_open: the cabinet door is open.
        communication_ok: the controller hears the agent (its watchdog has not tripped).
        faults: short fault codes, e.g. ``conflict:north/east``, ``agent_watchdog``.
        liveness_observed: the backend sees whether the controller runs (an alive input,
            an answer on a bus); False: it cannot tell a dead controller from a live one.
        plan_confirmed: the backend knows the controller runs ``plan`` with the timings
            the agent validated; False: it only sent a selection.
    """

    plan: str
    mode: SignalModeValue
    conflict_fault: bool = False
    door_open: bool = False
    communication_ok: bool = True
    faults: tuple[str, ...] = ()
    liveness_observed: bool = True
    plan_confirmed: bool = True


class SignalControllerDriver(Protocol):
    """One signal controller, whatever the wiring. Methods raise :class:`SignalDriverError`."""

    async def set_plan(self, intersection: Intersection, plan: SignalPlan) -> None:
        """Select ``plan`` (already validated by the caller) for the given crossing."""
        ...

    async def set_mode(self, mode: SignalModeValue) -> None:
        """Run the plan (NORMAL), flash amber, or go dark."""
        ...

    async def request_bus_priority(self, approach: str, bus_id: str, expires_at: datetime) -> None:
        """Ask for priority on ``approach`` (a group id) until ``expires_at``."""
        ...

    async def heartbeat(self) -> None:
        """Tell the controller the agent is alive (it flashes amber if this stops)."""
        ...

    async def read_status(self) -> SignalStatus:
        """The controller's current status."""
        ...

    async def run(self) -> None:
        """The backend's own timing loop, until cancelled."""
        ...

    def close(self) -> None:
        """Release pins and links."""
        ...


# --- configuration --------------------------------------------------------------------------


# --- gpio backend ---------------------------------------------------------------------------


class GpioSignalController:
    """A controller wired by contacts: plan-select bits, flash and dark forcing, two inputs.

    It only *selects* a plan number: the timings that run are the ones programmed in the
    controller, which the agent never sees, so its status never confirms the plan
    (``plan_confirmed`` is False). Without an ``alive_pin`` it cannot tell a dead controller
    from a live one either (``liveness_observed`` False). The shell reports both as
    unconfirmed, with an alarm: the controller's own programming and conflict monitor are
    the authority for such a crossing (see SAFETY.md).
    """

    def __init__(self, *, config: GpioBackendConfig, clock: Clock, pin_factory: Any = None) -> None:
        self._config = config
        self._clock = clock
        self._devices: list[DigitalOutputDevice | DigitalInputDevice] = []

        def out(pin: Pin) -> DigitalOutputDevice:
            device = DigitalOutputDevice(pin, initial_value=False, pin_factory=pin_factory)
            self._devices.append(device)
            return device

        def inp(pin: Pin | None) -> DigitalInputDevice | None:
            if pin is None:
                return None
            device = DigitalInputDevice(pin, pull_up=False, pin_factory=pin_factory)
            self._devices.append(device)
            return device

        try:
            self._plan_bits = [out(p) for p in config.plan_pins]
            # Flash from power-up until the agent selects a plan: the safe state.
            self._flash = out(config.flash_pin)
            self._flash.on()
            self._dark = out(config.dark_pin) if config.dark_pin is not None else None
            self._beat = out(config.heartbeat_pin) if config.heartbeat_pin is not None else None
            self._priority = {a: out(p) for a, p in config.priority_pins.items()}
            self._fault = inp(config.fault_pin)
            self._door = inp(config.door_pin)
            self._alive = inp(config.alive_pin)
        except GPIOZeroError as exc:
            self.close()
            raise SignalCommunicationError(f"cannot open the controller's pins: {exc}") from exc
        self._plan = ""
        self._mode: SignalModeValue = FLASHING_AMBER
        self._priority_until: dict[str, datetime] = {}

    async def set_plan(self, intersection: Intersection, plan: SignalPlan) -> None:
        number = self._config.plan_numbers.get(plan.id)
        if number is None:
            raise SignalRefusedError(f"plan {plan.id!r} has no plan-select number")
        with _pin_errors():
            for bit, device in enumerate(self._plan_bits):
                device.value = (number >> bit) & 1
        self._plan = plan.id

    async def set_mode(self, mode: SignalModeValue) -> None:
        if mode == DARK and self._dark is None:
            raise SignalRefusedError("no dark_pin wired: cannot go dark")
        if mode not in (NORMAL, FLASHING_AMBER, DARK):
            raise SignalRefusedError(f"unknown mode {mode}")
        with _pin_errors():
            self._flash.value = mode == FLASHING_AMBER
            if self._dark is not None:
                self._dark.value = mode == DARK
        self._mode = mode

    async def request_bus_priority(self, approach: str, bus_id: str, expires_at: datetime) -> None:
        device = self._priority.get(approach)
        if device is None:
            raise SignalRefusedError(f"no priority input wired for approach {approach!r}")
        with _pin_errors():
            device.on()
        self._priority_until[approach] = max(
            expires_at, self._priority_until.get(approach, expires_at)
        )

    async def heartbeat(self) -> None:
        if self._beat is not None:
            with _pin_errors():
                self._beat.toggle()

    async def read_status(self) -> SignalStatus:
        with _pin_errors():
            fault = bool(self._fault is not None and self._fault.is_active)
            door = bool(self._door is not None and self._door.is_active)
            alive = self._alive is not None and bool(self._alive.is_active)
        if self._alive is not None and not alive:
            raise SignalCommunicationError("the controller's alive input is low")
        return SignalStatus(
            plan=self._plan,
            mode=FLASHING_AMBER if fault else self._mode,
            conflict_fault=fault,
            door_open=door,
            communication_ok=True,
            faults=("conflict_monitor",) if fault else (),
            liveness_observed=self._alive is not None,
            plan_confirmed=False,
        )

    async def run(self) -> None:
        while True:
            now = self._clock.now()
            for approach, until in list(self._priority_until.items()):
                if until <= now:
                    del self._priority_until[approach]
                    with _pin_errors():
                        self._priority[approach].off()
            await self._clock.sleep_until(_next_second(now))

    def close(self) -> None:
        for device in self._devices:
            device.close()
        self._devices.clear()


@contextlib.contextmanager
def _pin_errors() -> Iterator[None]:
    """Turns gpiozero failures into the driver's communication error."""
    try:
        yield
    except GPIOZeroError as exc:
        raise SignalCommunicationError(str(exc)) from exc


def _unconfirmed(status: SignalStatus) -> list[str]:
    """What the backend could not confirm, as fault codes."""
    codes = []
    if not status.liveness_observed:
        codes.append("liveness_unobserved")
    if not status.plan_confirmed:
        codes.append("plan_unconfirmed")
    return codes


def _next_second(now: datetime) -> datetime:
    return now.replace(microsecond=0) + timedelta(seconds=1)


# --- the agent's shell ----------------------------------------------------------------------


class SignalController:
    """Applies the schedule's plan and mode to one controller and reports what it does.

    Nothing reaches the driver unchecked: a plans document is validated as a whole when it
    arrives and each plan again right before it is handed over. A refusal leaves the running
    plan in place, raises an ALARM event and raises :class:`SignalPlanError` to the caller.
    When the controller cannot be reached the wanted plan and mode are kept and re-sent as
    soon as it answers again; the controller itself flashes amber meanwhile.
    """

    def __init__(
        self,
        *,
        device_id: str,
        driver: SignalControllerDriver,
        clock: Clock,
        sink: EventSink,
        card: SafetyCard,
        bus_priority: BusPriorityLimits | None = None,
        poll_interval_s: float = 2.0,
    ) -> None:
        self._id = device_id
        self._card = card
        self._driver = driver
        self._clock = clock
        self._sink = sink
        self._limiter = BusPriorityLimiter(device_id, bus_priority)
        self._poll_interval_s = poll_interval_s
        self._plans: SignalPlans | None = None
        self._wanted_plan = ""
        self._wanted_mode: SignalModeValue = UNSPECIFIED
        self._source = ""
        self._sent: tuple[Intersection, SignalPlan] | None = None
        self._sent_mode: SignalModeValue = UNSPECIFIED
        self._link_ok = True
        self._status: SignalStatus | None = None
        self._observed_at: datetime | None = None

    @property
    def device_id(self) -> str:
        """The controller's id."""
        return self._id

    @property
    def kind(self) -> DeviceKindValue:
        """A signal (:class:`edge.equipment.device.Device`)."""
        return SIGNAL

    def close(self) -> None:
        """Release the driver (its pins or connection)."""
        self._driver.close()

    @property
    def driver(self) -> SignalControllerDriver:
        """The backend (the bench reaches a simulated controller through it)."""
        return self._driver

    @property
    def plans(self) -> SignalPlans | None:
        """The validated plans document in force, if any."""
        return self._plans

    @property
    def card(self) -> SafetyCard:
        """The crossing's safety card, from the cabinet's configuration."""
        return self._card

    def check(self, plans: SignalPlans) -> None:
        """Refuse ``plans`` unless it is valid and at least as strict as the card.

        Raises:
            SignalPlanError: naming the field.
        """
        validate_plans(plans)
        self._card.check(plans)

    async def fail_safe(self) -> None:
        """Ask the controller to flash amber (best effort: it is what a failure leaves)."""
        with contextlib.suppress(Exception):
            await self._driver.set_mode(FLASHING_AMBER)
            self._sent_mode = FLASHING_AMBER

    async def load_plans(self, plans: SignalPlans) -> None:
        """Adopt a new plans document; the running plan is re-sent if its timings changed.

        A running plan the new document no longer has keeps running until the schedule
        names another.

        Raises:
            SignalPlanError: the document is refused (an ALARM is recorded, nothing changes).
            SignalRefusedError: the controller refused the running plan's new version (an
                ALARM is recorded, the previous document stays in force).
        """
        try:
            self.check(plans)
        except SignalPlanError as exc:
            self._refused("signal.plans_refused", exc)
            raise
        previous, self._plans = self._plans, plans
        if self._wanted_plan and plans.plan(self._wanted_plan) is not None:
            try:
                await self._push()
            except SignalRefusedError as exc:
                self._plans = previous
                self._alarm("signal.plans_refused", f"controller refused: {exc}")
                raise

    async def apply(
        self, plan_id: str | None, mode: SignalModeValue | enum.Enum, *, source: str = ""
    ) -> None:
        """Select ``plan_id`` and ``mode`` (from the schedule engine or an override).

        Args:
            plan_id: plan of the loaded document; "" or None keeps the current one (none yet:
                the controller's own plan).
            mode: NORMAL, FLASHING_AMBER or DARK, as a ``SignalMode`` proto value or an enum
                with the same values; UNSPECIFIED keeps the current one.
            source: what decided it, e.g. ``program:weekday`` (reported in the state).

        Raises:
            SignalPlanError: unknown or invalid plan, or unknown mode (ALARM recorded, the
                running plan and mode stay).
            SignalRefusedError: the controller refused (ALARM recorded, nothing changes).
        """
        value = mode.value if isinstance(mode, enum.Enum) else mode
        new_plan = plan_id or self._wanted_plan
        try:
            if value not in (NORMAL, FLASHING_AMBER, DARK, UNSPECIFIED):
                raise PlanStructureError("signal_mode", f"unknown mode {value}")
            if new_plan:
                self._checked(new_plan)
        except SignalPlanError as exc:
            self._refused("signal.plan_refused", exc)
            raise
        new_mode = self._wanted_mode if value == UNSPECIFIED else SignalModeValue(value)
        previous = (self._wanted_plan, self._wanted_mode, self._source)
        self._wanted_plan, self._wanted_mode, self._source = new_plan, new_mode, source
        try:
            await self._push()
        except SignalRefusedError as exc:
            self._wanted_plan, self._wanted_mode, self._source = previous
            self._alarm("signal.plan_refused", f"controller refused: {exc}", plan=new_plan)
            raise

    async def request_bus_priority(self, approach: str, bus_id: str) -> BusPriorityDecision | None:
        """Rate-limit a bus's request and forward it if granted.

        Returns:
            The decision (its event already recorded), or None when ``approach`` is not a
            group of the crossing (recorded as ``signal.bus_priority.unknown_approach``).
        """
        now = self._clock.now()
        if self._plans is None or self._plans.intersection.group(approach) is None:
            self._emit(
                "signal.bus_priority.unknown_approach",
                Priority.EVENT,
                f"bus {bus_id}: no group {approach!r} at this crossing",
                approach=approach,
                bus_id=bus_id,
            )
            return None
        decision = self._limiter.request(BusPriorityRequest(approach, bus_id), now)
        self._sink(decision.event)
        if decision.outcome is BusPriorityOutcome.GRANTED and decision.expires_at is not None:
            try:
                await self._driver.request_bus_priority(approach, bus_id, decision.expires_at)
            except SignalCommunicationError as exc:
                self._link_lost(exc)
            except SignalRefusedError as exc:
                self._emit("signal.bus_priority.refused", Priority.EVENT, str(exc), bus_id=bus_id)
        return decision

    async def poll(self) -> SignalStatus | None:
        """Heartbeat, read the status, record alarms and events for what changed.

        Returns:
            The status, or None when the controller cannot be reached.
        """
        try:
            await self._driver.heartbeat()
            if not self._link_ok:
                self._link_ok = True
                self._emit("signal.communication_restored", Priority.EVENT, "controller answers")
                try:
                    await self._push()
                except SignalRefusedError as exc:
                    self._alarm("signal.plan_refused", f"controller refused on reconnect: {exc}")
            status = await self._driver.read_status()
        except SignalDriverError as exc:
            self._link_lost(exc)
            return None
        self._note(status)
        return status

    async def run(self) -> None:
        """Run the driver's loop and poll every ``poll_interval_s`` until cancelled."""
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._driver.run())
                while True:
                    await self.poll()
                    for event in self._limiter.expire(self._clock.now()):
                        self._sink(event)
                    await self._clock.sleep(self._poll_interval_s)
        except* Exception as failures:
            # The first error itself, so the supervisor's alarm names it.
            raise failures.exceptions[0] from None

    def state(self) -> state_pb2.DeviceState:
        """The controller as last seen, for the orchestrator (kind DEVICE_KIND_SIGNAL)."""
        status = self._status or SignalStatus(plan="", mode=UNSPECIFIED, communication_ok=False)
        faults = list(status.faults)
        if not self._link_ok:
            faults.append("communication_lost")
        unconfirmed = _unconfirmed(status)
        faults += unconfirmed
        state = state_pb2.DeviceState(
            device_id=self._id,
            kind=schedule_pb2.DEVICE_KIND_SIGNAL,
            source=self._source,
            signal=state_pb2.SignalState(
                # Unconfirmed is unknown: what was asked is not reported as what runs.
                plan="" if unconfirmed else status.plan,
                mode=UNSPECIFIED if unconfirmed else status.mode,
                conflict_fault=status.conflict_fault,
                door_open=status.door_open,
                communication_ok=(
                    self._link_ok and status.communication_ok and status.liveness_observed
                ),
                faults=faults,
                safety_card=self._card.to_proto(),
                unconfirmed=bool(unconfirmed),
            ),
        )
        state.observed_at.FromDatetime(self._observed_at or self._clock.now())
        return state

    def _checked(self, plan_id: str) -> tuple[Intersection, SignalPlan]:
        if self._plans is None:
            raise PlanStructureError("signal_plan", f"no plans loaded, cannot run {plan_id!r}")
        plan = self._plans.plan(plan_id)
        if plan is None:
            known = ", ".join(p.id for p in self._plans.plans)
            raise PlanStructureError("signal_plan", f"unknown plan {plan_id!r} (known: {known})")
        validate_intersection(self._plans.intersection)
        self._card.check(self._plans)
        field = f"plans[{self._plans.plans.index(plan)}]"
        validate_plan(plan, self._plans.intersection, field=field)
        return self._plans.intersection, plan

    async def _push(self) -> None:
        """Hand the wanted plan and mode to the controller where they differ from what it has."""
        try:
            # A new document may have dropped the wanted plan: the controller keeps its own
            # until the schedule names another.
            known = self._plans is not None and self._plans.plan(self._wanted_plan) is not None
            if self._wanted_plan and known:
                wanted = self._checked(self._wanted_plan)
                if wanted != self._sent:
                    await self._driver.set_plan(*wanted)
                    self._sent = wanted
                    self._emit(
                        "signal.plan_selected",
                        Priority.EVENT,
                        f"plan {wanted[1].id}",
                        plan=wanted[1].id,
                        source=self._source,
                    )
            if self._wanted_mode != UNSPECIFIED and self._wanted_mode != self._sent_mode:
                await self._driver.set_mode(self._wanted_mode)
                self._sent_mode = self._wanted_mode
                name = schedule_pb2.SignalMode.Name(self._wanted_mode)
                self._emit(
                    "signal.mode_selected", Priority.EVENT, name, mode=name, source=self._source
                )
        except SignalCommunicationError as exc:
            # Kept as wanted; poll() re-sends once the controller answers.
            self._link_lost(exc)

    def _note(self, status: SignalStatus) -> None:
        before = self._status
        self._status, self._observed_at = status, self._clock.now()
        was_fault = before is not None and before.conflict_fault
        if status.conflict_fault and not was_fault:
            self._alarm(
                "signal.conflict_fault",
                "conflict monitor tripped: flashing amber",
                faults=",".join(status.faults),
            )
        elif was_fault and not status.conflict_fault:
            self._emit("signal.conflict_cleared", Priority.EVENT, "conflict monitor reset")
        was_open = before is not None and before.door_open
        if status.door_open and not was_open:
            self._alarm("signal.door_opened", "cabinet door opened")
        elif was_open and not status.door_open:
            self._emit("signal.door_closed", Priority.EVENT, "cabinet door closed")
        heard = before is None or before.communication_ok
        if not status.communication_ok and heard:
            self._alarm("signal.agent_lost", "the controller's watchdog tripped: flashing amber")
        elif status.communication_ok and not heard:
            self._emit("signal.agent_heard", Priority.EVENT, "the controller hears the agent again")
        if before is not None and status.mode != before.mode:
            name = schedule_pb2.SignalMode.Name(status.mode)
            self._emit("signal.mode_changed", Priority.EVENT, f"controller shows {name}", mode=name)
        unconfirmed = _unconfirmed(status)
        if unconfirmed and (before is None or _unconfirmed(before) != unconfirmed):
            self._alarm(
                "signal.unconfirmed",
                "the backend cannot confirm the controller's state: "
                + ", ".join(unconfirmed)
                + "; reported as unknown",
                faults=",".join(unconfirmed),
            )

    def _link_lost(self, exc: Exception) -> None:
        if self._link_ok:
            self._link_ok = False
            self._alarm("signal.communication_lost", f"controller unreachable: {exc}")

    def _refused(self, type_: str, exc: SignalPlanError) -> None:
        self._alarm(type_, str(exc), field=exc.field, reason=exc.reason)

    def _alarm(self, type_: str, message: str, **attributes: str) -> None:
        self._emit(type_, Priority.ALARM, message, **attributes)

    def _emit(self, type_: str, priority: Priority, message: str, **attributes: str) -> None:
        self._sink(
            EquipmentEvent(
                device_id=self._id,
                type=type_,
                priority=priority,
                at=self._clock.now(),
                message=message,
                attributes=attributes,
            )
        )
