"""The cabinet agent: runs its street on its own, and talks to the orchestrator when it can.

Autonomy first: the schedule is evaluated here, from the documents held on disk and the
agent's own clock; the equipment is driven by what the schedule engine decides now, and
evaluation sleeps until the next switch time (or until a new document, override or
command wakes it). The link to the orchestrator only carries documents in and state and
events out; when it is down nothing on the street changes.

Every desired document is parsed once (:func:`domain.documents.parse`, signal plans also
checked against each crossing's safety card from the configuration), then stored atomically
as received, then its parsed value applied, and only then acknowledged. Every event is in
the durable outbox before anything else happens to it.

Time is a sensor (:mod:`edge.timekeeping`): the schedule loop wakes at least every
``CHECK_INTERVAL_S`` of monotonic time, compares the wall clock with the monotonic one,
records a step as a ``clock.step`` event and re-evaluates at once; until the wall clock is
trusted, lamps follow the light sensor or their default level and the schedule moves
nothing else. Every controller and loop runs under one :class:`~edge.supervisor.Supervisor`:
a failure puts that device in its safe state, raises an ALARM naming it and the error, and
restarts it with backoff; the others run on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from domain import documents
from domain.documents import Document
from domain.schedule.errors import ScheduleError
from domain.schedule.evaluator import Decision, evaluate
from domain.schedule.fallback import unknown_time_lamps
from domain.schedule.model import (
    DeviceKind,
    Override,
    Schedule,
    SignalMode,
    Site,
)
from domain.schedule.wire import override_from_proto
from domain.signals.plans import SignalPlanError, SignalPlans
from edge.config import AgentConfig
from edge.equipment.bollard.controller import BollardController, target_from_setting
from edge.equipment.bollard.latches import LatchFile
from edge.equipment.bollard.rules import Mode
from edge.equipment.cabinet.monitor import CabinetMonitor
from edge.equipment.device import BOLLARD, LAMP, SIGNAL, Device
from edge.equipment.lamp.controller import LampController, LampCounters
from edge.equipment.lamp.device import LampDevice
from edge.equipment.metering import QuarterHourMeter
from edge.equipment.registry import Context, Equipment, open_equipment
from edge.equipment.signal.controller import SignalController, SignalDriverError
from edge.events import EquipmentEvent, Priority
from edge.fieldbus.config import gateway_password
from edge.firmware.agent_side import AgentFirmware
from edge.firmware.boot import HealthCheck
from edge.firmware.launch import running_release
from edge.firmware.notify import Notifier, watchdog_interval
from edge.identity import Credentials
from edge.link import GatewayLinkClient
from edge.renewal import Renewal
from edge.storage.atomic import StorageRecovery
from edge.storage.errors import DocumentRefusedError
from edge.storage.outbox import Outbox
from edge.storage.overflow import OutboxLimits
from edge.storage.state import AgentState, DeviceCounters, DocumentVerdict
from edge.storage.unwritten import DISK_FAILURES, Unwritten
from edge.supervisor import Child, Supervisor
from edge.timekeeping import CHECK_INTERVAL_S, ClockSync, RealTimeClock, Timekeeper, clock_sync
from foundation.clock import Clock, SimulatedClock, SystemClock
from foundation.errors import FieldError
from foundation.escaping import escape
from foundation.files import private_directory
from protos.ondijon.v1 import (
    firmware_pb2,
    link_pb2,
    state_pb2,
)

if TYPE_CHECKING:
    # The monitoring port (prometheus_client) is imported only when [observe] asks for it.
    from edge.observe import Readings

log = logging.getLogger("ondijon.edge.agent")


def _refusal(exc: Exception) -> str:
    """Why a document is refused: a field error says which field; anything else raised by
    a malformed payload is a refusal too, never a crash."""
    return str(exc) if isinstance(exc, FieldError) else f"payload: {exc}"


# How often (clock time) lamps and the cabinet are checked and metered.
MONITOR_INTERVAL_S = 30.0
# How often counters are made durable (the agent's clock: real time in the street, the same
# share of a simulated day under a demo's or a bench's fast clock); a power cut loses at
# most this much.
PERSIST_INTERVAL_S = 60.0


def make_clock(config: AgentConfig) -> Clock:
    if config.clock.mode == "simulated" and config.clock.start is not None:
        return SimulatedClock(
            start=config.clock.start, speed=config.clock.speed, origin=config.clock.origin
        )
    return SystemClock()


def default_clock_sync(config: AgentConfig, clock: Clock) -> ClockSync:
    """Where trust in the wall clock comes from: the system's synchronisation state for
    the system clock; a clock the agent was handed (simulated for a demo or a bench,
    manual in a test) is its own reference."""
    if isinstance(clock, SystemClock):
        return clock_sync(config.clock.sync, rtc=config.clock.rtc)
    return RealTimeClock()


# The kinds the schedule engine decides for, by the device's kind.
_SCHEDULED = {LAMP: DeviceKind.LAMP, BOLLARD: DeviceKind.BOLLARD, SIGNAL: DeviceKind.SIGNAL}

_BOLLARD_MODES = {
    link_pb2.BOLLARD_ACTION_EMERGENCY_LOWER: Mode.HELD_DOWN,
    link_pb2.BOLLARD_ACTION_HOLD_DOWN: Mode.HELD_DOWN,
    link_pb2.BOLLARD_ACTION_HOLD_UP: Mode.HELD_UP,
    link_pb2.BOLLARD_ACTION_AUTOMATIC: Mode.AUTOMATIC,
    link_pb2.BOLLARD_ACTION_RELEASE_EMERGENCY: Mode.AUTOMATIC,
}


class Agent:
    """One cabinet's agent."""

    def __init__(
        self,
        config: AgentConfig,
        clock: Clock,
        *,
        pin_factory: Any = None,
        environ: Mapping[str, str] | None = None,
        clock_sync: ClockSync | None = None,
    ) -> None:
        """``environ``: what the launcher said it booted (default: this process's);
        ``clock_sync``: where trust in the wall clock comes from (default: see
        :func:`default_clock_sync`)."""
        self.config = config
        self.clock = clock
        self.timekeeper = Timekeeper(clock_sync or default_clock_sync(config, clock))
        self._trusted_seen = False
        self._announced = False
        # The version this process runs, as the launcher booted it (edge.firmware.launch).
        self.firmware_version = running_release(environ)
        self.site = Site(config.latitude, config.longitude, config.time_zone)
        # The agent's alone (documents, latches, outbox, identity), whatever the umask.
        private_directory(config.state_dir)
        self._recoveries: list[StorageRecovery] = []
        self.state = AgentState(
            config.state_dir / "state.json", on_recovery=self._recoveries.append
        )
        self.outbox = Outbox(
            config.state_dir / "outbox.sqlite",
            clock=clock,
            limits=OutboxLimits(max_disk_bytes=config.outbox_max_bytes),
        )
        self.unwritten = Unwritten()
        self.link = GatewayLinkClient(config, self, self.outbox)
        if self.outbox.recovered is not None:
            # Set aside and started empty: what it held is lost and the control centre must
            # hear of it; the link renumbers what is recorded until it learns the floor.
            self.link.outbox_lost(self.outbox.recovered)
            self._recoveries.append(self.outbox.recovered)
        # The owner of every task of the agent, those started later included.
        self.supervisor = Supervisor(clock, self._task_failed)
        self.firmware = AgentFirmware(
            config.firmware,
            clock=clock,
            running_version=self.firmware_version,
            channel=lambda: self.link.channel,
            send=self.link.send_firmware_progress,
            record=self.record,
            spawn=self.supervisor.spawn,
        )
        self.renewal = Renewal(config, spawn=self.supervisor.spawn)
        self.meter = QuarterHourMeter()
        # Devices whose last operation failed: alarmed once, until they work again.
        self._failing: dict[str, str] = {}
        self._wake = asyncio.Event()
        self.schedule: Schedule | None = None
        self.overrides: list[Override] = []
        # Every device of the cabinet, whatever its kind and backend (edge.equipment.registry),
        # and what the schedule last decided for each bollard and signal.
        self.equipment = Equipment()
        self._decisions: dict[str, Decision] = {}
        self._pending_plans: SignalPlans | None = None
        # The light sensor's hysteresis state, handed back to the schedule engine.
        self._sensor_holding = False
        self._lux_seen: float | None = None
        self._latches_lost = ""
        self._build_equipment(pin_factory)
        self._load_documents()
        for recovery in self._recoveries:
            self.record(recovery.to_event(clock.now()))
        if self._latches_lost:
            self.record(
                self._event(
                    "bollard.latches_lost",
                    Priority.ALARM,
                    f"bollard latches unreadable ({self._latches_lost}): every bollard"
                    " stays latched until a reset",
                )
            )

    # -- set-up ---------------------------------------------------------------------------------

    def _build_equipment(self, pin_factory: Any) -> None:
        latches = LatchFile(self.config.state_dir / "bollard-latches.json")
        if latches.unknown:
            self._latches_lost = latches.unknown

        def counters(device_id: str) -> LampCounters:
            held = self.state.counters(device_id)
            return LampCounters(held.energy_wh, held.operating_hours, held.switch_count)

        self.equipment = open_equipment(
            lamps=self.config.lamps,
            bollards=self.config.bollards,
            signals=self.config.signals,
            cabinet=self.config.cabinet,
            context=Context(
                clock=self.clock,
                pin_factory=pin_factory,
                fieldbus=self.config.fieldbus,
                fieldbus_password=(
                    gateway_password(Path(self.config.fieldbus.credentials))
                    if self.config.fieldbus is not None
                    else ""
                ),
                site=self.site,
                schedule=lambda: self.schedule,
            ),
            # Looked up at each event, so whatever `record` is then receives it.
            record=lambda event: self.record(event),
            report=self.link.state_changed,
            counters=counters,
            latches=latches,
        )

    @property
    def devices(self) -> list[Device]:
        """Every device of the cabinet, in configuration order."""
        return self.equipment.devices

    @property
    def lamps(self) -> list[LampDevice]:
        return [d for d in self.devices if isinstance(d, LampDevice)]

    @property
    def bollards(self) -> list[BollardController]:
        return [d for d in self.devices if isinstance(d, BollardController)]

    @property
    def signals(self) -> list[SignalController]:
        return [d for d in self.devices if isinstance(d, SignalController)]

    @property
    def cabinet(self) -> CabinetMonitor | None:
        return next((d for d in self.devices if isinstance(d, CabinetMonitor)), None)

    def _load_documents(self) -> None:
        """Apply the documents held on disk: the street runs before any network."""
        for stored in self.state.documents():
            try:
                self._apply(self._parse(stored.kind, stored.payload))
            except Exception as exc:
                # A held document that no longer validates (e.g. after an update): fall back
                # to the documented default and say so, never go dark.
                self.record(self._event("document.invalid", Priority.ALARM, _refusal(exc)))
        self.overrides = []
        for message in self.state.overrides():
            try:
                self.overrides.append(override_from_proto(message))
            except ScheduleError as exc:
                self.record(self._event("override.invalid", Priority.ALARM, str(exc)))

    # -- events ---------------------------------------------------------------------------------

    def _event(
        self, type_: str, priority: Priority, message: str, device_id: str = ""
    ) -> EquipmentEvent:
        return EquipmentEvent(
            device_id=device_id, type=type_, priority=priority, at=self.clock.now(), message=message
        )

    def record(self, event: EquipmentEvent) -> None:
        """Make an event durable in the outbox, then let the link know."""
        self._write([event])

    def _write(self, events: list[EquipmentEvent]) -> None:
        """Append ``events`` (one transaction if one append takes them) after whatever a
        full disk held back; on a disk failure hold them instead
        (:mod:`edge.storage.unwritten`): never raise it into the controller that recorded
        them, the street must not notice."""
        now = self.clock.now()
        if self.unwritten.failing_since is not None and not self._write_held(now):
            self.unwritten.hold(events, "still failing", now)
            return
        # One transaction (one fsync) unless the batch is bigger than one append takes.
        parts = self.outbox.parts(events)
        for i, part in enumerate(parts):
            try:
                self.outbox.append_many(part)
            except DISK_FAILURES as exc:
                self.unwritten.hold([e for p in parts[i:] for e in p], str(exc), now)
                break
        self.link.events_recorded()

    def _write_held(self, now: datetime) -> bool:
        """Write what a full disk held back, in order, then the alarm's end; whether all
        of it is written."""
        held = self.unwritten.held
        try:
            while held:
                chunk = self.outbox.parts(held[:100])[0]
                self.outbox.append_many(chunk)
                del held[: len(chunk)]
                self.link.events_recorded()
            self.outbox.append(self.unwritten.cleared(now))
        except DISK_FAILURES:
            return False
        self.link.events_recorded()
        return True

    # -- the link's port ------------------------------------------------------------------------

    def held_documents(self) -> list[link_pb2.HeldDocument]:
        return self.state.held_documents()

    def device_states(self) -> list[state_pb2.DeviceState]:
        return [device.state() for device in self.devices]

    def readings(self, *, ready: bool) -> Readings:
        """What the agent shows its monitoring (edge.observe), read now."""
        from edge.observe import Readings

        faults: dict[str, int] = {}
        for state in self.device_states():
            kind = state.WhichOneof("detail")
            if kind is not None and list(getattr(getattr(state, kind), "faults", [])):
                faults[kind] = faults.get(kind, 0) + 1
        oldest_us = self.outbox.oldest_recorded_us()
        age = self.clock.now().timestamp() - oldest_us / 1e6 if oldest_us else 0.0
        return Readings(
            ready=ready,
            outbox_events={p.name.lower(): n for p, n in self.outbox.pending_by_priority().items()},
            oldest_age_s=max(0.0, age),
            last_sync=self.link.status.last_sync,
            connected=self.link.status.connected.is_set(),
            device_faults=faults,
            clock_trusted=self.timekeeper.trusted,
        )

    async def on_connected(self, channel: grpc.aio.Channel, credentials: Credentials) -> None:
        self.firmware.on_connected()
        # Renews over this link at two thirds of the certificate's life (edge.renewal).
        self.renewal.on_connected(channel, credentials)

    # -- firmware (edge.firmware.agent_side) ---------------------------------------------------

    async def on_firmware_offer(self, offer: firmware_pb2.FirmwareOffer) -> None:
        self.firmware.offer(offer)

    async def on_firmware_cancel(self, cancel: firmware_pb2.FirmwareCancel) -> None:
        self.firmware.cancel(cancel)

    def health_checks(self) -> dict[str, HealthCheck]:
        """What a new release must show before it is committed."""

        async def orchestrator() -> bool:
            return self.link.status.connected.is_set()

        async def drivers() -> bool:
            self.device_states()  # every device answers
            return not any("driver_failure" in lamp.controller.faults for lamp in self.lamps)

        async def schedule() -> bool:
            now = self.clock.now()
            for kind in (DeviceKind.LAMP, DeviceKind.BOLLARD, DeviceKind.SIGNAL):
                evaluate(self.schedule, self.site, now, kind=kind, device_id="", overrides=[])
            return True

        return {"orchestrator": orchestrator, "drivers": drivers, "schedule": schedule}

    async def accept_document(self, document: link_pb2.DesiredDocument) -> str:
        """Parse once, store atomically, apply; returns "" or why the document is refused."""
        error = ""
        try:
            parsed = self._parse(document.kind, document.payload)
        except Exception as exc:
            error = _refusal(exc)
        if not error:
            try:
                verdict = self.state.accept_document(document)
            except DocumentRefusedError as exc:
                error = str(exc)
        if error:
            # The running document stays in place: nothing was stored or applied.
            self.record(self._event("document.refused", Priority.ALARM, error))
            return error
        if verdict is DocumentVerdict.NEW:
            self._apply(parsed)
            self.record(
                self._event(
                    "document.applied",
                    Priority.EVENT,
                    f"{link_pb2.DocumentKind.Name(document.kind)} version {document.version}",
                )
            )
            self._wake.set()
        return ""

    def _parse(self, kind: int, payload: bytes) -> Document:
        """The document, refused unless valid here: the same checks as the orchestrator's,
        against the safety card of each crossing of this cabinet (its configuration)."""
        parsed = documents.parse(kind, payload)
        if isinstance(parsed.value, SignalPlans):
            for signal in self.signals:
                signal.card.check(parsed.value)
        return parsed

    def _apply(self, parsed: Document) -> None:
        """Put a valid document's value in force."""
        value = parsed.value
        if isinstance(value, Schedule):
            self.schedule = value
            for bus in self.equipment.buses:
                bus.schedule_changed()  # node programs follow it
        elif isinstance(value, SignalPlans):
            # Handed to the controllers by the schedule loop (it is async).
            self._pending_plans = value
        else:
            for bollard in self.bollards:
                bollard.set_access_list(value)

    async def handle_command(self, command: link_pb2.Command) -> link_pb2.CommandResult:
        now = self.clock.now()
        result = link_pb2.CommandResult(command_id=command.command_id)
        if (
            command.HasField("expires_at")
            and command.expires_at.ToDatetime(tzinfo=now.tzinfo) <= now
        ):
            result.status = link_pb2.COMMAND_STATUS_EXPIRED
            return result
        action = command.WhichOneof("action")
        if action == "override":
            try:
                override = override_from_proto(command.override)
            except ScheduleError as exc:
                result.status, result.detail = link_pb2.COMMAND_STATUS_REFUSED, str(exc)
                return result
            unknown = self._unknown_devices(override.kind, override.device_ids)
            if unknown:
                # Accepted, it would change nothing and be reported done.
                result.status = link_pb2.COMMAND_STATUS_REFUSED
                result.detail = f"override.device_ids: no {override.kind.name.lower()} " + (
                    ", ".join(repr(d) for d in unknown)
                )
                return result
            self.state.put_override(command.override)
            self.overrides = [o for o in self.overrides if o.id != override.id] + [override]
            self.record(self._event("override.received", Priority.EVENT, f"override {override.id}"))
        elif action == "bollard":
            order = command.bollard
            target = [b for b in self.bollards if b.device_id == order.device_id]
            mode = _BOLLARD_MODES.get(order.action)
            reset = order.action == link_pb2.BOLLARD_ACTION_RESET
            if not target or (mode is None and not reset):
                result.status = link_pb2.COMMAND_STATUS_REFUSED
                result.detail = (
                    f"bollard.device_id: no bollard {order.device_id!r}"
                    if not target
                    else "bollard.action: unknown action"
                )
                return result
            if reset:
                target[0].reset(by=f"operator (command {command.command_id})")
            else:
                assert mode is not None
                target[0].set_mode(mode)
            self.record(
                self._event(
                    "bollard.command",
                    Priority.EVENT,
                    f"{link_pb2.BollardAction.Name(order.action)} by the control centre",
                    order.device_id,
                )
            )
        elif action == "bus_priority":
            request = command.bus_priority
            controller = [s for s in self.signals if s.device_id == request.device_id]
            if not controller:
                result.status = link_pb2.COMMAND_STATUS_REFUSED
                result.detail = (
                    f"bus_priority.device_id: no signal controller {request.device_id!r}"
                )
                return result
            decision = await controller[0].request_bus_priority(request.approach, request.bus_id)
            if decision is None:
                result.status = link_pb2.COMMAND_STATUS_REFUSED
                result.detail = f"bus_priority.approach: no group {request.approach!r}"
                return result
            result.status = link_pb2.COMMAND_STATUS_DONE
            result.detail = str(decision.outcome)
            return result
        elif action == "cancel_override":
            if all(o.id != command.cancel_override for o in self.overrides):
                result.status = link_pb2.COMMAND_STATUS_REFUSED
                result.detail = f"cancel_override: no override {command.cancel_override!r} here"
                return result
            self.state.remove_override(command.cancel_override)
            self.overrides = [o for o in self.overrides if o.id != command.cancel_override]
        else:
            result.status = link_pb2.COMMAND_STATUS_REFUSED
            result.detail = f"action: {action or 'none'} is not handled by this gateway"
            return result
        self._wake.set()
        result.status = link_pb2.COMMAND_STATUS_DONE
        return result

    # -- running the street ----------------------------------------------------------------

    def apply_schedule(self) -> datetime:
        """Drive every device to what the schedule says now; return when to look again.

        Until the wall clock is trusted the schedule moves nothing: lamps follow the light
        sensor or their default level, bollards and signals stay as they are. One device
        that fails is alarmed and put to its safe state; the others are still driven.
        """
        now = self.clock.now()
        trusted = self.timekeeper.trusted
        if trusted != self._trusted_seen or not self._announced:
            self._announce_trust(trusted)
        horizon = now + timedelta(hours=24)
        lux = self.cabinet.lux if self.cabinet is not None else None
        holding = self._sensor_holding
        # Lamps differ only by the overrides naming them: evaluate once per distinct set
        # (a cabinet of 100 lamps usually costs one evaluation, not 100).
        decided: dict[tuple[str, ...], Decision] = {}
        for device in self.devices:
            if isinstance(device, LampDevice):
                horizon = min(
                    horizon, self._follow_lamp(device, now, trusted, lux, holding, decided)
                )
                continue
            kind = _SCHEDULED.get(device.kind)
            if kind is None or not trusted:
                continue
            decision = evaluate(
                self.schedule,
                self.site,
                now,
                kind=kind,
                device_id=device.device_id,
                overrides=self.overrides,
            )
            horizon = min(horizon, decision.next_change)
            before = self._decisions.get(device.device_id)
            if isinstance(device, BollardController):
                if decision.bollard is None or (
                    before is not None and before.bollard == decision.bollard
                ):
                    continue
                # A failure here stops that bollard's controller (motors off) and its
                # supervisor alarms and restarts it; nothing propagates to the others.
                device.apply(target_from_setting(decision.bollard), decision.source)
                self.link.state_changed(device.state())
            # A signal's decision is handed to its controller by apply_signals (async).
            self._decisions[device.device_id] = decision
        if not trusted:
            return horizon
        expired = self.state.drop_expired_overrides(now)
        if expired:
            self.overrides = [o for o in self.overrides if o.id not in expired]
        return horizon

    def _follow_lamp(
        self,
        lamp: LampDevice,
        now: datetime,
        trusted: bool,
        lux: float | None,
        holding: bool,
        decided: dict[tuple[str, ...], Decision],
    ) -> datetime:
        """Drive one lamp to the schedule's level (the sensor's or its default until the
        clock is trusted); returns when its level may change next."""
        device_id = lamp.device_id
        horizon = now + timedelta(hours=24)
        try:
            if trusted:
                key = tuple(
                    o.id for o in self.overrides if o.applies_to(DeviceKind.LAMP, device_id)
                )
                decision = decided.get(key) or evaluate(
                    self.schedule,
                    self.site,
                    now,
                    kind=DeviceKind.LAMP,
                    device_id=device_id,
                    overrides=self.overrides,
                    lux=lux,
                    sensor_holding=holding,
                )
                decided[key] = decision
                self._sensor_holding = decision.sensor_holding
                level = decision.lamp_level if decision.lamp_level is not None else 100
                source = decision.source
                horizon = decision.next_change
            else:
                level, source, self._sensor_holding = unknown_time_lamps(
                    self.schedule, lux, holding
                )
            wanted = (level, source)
            if lamp.decided != wanted:
                lamp.default_level = self.schedule.default_lamp_level if self.schedule else 100
                lamp.controller.apply(level, source, default_level=lamp.default_level)
                lamp.decided = wanted
                self.link.state_changed(lamp.state())
            self._recovered(device_id)
        except Exception as exc:
            self._device_failed(device_id, exc)
            self._lamp_to_default(lamp)
        return horizon

    def _announce_trust(self, trusted: bool) -> None:
        # Only news is recorded: a clock trusted from the start (an RTC, a synchronised
        # board) says nothing; one that is not says so, and again once it is.
        first = not self._announced
        self._announced = True
        self._trusted_seen = trusted
        if trusted and first:
            return
        if trusted:
            message = "wall clock synchronised: the schedule runs"
            self.record(self._event("clock.trusted", Priority.EVENT, message))
        else:
            message = (
                "wall clock not synchronised yet (no NTP, no real-time clock): lamps follow"
                " the light sensor or their default level until it is"
            )
            self.record(self._event("clock.untrusted", Priority.EVENT, message))

    async def apply_signals(self) -> None:
        """Hand new plans and the schedule's plan and mode to the signal controllers."""
        plans, self._pending_plans = self._pending_plans, None
        for signal in self.signals:
            try:
                if plans is not None:
                    await signal.load_plans(plans)
                decision = self._decisions.get(signal.device_id)
                if decision is None:
                    await signal.apply(None, SignalMode.NORMAL, source="")
                else:
                    await signal.apply(
                        decision.signal_plan,
                        decision.signal_mode or SignalMode.NORMAL,
                        source=decision.source,
                    )
                self._recovered(signal.device_id)
            except (SignalPlanError, SignalDriverError) as exc:
                # The controller keeps its running plan; the alarm is already recorded.
                log.warning("signal %s: %s", signal.device_id, escape(str(exc)))
            except Exception as exc:
                self._device_failed(signal.device_id, exc)
                await signal.fail_safe()
            self.link.state_changed(signal.state())

    def look_at_the_clock(self) -> None:
        """Compare the wall clock with the monotonic one; record a step if it moved."""
        step = self.timekeeper.look(self.clock.monotonic(), self.clock.now())
        if step is None:
            return
        hours = step.seconds / 3600
        self.record(
            EquipmentEvent(
                device_id="",
                type="clock.step",
                priority=Priority.EVENT,
                at=step.after,
                message=f"wall clock stepped {hours:+.3f} h: schedule re-evaluated",
                attributes={
                    "step_s": f"{step.seconds:.3f}",
                    "before": step.before.isoformat(),
                    "after": step.after.isoformat(),
                },
            )
        )
        for bus in self.equipment.buses:
            bus.clock_stepped()  # node programs are epoch seconds computed from it

    async def _schedule_loop(self) -> None:
        while True:
            self.look_at_the_clock()
            next_change = self.apply_schedule()
            if self.signals:
                await self.apply_signals()
            self._wake.clear()
            # Never longer than CHECK_INTERVAL_S, on the monotonic clock: a wall-clock step
            # (NTP setting a board without RTC) is noticed within that, not at the next
            # switch time computed before it.
            wait = min((next_change - self.clock.now()).total_seconds(), CHECK_INTERVAL_S)
            sleeper = asyncio.create_task(self.clock.sleep(wait))
            waker = asyncio.create_task(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()
                await asyncio.gather(sleeper, waker, return_exceptions=True)

    def monitor(self) -> None:
        """Check faults, meter energy and report what changed (one pass over all devices)."""
        now = self.clock.now()
        if self.unwritten.failing_since is not None:
            self._write_held(now)  # a full disk freed: what it held goes out
        readings: list[EquipmentEvent] = []
        for device in self.devices:
            if isinstance(device, LampDevice):
                readings += self._check_lamp(device.controller, now)
            elif isinstance(device, CabinetMonitor):
                self._flush(readings)
                # The cabinet's reading (temperature, door, mains) doubles as the gateway's
                # heartbeat: it goes out every pass, coalesced by the link's report interval.
                device.check(now)
                self.link.state_changed(device.state())
                if device.lux != self._lux_seen:
                    # A new light reading may switch lamps (a storm at noon): evaluate now.
                    self._lux_seen = device.lux
                    self._wake.set()
        self._flush(readings)

    def _check_lamp(self, controller: LampController, now: datetime) -> list[EquipmentEvent]:
        """Check one lamp's faults; its metering readings, recorded by the caller."""
        try:
            controller.check(now)
            counters = controller.counters()
            readings = self.meter.feed(
                controller.device_id, now, counters.energy_wh, counters.operating_hours
            )
            # Faults, lit or dark, and the power once a warm-up is over: what a map shows.
            if controller.report_due:
                self.link.state_changed(controller.state())
            return readings
        except Exception as exc:
            self._device_failed(controller.device_id, exc)
            return []

    def _flush(self, readings: list[EquipmentEvent]) -> None:
        if readings:
            # One transaction (one fsync) for the whole pass, not one per lamp.
            self._write(list(readings))
            readings.clear()

    def persist_counters(self) -> bool:
        """Make what the lamps counted since the last call durable; ``False`` if nothing
        grew (lamps dark all day): the state file is then not rewritten, since rewriting
        it would only wear the flash (two full copies and four fsyncs a write)."""
        increments: dict[str, DeviceCounters] = {}
        for lamp in self.lamps:
            now_counters = lamp.controller.counters()
            before = lamp.persisted
            increment = DeviceCounters(
                operating_hours=max(0.0, now_counters.operating_hours - before.operating_hours),
                switch_count=max(0, now_counters.switch_count - before.switch_count),
                energy_wh=max(0.0, now_counters.energy_wh - before.energy_wh),
            )
            if increment != DeviceCounters():
                increments[lamp.controller.device_id] = increment
            lamp.persisted = now_counters
        if not increments:
            return False
        self.state.add_counters(increments)
        return True

    async def _monitor_loop(self) -> None:
        while True:
            self.monitor()
            await self.clock.sleep(MONITOR_INTERVAL_S)

    async def _persist_loop(self) -> None:
        # A fixed cadence (not the interval plus the write's own time); slots missed while
        # the loop was held up are skipped, not caught up in a burst of writes.
        due = self.clock.monotonic() + PERSIST_INTERVAL_S
        while True:
            await self.clock.sleep(due - self.clock.monotonic())
            self.persist_counters()
            due += PERSIST_INTERVAL_S
            if due <= self.clock.monotonic():
                due = self.clock.monotonic() + PERSIST_INTERVAL_S

    # -- failures -------------------------------------------------------------------------------

    def _device_failed(self, device_id: str, exc: BaseException) -> None:
        """An ALARM naming the device and the error, once per distinct error."""
        error = f"{type(exc).__name__}: {exc}"
        if self._failing.get(device_id) == error:
            return
        self._failing[device_id] = error
        log.error("%s failed: %s", device_id, escape(error))
        self.record(
            EquipmentEvent(
                device_id=device_id,
                type="equipment.failed",
                priority=Priority.ALARM,
                at=self.clock.now(),
                message=f"{device_id}: {error}; put in its safe state",
                attributes={"error": error},
            )
        )

    def _recovered(self, device_id: str) -> None:
        if self._failing.pop(device_id, None) is not None:
            self.record(
                self._event(
                    "equipment.recovered", Priority.EVENT, f"{device_id} works again", device_id
                )
            )

    def _task_failed(self, child: Child, exc: BaseException) -> None:
        """The supervisor's report: the child is safe, alarmed here, restarted next."""
        error = f"{type(exc).__name__}: {exc}"
        device = child.name if child.name in self._device_ids() else ""
        self.record(
            EquipmentEvent(
                device_id=device,
                type="equipment.failed" if device else "agent.task_failed",
                priority=Priority.ALARM,
                at=self.clock.now(),
                message=(
                    f"{child.name}: {error}; "
                    + ("restarted with backoff" if child.restart else "not restarted")
                ),
                attributes={"task": child.name, "error": error, "failures": str(child.failures)},
            )
        )
        for state in self.device_states():
            if state.device_id == device:
                self.link.state_changed(state)

    def _unknown_devices(self, kind: DeviceKind, device_ids: Iterable[str]) -> list[str]:
        known = {
            DeviceKind.LAMP: {lamp.controller.device_id for lamp in self.lamps},
            DeviceKind.BOLLARD: {b.device_id for b in self.bollards},
            DeviceKind.SIGNAL: {s.device_id for s in self.signals},
        }.get(kind, set())
        return sorted(set(device_ids) - known)

    def _device_ids(self) -> set[str]:
        return {device.device_id for device in self.devices}

    def _lamp_to_default(self, lamp: LampDevice) -> None:
        lamp.decided = None
        lamp.default_level = self.schedule.default_lamp_level if self.schedule else 100
        with contextlib.suppress(Exception):
            lamp.controller.apply(lamp.default_level, "default", default_level=lamp.default_level)

    async def _lamps_to_default(self) -> None:
        for lamp in self.lamps:
            self._lamp_to_default(lamp)

    async def _firmware_start_up(self) -> None:
        await self.firmware.start_up(self.health_checks())
        await self.firmware.watch_stability()

    def _children(self) -> list[Child]:
        children = [
            # Each device's own work (pins, timers, polling); a failure puts it in its safe
            # state and the others run on.
            *(Child(d.device_id, d.run, d.fail_safe) for d in self.devices),
            *(Child(bus.name, bus.run) for bus in self.equipment.buses),
            # A failed evaluation leaves every lamp at its default level until it runs again.
            Child("schedule", self._schedule_loop, self._lamps_to_default),
            Child("monitor", self._monitor_loop),
            Child("persist", self._persist_loop),
            Child("link", self.link.run),
            # The street runs whatever happens to the firmware bookkeeping: once, alarmed.
            Child("firmware", self._firmware_start_up, restart=False),
        ]
        return children

    async def run(self, *, ready: Callable[[], object] | None = None) -> None:
        """Run until cancelled: every controller and loop under one supervisor."""
        for child in self._children():
            self.supervisor.add(child)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.supervisor.run(), name="supervisor")
                if ready is not None:
                    ready()
        finally:
            self.close()

    def close(self) -> None:
        self.firmware.close()
        self.persist_counters()
        self.equipment.close()
        self.outbox.close()
        self.state.close()


async def _keep_watchdog(notifier: Notifier, interval: float) -> None:
    # The event loop turning is what systemd's watchdog checks: a hung agent stops pinging
    # and is restarted (which counts as a boot for a trial firmware).
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


async def run_agent(config: AgentConfig) -> None:
    """``ondijon edge run``: run until SIGINT/SIGTERM, telling systemd (Type=notify) when
    the street is being driven and pinging its watchdog."""
    import signal

    from domain.schedule.calendar import use_holidays
    from edge.public_holidays import HolidayWindow

    # Public holidays from a child interpreter: the holidays package stays out of the agent.
    use_holidays(HolidayWindow())
    notifier = Notifier()
    agent = Agent(config, make_clock(config))
    interval = watchdog_interval()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def until_stopped() -> None:
        await stop.wait()
        raise _Stopped

    started = False

    def ready() -> None:
        nonlocal started
        started = True
        notifier.ready(f"running {config.gateway_id} {agent.firmware_version}")

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(agent.run(ready=ready))
            if config.observe_listen:
                from edge.observe import AgentObserver

                observer = AgentObserver(
                    config.observe_listen, lambda: agent.readings(ready=started)
                )
                group.create_task(observer.run(), name="observe")
            if interval:
                group.create_task(_keep_watchdog(notifier, interval))
            group.create_task(until_stopped())
    except* _Stopped:
        # Stopped on request, not crashed: no crash loop (edge.firmware.boot).
        agent.firmware.stopped_cleanly()
    finally:
        notifier.stopping()


class _Stopped(Exception):
    """SIGINT or SIGTERM: ends the agent's task group, which cancels and awaits the rest."""
