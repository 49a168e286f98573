"""Random interleavings against a real signal controller shell and the simulated controller.

The agent's :class:`SignalController` (with its crossing's safety card) runs the simulated
controller (lamps on gpiozero mock pins, its own conflict monitor) under a manual clock.
Hypothesis interleaves new plans documents (random conflicts above the card, random valid
plans), documents that drop a conflict of the card (which must be refused), modes, bus
priority requests, time passing, wall-clock steps both ways, a cut link to the controller,
agent restarts and a shell whose status read raises (then made safe and restarted, as the
agent's supervisor does). Every second the green lamps are read from the pins and checked
(:class:`tests.safety.crossings.GreenWatch`): no two conflicting groups green together, in
the document in force nor across a change, no green earlier than the intergreen of the
stricter matrix; and the controller's independent conflict monitor never trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain.signals.plans import Intergreen, SignalPlanError, SignalPlans
from domain.signals.safety_card import SafetyCard
from edge.equipment.signal.controller import (
    DARK,
    FLASHING_AMBER,
    NORMAL,
    SignalController,
)
from edge.equipment.sim.crossing import SimulatedSignalController
from foundation.clock import ManualClock
from tests.safety.conftest import TIMEOUT_S, explore, tally
from tests.safety.crossings import GROUPS, HEADS, GreenWatch, documents
from tests.safety.machines import START, drain


class CrossingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock(START)
        self.factory = MockFactory()
        self.sim: SimulatedSignalController | None = None
        self.shell: SignalController | None = None
        self.task: asyncio.Task[None] | None = None
        self.watch: GreenWatch | None = None
        self.document: SignalPlans | None = None

    @initialize(data=st.data())
    def commission(self, data: st.DataObject) -> None:
        self.groups = GROUPS[: data.draw(st.integers(2, 4))]
        pairs = [frozenset(p) for p in itertools.combinations(self.groups, 2)]
        self.card_pairs = data.draw(st.sets(st.sampled_from(pairs)))
        first = data.draw(documents(self.groups, frozenset(self.card_pairs)))
        self.card = self._card(first)
        self.sim = SimulatedSignalController(
            heads={g: HEADS[g] for g in self.groups},
            conflicts=self.card.conflicts,
            clock=self.clock,
            pin_factory=self.factory,
            watchdog_s=10,
        )
        self._start_shell()
        self._load(first)
        self._run(self._shell().apply("p", NORMAL))
        self.watch = GreenWatch(first)

    def _card(self, document: SignalPlans) -> SafetyCard:
        """The card: the first document's conflicts and intergreens, its minimum greens."""
        x = document.intersection
        entries = tuple(
            Intergreen(a, b, x.intergreen(a, b) or 0)
            for pair in self.card_pairs
            for a, b in (sorted(pair), sorted(pair, reverse=True))
        )
        greens = {g.id: g.min_green_s for g in x.groups}
        return SafetyCard(self.groups, entries, greens, 3, 1)

    # -- harness ---------------------------------------------------------------------------

    def _shell(self) -> SignalController:
        assert self.shell is not None
        return self.shell

    def _run(self, coroutine: object) -> object:
        return self.loop.run_until_complete(coroutine)  # type: ignore[arg-type]

    def _start_shell(self) -> None:
        assert self.sim is not None
        self.shell = SignalController(
            device_id="x",
            driver=self.sim,
            clock=self.clock,
            sink=lambda event: None,
            card=self.card,
            poll_interval_s=2,
        )
        self.task = self.loop.create_task(self.shell.run())

    def _load(self, document: SignalPlans) -> None:
        self._run(self._shell().load_plans(document))
        self.document = document

    def settle(self) -> None:
        drain(self.loop)
        if self.task is not None and self.task.done():
            # The agent's supervisor: crossing to flashing, then the shell again.
            assert isinstance(self.task.exception(), RuntimeError)
            self._run(self._shell().fail_safe())
            self._start_shell()
            if self.document is not None:
                self._run(self._shell().load_plans(self.document))
            drain(self.loop)
        self.check()

    def check(self) -> None:
        if self.sim is None or self.watch is None:
            return
        # The crossing in force is the one the controller holds: with its link cut, a new
        # document waits in the shell until the controller answers again.
        running = self.sim._intersection
        if running is not None:
            self.watch.change(running, int(self.clock.monotonic()))
        greens = set(self._greens())
        violations = self.watch.observe(int(self.clock.monotonic()), greens)
        assert not violations, violations
        faults = [f for f in self.sim._faults if f.startswith(("conflict:", "green_"))]
        assert not faults, f"the conflict monitor tripped: {faults}"

    def teardown(self) -> None:
        if self.task is not None:
            self.task.cancel()
            drain(self.loop)
        if self.sim is not None:
            self.sim.close()
        self.factory.reset()
        self.loop.close()

    @invariant()
    def count(self) -> None:
        tally("crossing").steps += 1

    # -- rules -------------------------------------------------------------------------------

    @rule(data=st.data())
    def new_document(self, data: st.DataObject) -> None:
        extra = data.draw(
            st.sets(st.sampled_from([frozenset(p) for p in itertools.combinations(self.groups, 2)]))
        )
        document = data.draw(documents(self.groups, frozenset(self.card_pairs | extra)))
        with contextlib.suppress(SignalPlanError):  # below the card's times: refused
            self._load(document)
        self.settle()

    @rule(data=st.data(), after=st.integers(0, 4))
    def new_document_as_a_green_starts(self, data: st.DataObject, after: int) -> None:
        """A new document lands just after a green started: the moment a plan change can
        leave groups green that the new document says conflict."""
        assert self.sim is not None
        before = set(self._greens())
        for _ in range(240):
            self.clock.advance(1)
            self.settle()
            if set(self._greens()) - before:
                break
            before = set(self._greens())
        for _ in range(after):
            self.clock.advance(1)
            self.settle()
        self.new_document(data)

    def _greens(self) -> list[str]:
        assert self.sim is not None
        return [g for g, aspect in self.sim.aspects().items() if "green" in aspect.split("+")]

    @rule(data=st.data())
    def weaker_document(self, data: st.DataObject) -> None:
        if not self.card_pairs:
            return
        dropped = data.draw(st.sampled_from(sorted(self.card_pairs, key=sorted)))
        document = data.draw(documents(self.groups, frozenset(self.card_pairs - {dropped})))
        before = self._shell().plans
        with pytest.raises(SignalPlanError):
            self._run(self._shell().load_plans(document))
        assert self._shell().plans is before
        self.settle()

    @rule(mode=st.sampled_from([NORMAL, NORMAL, FLASHING_AMBER, DARK]))
    def mode(self, mode: int) -> None:
        self._run(self._shell().apply("p", mode))  # type: ignore[arg-type]
        self.settle()

    @rule(group=st.sampled_from(GROUPS))
    def bus(self, group: str) -> None:
        self._run(self._shell().request_bus_priority(group, "bus-1"))
        self.settle()

    @rule(seconds=st.integers(1, 90))
    def wait(self, seconds: int) -> None:
        for _ in range(seconds):
            self.clock.advance(1)
            self.settle()

    @rule(seconds=st.floats(-2 * 86400, 2 * 86400))
    def wall_step(self, seconds: float) -> None:
        self.clock.step_wall(seconds)
        self.settle()

    @rule(cut=st.booleans())
    def link_to_controller(self, cut: bool) -> None:
        assert self.sim is not None
        (self.sim.disconnect if cut else self.sim.reconnect)()
        self.settle()

    @rule()
    def agent_restart(self) -> None:
        assert self.task is not None
        self.task.cancel()
        drain(self.loop)
        self._start_shell()
        if self.document is not None:
            self._run(self._shell().load_plans(self.document))
            self._run(self._shell().apply("p", NORMAL))
        self.settle()

    @rule()
    def status_read_raises(self) -> None:
        assert self.sim is not None
        sim = self.sim

        async def broken() -> object:
            del sim.read_status  # once: the next read works again
            raise RuntimeError("controller answered garbage")

        sim.read_status = broken  # type: ignore[method-assign]
        self.clock.advance(2)
        self.settle()


@pytest.mark.timeout(TIMEOUT_S)
def test_crossing_safety_under_random_interleavings() -> None:
    explore("crossing", lambda: CrossingMachine, examples=100, steps=30)
