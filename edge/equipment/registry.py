"""The one place that turns the configuration's equipment tables into devices.

Each kind names its backends in one table here (``backend = "gpio"``, ``"simulated"``, and
for lamps ``"fieldbus"``): the gpio backends are the drivers the street runs, on
gpiozero's pin factory (``GPIOZERO_PIN_FACTORY``, or the one given); the simulated ones
are the same drivers on mock pins with a simulated device behind the pins
(:mod:`edge.equipment.sim`), so the bench exercises the street's code. Controllers never
pick a backend and never import a simulator: this module is the only one that knows them
all (the ``equipment`` import-linter contract).

:func:`open_equipment` opens every device of a cabinet, in configuration order, and the
buses they share (the field bus), closing what it opened if one of them cannot be.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from domain.schedule.model import Schedule, Site
from edge.equipment.bollard.config import BollardConfig
from edge.equipment.bollard.controller import BollardController, BollardDriver, GpioBollard
from edge.equipment.bollard.latches import LatchStore, MemoryLatches
from edge.equipment.cabinet.config import CabinetConfig
from edge.equipment.cabinet.monitor import CabinetDriver, CabinetMonitor, GpioCabinet
from edge.equipment.device import Bus, Device
from edge.equipment.lamp.config import LampConfig
from edge.equipment.lamp.controller import GpioLamp, LampController, LampCounters, LampDriver
from edge.equipment.lamp.device import LampDevice
from edge.equipment.lamp.fieldbus import FieldbusLamp
from edge.equipment.signal.config import SignalConfig
from edge.equipment.signal.controller import (
    GpioSignalController,
    SignalController,
    SignalControllerDriver,
)
from edge.events import EquipmentConfigError, EquipmentEvent, EventSink
from edge.fieldbus.config import FieldbusConfig
from foundation.clock import Clock, SystemClock
from protos.ondijon.v1 import state_pb2

_SYSTEM_CLOCK = SystemClock()


@dataclass
class Context:
    """What backends are opened with.

    Attributes:
        clock: the agent's clock (simulated devices move on it).
        pin_factory: a gpiozero pin factory; None: gpiozero's default.
        power_readers: lamp id -> a callable giving its active power in watts (a meter).
        temperature: the cabinet's temperature sensor, a callable in °C.
        light: the cabinet's light sensor, a callable in lux.
        fieldbus: the ``[fieldbus]`` table (lamps with backend ``fieldbus`` need it), and
            ``fieldbus_password`` the gateway account's password.
        site, schedule: what node programs are computed from (the schedule in force).
        buses: the shared connections opened so far, by name (filled by the backends).
    """

    clock: Clock
    pin_factory: Any = None
    power_readers: Mapping[str, Callable[[], float]] = field(default_factory=dict)
    temperature: Callable[[], float] | None = None
    light: Callable[[], float] | None = None
    fieldbus: FieldbusConfig | None = None
    fieldbus_password: str = ""
    site: Site | None = None
    schedule: Callable[[], Schedule | None] = lambda: None
    buses: dict[str, Bus] = field(default_factory=dict)


def _gpio_lamp(config: LampConfig, context: Context) -> LampDriver:
    assert config.relay_pin is not None  # required by the schema for this backend
    assert config.pwm_pin is not None
    assert config.sense_pin is not None
    return GpioLamp(
        relay_pin=config.relay_pin,
        pwm_pin=config.pwm_pin,
        sense_pin=config.sense_pin,
        relay_wiring=config.relay_wiring,
        relay_active_high=config.relay_active_high,
        pwm_active_high=config.pwm_active_high,
        pwm_frequency_hz=config.pwm_frequency_hz,
        power_reader=context.power_readers.get(config.device_id),
        pin_factory=context.pin_factory,
    )


# The simulated backends are imported when one is opened: a cabinet on real pins never
# loads the simulators (edge.equipment.sim).


def _simulated_lamp(config: LampConfig, context: Context) -> LampDriver:
    from edge.equipment.sim.lantern import SimulatedLamp

    return SimulatedLamp(clock=context.clock, nominal_power_w=config.nominal_power_w)


LampBackend = Callable[[LampConfig, Context], LampDriver]
BollardBackend = Callable[[BollardConfig, Context], BollardDriver]
SignalBackend = Callable[[SignalConfig, Context], SignalControllerDriver]
CabinetBackend = Callable[[CabinetConfig, Context], CabinetDriver]


def _fieldbus_lamp(config: LampConfig, context: Context) -> LampDriver:
    from edge.fieldbus.gateway import FieldBus

    fieldbus = context.buses.get(FieldBus.name)
    assert isinstance(fieldbus, FieldBus)  # opened by open_equipment for these lamps
    return FieldbusLamp(fieldbus, config.node_id, clock=context.clock)


LAMP_BACKENDS: dict[str, LampBackend] = {
    "gpio": _gpio_lamp,
    "simulated": _simulated_lamp,
    "fieldbus": _fieldbus_lamp,
}


def _simulated_bollard(config: BollardConfig, context: Context) -> BollardDriver:
    from edge.equipment.sim.bollard import SimulatedBollard

    return SimulatedBollard(config, context.clock)


BOLLARD_BACKENDS: dict[str, BollardBackend] = {
    "gpio": lambda config, context: GpioBollard(config, pin_factory=context.pin_factory),
    "simulated": _simulated_bollard,
}


def _simulated_signal(config: SignalConfig, context: Context) -> SignalControllerDriver:
    from edge.equipment.sim.crossing import SimulatedSignalController

    assert config.simulated is not None  # required by the schema for this backend
    return SimulatedSignalController(
        heads=config.simulated.heads,
        conflicts=config.simulated.conflicts or (),
        clock=context.clock,
        pin_factory=context.pin_factory,
        watchdog_s=config.simulated.watchdog_s,
    )


def _gpio_signal(config: SignalConfig, context: Context) -> SignalControllerDriver:
    assert config.gpio is not None  # required by the schema for this backend
    return GpioSignalController(
        config=config.gpio, clock=context.clock, pin_factory=context.pin_factory
    )


SIGNAL_BACKENDS: dict[str, SignalBackend] = {
    "gpio": _gpio_signal,
    "simulated": _simulated_signal,
}


def _gpio_cabinet(config: CabinetConfig, context: Context) -> CabinetDriver:
    assert config.door_pin is not None  # required by the schema for this backend
    assert config.mains_pin is not None
    return GpioCabinet(
        door_pin=config.door_pin,
        mains_pin=config.mains_pin,
        temperature=context.temperature,
        light=context.light,
        pin_factory=context.pin_factory,
    )


def _simulated_cabinet(context: Context) -> CabinetDriver:
    from edge.equipment.sim.cabinet import SimulatedCabinet

    return SimulatedCabinet(clock=context.clock)


CABINET_BACKENDS: dict[str, CabinetBackend] = {
    "gpio": _gpio_cabinet,
    "simulated": lambda config, context: _simulated_cabinet(context),
}


@overload
def open_driver(
    config: LampConfig, clock: Clock = ..., *, pin_factory: Any = ...
) -> LampDriver: ...
@overload
def open_driver(
    config: BollardConfig, clock: Clock = ..., *, pin_factory: Any = ...
) -> BollardDriver: ...
@overload
def open_driver(
    config: SignalConfig, clock: Clock = ..., *, pin_factory: Any = ...
) -> SignalControllerDriver: ...
@overload
def open_driver(
    config: CabinetConfig, clock: Clock = ..., *, pin_factory: Any = ...
) -> CabinetDriver: ...
def open_driver(
    config: LampConfig | BollardConfig | SignalConfig | CabinetConfig,
    clock: Clock = _SYSTEM_CLOCK,
    *,
    pin_factory: Any = None,
) -> Any:
    """The backend ``config.backend`` names, for any kind (the one entry point for tests
    and integrators; :func:`open_equipment` uses it with the agent's context).

    Args:
        config: a lamp's, bollard's, signal's or cabinet's configuration.
        clock: what simulated devices move on.
        pin_factory: a gpiozero pin factory; None: gpiozero's default.
    """
    return _open(config, Context(clock=clock, pin_factory=pin_factory))


def _open(
    config: LampConfig | BollardConfig | SignalConfig | CabinetConfig, context: Context
) -> Any:
    tables: dict[type, Mapping[str, Callable[[Any, Context], Any]]] = {
        LampConfig: LAMP_BACKENDS,
        BollardConfig: BOLLARD_BACKENDS,
        SignalConfig: SIGNAL_BACKENDS,
        CabinetConfig: CABINET_BACKENDS,
    }
    table = tables[type(config)]
    backend = table.get(config.backend)
    if backend is None:
        raise EquipmentConfigError(
            f"{config.device_id}.backend",
            f"must be one of {', '.join(sorted(table))}, got {config.backend!r}",
        )
    return backend(config, context)


class _Reporting:
    """A device's sink: records its events and reports its new state with each one."""

    def __init__(self, record: EventSink, report: Callable[[state_pb2.DeviceState], None]) -> None:
        self._record = record
        self._report = report
        self.device: Device | None = None

    def __call__(self, event: EquipmentEvent, /) -> None:
        self._record(event)
        if self.device is not None:
            self._report(self.device.state())


@dataclass
class Equipment:
    """A cabinet's devices, in configuration order, and the buses they share."""

    devices: list[Device] = field(default_factory=list)
    buses: list[Bus] = field(default_factory=list)

    def close(self) -> None:
        """Release every device, then the buses."""
        for device in self.devices:
            device.close()
        for bus in self.buses:
            bus.close()


def _open_fieldbus(nodes: list[str], context: Context, record: EventSink) -> None:
    """The bus the field-bus lamps share, unless open already; only a cabinet with such lamps
    loads it (aiomqtt, the node programs)."""
    from edge.fieldbus.gateway import FieldBus

    if FieldBus.name in context.buses:
        return
    if context.fieldbus is None:
        raise EquipmentConfigError(
            "fieldbus", 'required: a lamp has backend = "fieldbus" (the broker to reach)'
        )
    context.buses[FieldBus.name] = FieldBus(
        context.fieldbus,
        context.fieldbus_password,
        clock=context.clock,
        record=record,
        nodes=nodes,
        site=context.site,
        schedule=context.schedule,
    )


def open_equipment(
    *,
    lamps: Sequence[LampConfig] = (),
    bollards: Sequence[BollardConfig] = (),
    signals: Sequence[SignalConfig] = (),
    cabinet: CabinetConfig | None = None,
    context: Context,
    record: EventSink,
    report: Callable[[state_pb2.DeviceState], None],
    counters: Callable[[str], LampCounters] = lambda _: LampCounters(),
    latches: LatchStore | None = None,
) -> Equipment:
    """Open every configured device.

    Args:
        context: the clock, pin factory and sensors backends are opened with.
        record: where events go (the agent's outbox).
        report: where a bollard's or a signal's new state goes with each of its events.
        counters: a lamp's persisted counters, by id.
        latches: where bollards keep the latches that survive restarts.

    Raises:
        EquipmentConfigError: a backend unknown or a pin refused (nothing stays open).
    """
    equipment = Equipment()
    latches = latches if latches is not None else MemoryLatches()
    on_bus = [lamp.node_id for lamp in lamps if lamp.backend == "fieldbus"]
    if on_bus:
        _open_fieldbus(on_bus, context, record)
    try:
        for lamp_config in lamps:
            driver: LampDriver = _open(lamp_config, context)
            controller = LampController(lamp_config, driver, record, context.clock)
            held = counters(lamp_config.device_id)
            controller.restore(held)
            equipment.devices.append(LampDevice(controller, persisted=held))
        for bollard_config in bollards:
            bollard_sink = _Reporting(record, report)
            bollard = BollardController(
                config=bollard_config,
                driver=_open(bollard_config, context),
                clock=context.clock,
                sink=bollard_sink,
                latches=latches,
            )
            bollard_sink.device = bollard
            equipment.devices.append(bollard)
        for signal_config in signals:
            signal_sink = _Reporting(record, report)
            signal = SignalController(
                device_id=signal_config.device_id,
                driver=_open(signal_config, context),
                clock=context.clock,
                sink=signal_sink,
                card=signal_config.safety_card,
                bus_priority=signal_config.bus_priority,
                poll_interval_s=signal_config.poll_interval_s,
            )
            signal_sink.device = signal
            equipment.devices.append(signal)
        if cabinet is not None:
            driver_: CabinetDriver = _open(cabinet, context)
            equipment.devices.append(CabinetMonitor(cabinet, driver_, record))
    except BaseException:
        equipment.buses = list(context.buses.values())
        equipment.close()
        raise
    equipment.buses = list(context.buses.values())
    return equipment
