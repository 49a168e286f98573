"""The console's live states (orchestrator.console.states): what each open console is sent
of the cabinets it follows, driven pass by pass, with the store's side an in-memory
stand-in that counts its reads."""

from __future__ import annotations

import asyncio

from orchestrator.console.pages import device_code, device_summary
from orchestrator.console.states import LiveStates, shown
from protos.ondijon.v1 import link_pb2, schedule_pb2, state_pb2


def lamp(device_id: str, level: int, *, lit: bool = True) -> state_pb2.DeviceState:
    return state_pb2.DeviceState(
        device_id=device_id,
        kind=schedule_pb2.DEVICE_KIND_LAMP,
        lamp=state_pb2.LampState(level=level, lit=lit, energy_wh=float(level)),
    )


def report(*devices: state_pb2.DeviceState) -> link_pb2.StateReport:
    return link_pb2.StateReport(devices=list(devices))


class Store:
    """The devices as stored, per cabinet; every read is counted with what it asked."""

    def __init__(self) -> None:
        self.devices: dict[str, list[state_pb2.DeviceState]] = {}
        self.reads: list[list[str]] = []
        self.gate: asyncio.Event | None = None

    async def read(self, gateway_ids: list[str]) -> dict[str, list[state_pb2.DeviceState]]:
        self.reads.append(sorted(gateway_ids))
        if self.gate is not None:
            await self.gate.wait()
        return {g: list(self.devices.get(g, [])) for g in gateway_ids}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def live(store: Store, local: set[str], clock: Clock | None = None) -> LiveStates:
    # The tests drive the passes themselves (the server runs LiveStates.run).
    return LiveStates(read=store.read, local=lambda g: g in local, monotonic=clock or Clock())


async def test_the_first_frame_is_the_whole_state_then_only_what_changed() -> None:
    store = Store()
    store.devices["dj-01"] = [lamp("lamp-001", 100), lamp("lamp-002", 100)]
    states = live(store, {"dj-01"})
    follower = states.follow(["dj-01"], lambda g: True)
    await states.tick()
    assert follower.take() == {
        "dj-01": {"lamp-001": ("100 % lit", "l"), "lamp-002": ("100 % lit", "l")}
    }
    # The same state again (only the energy counter moved): nothing to send.
    states.stored("dj-01", report(lamp("lamp-001", 100), lamp("lamp-002", 100)))
    await states.tick()
    assert follower.take() == {}
    states.stored("dj-01", report(lamp("lamp-002", 50)))
    await states.tick()
    assert follower.take() == {"dj-01": {"lamp-002": ("50 % lit", "d")}}


async def test_one_read_and_one_fold_for_every_console_following_a_cabinet() -> None:
    store = Store()
    store.devices["dj-01"] = [lamp("lamp-001", 100)]
    states = live(store, {"dj-01"})
    first = [states.follow(["dj-01"], lambda g: True) for _ in range(10)]
    await states.tick()
    # A console arriving later gets the whole state at once, with no read.
    late = states.follow(["dj-01"], lambda g: True)
    assert late.take() == {"dj-01": {"lamp-001": ("100 % lit", "l")}}
    for n in range(50):
        states.stored("dj-01", report(lamp("lamp-001", n % 2 * 50 + 50)))
        await states.tick()
    assert store.reads == [["dj-01"]]
    for follower in [*first, late]:
        frame = follower.take()
        assert frame == {"dj-01": {"lamp-001": ("100 % lit", "l")}}


async def test_a_slow_console_gets_the_latest_state_of_each_device_in_one_frame() -> None:
    store = Store()
    store.devices["dj-01"] = [lamp(f"lamp-{i:03d}", 100) for i in range(1, 4)]
    states = live(store, {"dj-01"})
    slow = states.follow(["dj-01"], lambda g: True)
    await states.tick()
    slow.take()
    slow.ready.clear()
    # 1,000 reports over 100 passes while the console takes nothing.
    for n in range(1000):
        device = f"lamp-{n % 2 + 1:03d}"
        states.stored("dj-01", report(lamp(device, n % 100)))
        if n % 10 == 9:
            await states.tick()
    assert slow.ready.is_set()
    # What waits is one entry per device changed, the latest: never a queue of frames.
    assert slow.take() == {"dj-01": {"lamp-001": ("98 % lit", "d"), "lamp-002": ("99 % lit", "d")}}


async def test_a_cabinet_out_of_scope_is_never_offered_and_comes_back_whole() -> None:
    store = Store()
    store.devices["dj-01"] = [lamp("lamp-001", 100)]
    store.devices["ch-01"] = [lamp("lamp-001", 100)]
    states = live(store, {"dj-01", "ch-01"})
    allowed = {"dj-01"}
    follower = states.follow(["dj-01", "ch-01"], lambda g: g in allowed)
    await states.tick()
    assert set(follower.take()) == {"dj-01"}
    states.stored("ch-01", report(lamp("lamp-001", 40)))
    states.stored("dj-01", report(lamp("lamp-001", 40)))
    await states.tick()
    assert follower.take() == {"dj-01": {"lamp-001": ("40 % lit", "d")}}
    # Offered while in scope, the scope narrowed before the frame was taken: withheld.
    allowed.add("ch-01")
    states.stored("ch-01", report(lamp("lamp-001", 0, lit=False)))
    await states.tick()
    allowed.discard("ch-01")
    assert follower.take() == {}
    # Back in scope: its whole state, as it is now.
    allowed.add("ch-01")
    states.rescope(follower)
    assert follower.take() == {"ch-01": {"lamp-001": ("0 % off", "0")}}


async def test_reports_stored_during_the_first_read_are_applied_over_it() -> None:
    store = Store()
    store.devices["dj-01"] = [lamp("lamp-001", 100)]
    store.gate = asyncio.Event()
    states = live(store, {"dj-01"})
    follower = states.follow(["dj-01"], lambda g: True)
    reading = asyncio.create_task(states.tick())
    await asyncio.sleep(0)
    states.stored("dj-01", report(lamp("lamp-001", 30)))
    store.gate.set()
    await reading
    assert follower.take() == {"dj-01": {"lamp-001": ("30 % lit", "d")}}


async def test_a_cabinet_streaming_to_another_replica_is_read_again_once_a_second() -> None:
    store = Store()
    store.devices["dj-01"] = [lamp("lamp-001", 100)]  # its stream is here
    store.devices["ta-01"] = [lamp("lamp-001", 100)]  # its stream is on another replica
    clock = Clock()
    states = live(store, {"dj-01"}, clock)
    followers = [states.follow(["dj-01", "ta-01"], lambda g: True) for _ in range(20)]
    await states.tick()
    assert store.reads == [["dj-01", "ta-01"]]
    store.devices["ta-01"] = [lamp("lamp-001", 20)]
    clock.now += 0.5
    await states.tick()
    assert len(store.reads) == 1
    clock.now += 0.5
    await states.tick()
    # One read for twenty consoles, of the remote cabinet only.
    assert store.reads == [["dj-01", "ta-01"], ["ta-01"]]
    for follower in followers:
        assert follower.take()["ta-01"] == {"lamp-001": ("20 % lit", "d")}


async def test_nothing_is_kept_or_read_for_a_cabinet_nobody_follows() -> None:
    store = Store()
    store.devices["dj-01"] = [lamp("lamp-001", 100)]
    states = live(store, set())
    follower = states.follow(["dj-01"], lambda g: True)
    await states.tick()
    states.unfollow(follower)
    assert states.followed() == set()
    states.stored("dj-01", report(lamp("lamp-001", 10)))
    await states.tick()
    assert store.reads == [["dj-01"]]


async def test_the_passes_run_while_someone_follows() -> None:
    store = Store()
    store.devices["dj-01"] = [lamp("lamp-001", 100)]
    states = LiveStates(read=store.read, local=lambda g: True, frame_s=0.01)
    passes = asyncio.create_task(states.run())
    try:
        await asyncio.sleep(0.05)
        assert store.reads == []  # nobody follows: nothing done
        follower = states.follow(["dj-01"], lambda g: True)
        await asyncio.wait_for(follower.ready.wait(), 2)
        assert follower.take() == {"dj-01": {"lamp-001": ("100 % lit", "l")}}
        follower.ready.clear()
        states.stored("dj-01", report(lamp("lamp-001", 60)))
        await asyncio.wait_for(follower.ready.wait(), 2)
        assert follower.take() == {"dj-01": {"lamp-001": ("60 % lit", "d")}}
        states.unfollow(follower)
        assert store.reads == [["dj-01"]]
    finally:
        passes.cancel()


def test_what_a_device_shows_is_the_cabinet_pages_text_and_the_maps_colour() -> None:
    devices = [
        lamp(f"lamp-{level}-{lit}", level, lit=lit)
        for level in (0, 1, 50, 99, 100)
        for lit in (True, False)
    ]
    devices.append(
        state_pb2.DeviceState(
            device_id="lamp-f",
            kind=schedule_pb2.DEVICE_KIND_LAMP,
            lamp=state_pb2.LampState(level=100, lit=True, faults=["driver"]),
        )
    )
    devices.append(
        state_pb2.DeviceState(
            device_id="bollard-1",
            kind=schedule_pb2.DEVICE_KIND_BOLLARD,
            bollard=state_pb2.BollardState(emergency=True),
        )
    )
    for _ in range(2):  # described, then remembered: the same either way
        for device in devices:
            assert shown(device) == (device_summary(device), device_code(device))


async def test_a_change_goes_out_at_once_when_the_reports_before_it_changed_nothing() -> None:
    store = Store()
    store.devices["dj-01"] = [lamp("lamp-001", 100)]
    states = LiveStates(read=store.read, local=lambda g: True, frame_s=1.0)
    passes = asyncio.create_task(states.run())
    try:
        follower = states.follow(["dj-01"], lambda g: True)
        await asyncio.wait_for(follower.ready.wait(), 2)
        follower.take()
        await asyncio.sleep(1.1)  # the frame above holds the next pass back a second
        follower.ready.clear()
        for _ in range(6):  # an agent reporting ten times a second, nothing changing
            states.stored("dj-01", report(lamp("lamp-001", 100)))
            await asyncio.sleep(0.05)
        states.stored("dj-01", report(lamp("lamp-001", 40)))
        changed = asyncio.get_running_loop().time()
        await asyncio.wait_for(follower.ready.wait(), 2)
        # Not held back by the unchanged reports: well under the second between frames.
        assert asyncio.get_running_loop().time() - changed < 0.5
        assert follower.take() == {"dj-01": {"lamp-001": ("40 % lit", "d")}}
    finally:
        passes.cancel()
