"""The street behind the bench's pins, played on gpiozero's mock pins from the inventory.

On a Raspberry Pi the equipment (or loop-back wiring) is real; on mock pins this module
plays it, on one :class:`~edge.equipment.sim.bollard.ClockedMockFactory` shared with the
agent's gpio drivers, timed by the agent's clock:

- a lamp (:class:`Lantern`): its current-sense input follows the relay's contacts (the
  configured wiring and polarity), and it draws power as an LED lantern does: the dimming
  level (never below the driver's minimum) ramped over ``sim.warm_up_s`` after switching on;
- a bollard (:class:`~edge.equipment.sim.bollard.BollardPost`): the post travels while a
  motor output is high, the limit switches close at the ends, cars stand on the loop, the
  loop detector's fault output, the pressure edge and the emergency key, on the wiring the
  inventory states (pull-ups, normally-closed safety contacts: a cut wire reads occupied);
- a crossing: its simulated controller (the agent's ``simulated`` signal backend) lights
  the heads on these pins and its own conflict monitor reads them; the bench drives the
  controller's alive line high while it hears the agent;
- the cabinet: door switch and mains sense inputs.

Faults (:data:`FAULTS`) are injected by name on an inventory line or device, and every pin
change is kept with the agent clock's time (:attr:`SimulatedStreet.trace`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge.bench.inventory import Inventory, LampWiring
from edge.equipment.bollard.config import BollardConfig
from edge.equipment.lamp.controller import LED_MIN_DIM_FRACTION
from edge.equipment.sim.bollard import BollardPost, ClockedMockFactory, ClockedMockPin, PinChange
from edge.equipment.sim.lantern import MockLantern
from foundation.clock import ManualClock


class Lantern(MockLantern):
    """A lamp behind its relay, dimming and sense pins, with warm-up and current draw.

    Attributes:
        sense_cut: the current-sense wire is cut (reads no current, the lamp may be lit).
    """

    def __init__(self, factory: ClockedMockFactory, wiring: LampWiring, clock: ManualClock) -> None:
        self._clock = clock
        self._wiring = wiring
        self._stuck: bool | None = None
        self._powered_since: float | None = None
        self.sense_cut = False
        self.pwm_pin: ClockedMockPin = factory.pin(wiring.pwm)
        super().__init__(
            factory,
            relay_pin=wiring.relay,
            sense_pin=wiring.sense,
            relay_wiring=wiring.relay_wiring,
            relay_active_high=wiring.relay_active_high,
        )

    @property
    def relay_closed(self) -> bool:
        """The contacts feeding the lamp (a stuck relay holds them where it stuck)."""
        if self._stuck is not None:
            return self._stuck
        return super().relay_closed

    def stick_relay(self, closed: bool | None) -> None:
        """Weld the contacts closed (True), jam them open (False), or repair (None)."""
        self._stuck = closed
        self._sync()

    def cut_sense_wire(self, cut: bool = True) -> None:
        """Cut (or mend) the current-sense wire."""
        self.sense_cut = cut
        self._sync()

    def power_w(self) -> float:
        """Active power now: the dimming level ramped over the warm-up, 0 when dark."""
        if not self.lit or self._powered_since is None:
            return 0.0
        level = max(float(self.pwm_pin.state), LED_MIN_DIM_FRACTION)
        warm_up = self._wiring.sim.warm_up_s
        elapsed = self._clock.monotonic() - self._powered_since
        ramp = 1.0 if warm_up == 0 else min(1.0, elapsed / warm_up)
        return self._wiring.nominal_power_w * level * ramp

    def _sync(self) -> None:
        if self.lit and self._powered_since is None:
            self._powered_since = self._clock.monotonic()
        elif not self.lit:
            self._powered_since = None
        if self.sense_pin.function != "input":
            return
        if self.lit and not self.sense_cut:
            self.sense_pin.drive_high()
        else:
            self.sense_pin.drive_low()


@dataclass(frozen=True)
class Injected:
    """A fault put on the bench: when (agent clock), what, on which line or device."""

    at: datetime
    fault: str
    target: str
    detail: str = ""


#: The faults the bench injects by name, with what each needs as its target.
FAULTS = {
    "cut_wire": "an input line: bollards.<id>.<input>, lamps.<id>.sense, cabinet.mains",
    "stuck_relay": "a lamp id (its contacts welded closed)",
    "dead_lamp": "a lamp id",
    "loop_detector_fault": "a bollard id (its detector's fault output opens)",
    "car_on_loop": "a bollard id (a vehicle stands on the loop)",
    "obstruction": "a bollard id (something on the post: the pressure edge)",
    "emergency": "a bollard id (the fire brigade's key)",
    "controller_lost": "a crossing id (its alive line drops, the agent's link to it is cut)",
    "green_welded": "crossings.<id>.<group>.green (the lamp lights on its own)",
    "mains_lost": "the cabinet",
    "door_open": "the cabinet",
    "clock_step": "the agent's wall clock (detail: seconds)",
}


@dataclass
class SimulatedStreet:
    """Every piece of equipment of an inventory, played behind one set of mock pins."""

    inventory: Inventory
    clock: ManualClock
    factory: ClockedMockFactory
    lanterns: dict[str, Lantern] = field(default_factory=dict)
    posts: dict[str, BollardPost] = field(default_factory=dict)
    controllers: dict[str, Any] = field(default_factory=dict)
    injected: list[Injected] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        inventory: Inventory,
        clock: ManualClock,
        factory: ClockedMockFactory,
        bollards: Sequence[BollardConfig] = (),
    ) -> SimulatedStreet:
        """The street of ``inventory`` on ``factory`` (``bollards``: the agent's configs)."""
        street = cls(inventory, clock, factory)
        for lamp in inventory.lamps:
            street.lanterns[lamp.id] = Lantern(factory, lamp, clock)
        by_id = {b.id: b for b in inventory.bollards}
        for config in bollards:
            sim = by_id[config.device_id].sim
            street.posts[config.device_id] = BollardPost(
                config, clock, factory, rise_s=sim.rise_s, lower_s=sim.lower_s
            )
        street._cabinet(mains=True, door=False)
        for crossing in inventory.crossings:
            street._alive(crossing.id, True)
        return street

    def attach(self, controllers: dict[str, Any]) -> None:
        """The agent opened its pins: drive every input again as the street has it, and
        follow the crossings' simulated controllers (``controllers``, by id)."""
        self.controllers = dict(controllers)
        for lantern in self.lanterns.values():
            lantern._sync()
        for post in self.posts.values():
            post.sync()
        self._cabinet(mains=True, door=False)

    def start(self) -> None:
        """Run the posts' physics (owned here, cancelled by :meth:`stop`)."""
        for device_id, post in self.posts.items():
            self._tasks.append(asyncio.create_task(post.run(), name=f"street:{device_id}"))

    async def stop(self) -> None:
        """Cancel the physics and wait for it."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    @property
    def trace(self) -> list[PinChange]:
        """Every pin change so far, in order, on the agent's clock."""
        return list(self.factory.history)

    def level(self, line: str) -> bool:
        """What the pin of ``line`` reads now (a multimeter on it)."""
        return bool(self.factory.pin(self.inventory.pin(line)).state)

    # -- faults --------------------------------------------------------------------------------

    def inject(self, fault: str, target: str, detail: str = "") -> Injected:
        """Put fault ``fault`` (one of :data:`FAULTS`) on ``target``; recorded with the time.

        Raises:
            KeyError: naming the fault or the target when either is unknown.
        """
        if fault not in FAULTS:
            raise KeyError(f"no fault {fault!r}; one of {', '.join(FAULTS)}")
        actions: dict[str, Callable[[], None]] = {
            "cut_wire": lambda: self._cut_wire(target),
            "stuck_relay": lambda: self._lantern(target).stick_relay(True),
            "dead_lamp": lambda: setattr(self._lantern(target), "dead", True),
            "loop_detector_fault": lambda: self._post(target).detector_fault(True),
            "car_on_loop": lambda: self._post(target).car_arrives(),
            "obstruction": lambda: self._post(target).place_obstacle(float(detail or 0.5)),
            "emergency": lambda: self._post(target).turn_emergency_key(True),
            "controller_lost": lambda: self._controller_lost(target),
            "green_welded": lambda: self._weld_green(target),
            "mains_lost": lambda: self._cabinet(mains=False),
            "door_open": lambda: self._cabinet(door=True),
            "clock_step": lambda: self.clock.step_wall(float(detail)),
        }
        at = self.clock.now()
        actions[fault]()
        record = Injected(at, fault, target, detail)
        self.injected.append(record)
        return record

    def _lantern(self, lamp_id: str) -> Lantern:
        if lamp_id not in self.lanterns:
            raise KeyError(f"no lamp {lamp_id!r} on the bench")
        return self.lanterns[lamp_id]

    def _post(self, bollard_id: str) -> BollardPost:
        if bollard_id not in self.posts:
            raise KeyError(f"no bollard {bollard_id!r} on the bench")
        return self.posts[bollard_id]

    def _cut_wire(self, line: str) -> None:
        kind, _, rest = line.partition(".")
        device, _, name = rest.rpartition(".")
        if kind == "bollards":
            self._post(device).cut_wire(f"{name}_pin")
        elif kind == "lamps" and name == "sense":
            self._lantern(device).cut_sense_wire()
        elif line == "cabinet.mains":
            self._cabinet(mains=False)
        else:
            raise KeyError(f"no input line {line!r} to cut on the bench")

    def _controller_lost(self, crossing_id: str) -> None:
        if crossing_id not in self.controllers:
            raise KeyError(f"no crossing {crossing_id!r} on the bench")
        self._alive(crossing_id, False)
        self.controllers[crossing_id].disconnect()

    def _weld_green(self, line: str) -> None:
        self.factory.pin(self.inventory.pin(line)).state = True

    def _alive(self, crossing_id: str, alive: bool) -> None:
        crossing = next(c for c in self.inventory.crossings if c.id == crossing_id)
        if crossing.alive is not None:
            _drive(self.factory.pin(crossing.alive), alive)

    def _cabinet(self, *, mains: bool | None = None, door: bool | None = None) -> None:
        cabinet = self.inventory.cabinet
        if cabinet is None:
            return
        if mains is not None:
            _drive(self.factory.pin(cabinet.mains), mains)
        if door is not None:
            _drive(self.factory.pin(cabinet.door), door)


def _drive(pin: ClockedMockPin, high: bool) -> None:
    if pin.function != "input":
        return  # an output someone else drives: not the street's to set
    if high:
        pin.drive_high()
    else:
        pin.drive_low()


def lines_in(trace: Sequence[PinChange], inventory: Inventory) -> Iterator[tuple[PinChange, str]]:
    """Each change of ``trace`` with the inventory line on its pin."""
    for change in trace:
        yield change, inventory.line_of(change.pin)
