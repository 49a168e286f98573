"""A bollard's safety on the bench: the fire brigade's key always wins, an obstruction on
the rising post reverses it.

The agent holds a schedule that wants the post up (a pedestrian street closed from
22:00) and runs on the bench's mock pins; the bench plays the post
(:class:`~edge.equipment.sim.bollard.BollardPost`) and turns the key or puts an obstacle
on the post, then checks the motor pins, timed in the agent's seconds.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from street import street
from test_hil_bollard import CLOSING, SCHEDULE, Lines, rising_edges, wait_for_the_post

from edge.bench.inventory import Inventory
from edge.bench.report import Record


async def test_the_fire_brigades_key_lowers_the_post_at_once_and_holds_it_down(
    tmp_path: Path, sim_bench: Inventory, record: Record
) -> None:
    """Emergency lowering: the key turned on a raised post (the schedule wants it up):
    the down motor starts at the same instant, the post is down within its lowering time,
    and nothing raises it again while the key is on, schedule notwithstanding."""
    lines = Lines.of(sim_bench)
    device = sim_bench.bollards[0].id
    wired = sim_bench.bollards[0]
    lower_s = wired.sim.lower_s or wired.lower_s  # the post's own travel time
    async with street(
        tmp_path, sim_bench, start=CLOSING - timedelta(seconds=5), kinds=["bollards"],
        documents=[SCHEDULE], record=record,
    ) as bench:  # fmt: skip
        sim = bench.bollard()
        await bench.run_until(CLOSING + timedelta(seconds=10), step_s=0.1)
        assert sim.position >= 0.99, "the post did not rise at closing time"

        turned = bench.inject("emergency", device)
        await bench.run_for(lower_s + 1, step_s=0.1)
        down = rising_edges(sim.factory.history, lines.motor_down)
        assert down, "the down motor never started"
        bench.measure("emergency_to_down_motor_s", (down[-1] - turned).total_seconds(),
                      unit="s", low=0.0, high=0.1,
                      description="key turned to the down motor starting")  # fmt: skip
        assert sim.position <= 0.01
        bottom = [c.at for c in sim.factory.history if c.pin == lines.motor_down][-1]
        bench.measure("emergency_lowering_s", (bottom - turned).total_seconds(), unit="s",
                      low=0.0, high=lower_s + 0.2,
                      description="key turned to the post down (its motor off)")  # fmt: skip

        held_from = bench.clock.now()
        await bench.run_for(120, step_s=0.5)  # the schedule still wants it up
        assert [t for t in rising_edges(sim.factory.history, lines.motor_up) if t > turned] == []
        lit = rising_edges(sim.factory.history, lines.warning_light)
        assert [t for t in lit if t > held_from] == [], "a warning before a rise, key on"
        assert sim.position <= 0.01
        assert [e.device_id for e in bench.events("emergency_lowering")] == [device]


async def test_an_obstruction_on_the_rising_post_reverses_it(
    tmp_path: Path, sim_bench: Inventory, record: Record
) -> None:
    """Obstruction during rise: something on the post closes the pressure edge when the
    crown reaches it; the up motor stops and the down motor starts at that instant, the
    post goes back down; each later try (after the agent's retry delay) stops the same
    way, so the post never passes the obstacle."""
    lines = Lines.of(sim_bench)
    device = sim_bench.bollards[0].id
    async with street(
        tmp_path, sim_bench, start=CLOSING - timedelta(seconds=5), kinds=["bollards"],
        documents=[SCHEDULE], record=record,
    ) as bench:  # fmt: skip
        sim = bench.bollard()
        await bench.run_until(CLOSING, step_s=0.1)
        await wait_for_the_post(bench, sim, 0.2)
        bench.inject("obstruction", device, "0.5")  # a pushchair over the post at half height
        await bench.run_for(20, step_s=0.05)

        edge = [c for c in sim.factory.history if c.pin == bench.inventory.pin(
            f"bollards.{device}.edge") and c.at >= CLOSING]  # fmt: skip
        assert edge, "the pressure edge never changed"
        touched = edge[0].at
        up_stops = [c.at for c in sim.factory.history if c.pin == lines.motor_up and not c.state]
        down = rising_edges(sim.factory.history, lines.motor_down)
        bench.measure("edge_to_up_motor_off_s", (up_stops[0] - touched).total_seconds(),
                      unit="s", low=0.0, high=0.05)  # fmt: skip
        bench.measure("edge_to_down_motor_s", (down[0] - touched).total_seconds(),
                      unit="s", low=0.0, high=0.05)  # fmt: skip
        rise_s = sim_bench.bollards[0].sim.rise_s or sim_bench.bollards[0].rise_s
        ups = [c for c in sim.factory.history if c.pin == lines.motor_up and c.at >= CLOSING]
        bench.measure(
            "crown_height_at_contact",
            (touched - ups[0].at) / timedelta(seconds=rise_s),
            low=0.45,
            high=0.55,
            description="travel before the edge closed: the obstacle at half height",
        )
        longest = max(off.at - on.at for on, off in zip(ups[::2], ups[1::2], strict=False))
        bench.measure("longest_up_run_s", longest.total_seconds(), unit="s",
                      high=0.5 * rise_s + 0.05,
                      description="no rise ran past the obstacle (half the travel)")  # fmt: skip
        up_limit = bench.inventory.pin(f"bollards.{device}.up_limit")
        assert [c for c in sim.factory.history if c.pin == up_limit and c.at >= CLOSING] == []
        causes = {e.attributes.get("cause") for e in bench.events("reversed")}
        assert causes == {"obstruction"}, causes
