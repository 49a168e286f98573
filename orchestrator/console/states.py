"""The devices' states the open consoles follow, pushed to them instead of polled.

A console's live feed follows a few cabinets: the one its cabinet page shows, or those on
the map's screen (at most :data:`orchestrator.console.citymap.MAX_GATEWAYS`).
:class:`LiveStates` keeps, for every cabinet that at least one console follows, each
device's state as the page shows it (its text and its map colour): read from the store
once, when the first console follows the cabinet, then folded from every state report the
link stores (:meth:`LiveStates.stored`, called after the write: one dictionary lookup for
a cabinet nobody follows, never a wait).

One pass (:meth:`LiveStates.tick`) turns what was reported into one frame per console, at
once after a quiet spell, then at most every :data:`FRAME_S` while changes keep coming:
only the devices whose text or colour changed since the console's last frame, only the
cabinets it follows and its operator may see (its communes, as last read by its feed). The
work is done once for every console: one fold per report, one text per device changed,
and a store read only for a cabinet followed for the first time or whose stream is on
another replica (several replicas on PostgreSQL: its reports are stored there; such
cabinets are read again every :data:`REMOTE_READ_S`, all in one read, whatever the number
of consoles).

A console that does not take its frames as fast as they come holds nothing up: what waits
for it is one dictionary per cabinet it follows, the latest state of each device changed
(its next frame merges them); a frame is never queued behind another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from orchestrator.console.pages import device_code, device_summary
from protos.ondijon.v1 import link_pb2, state_pb2

log = logging.getLogger("ondijon.orchestrator")

FRAME_S = 0.25
REMOTE_READ_S = 1.0

# What the page shows of a device: its text and its map colour code.
Shown = tuple[str, str]
Frame = dict[str, dict[str, Shown]]
ReadDevices = Callable[[list[str]], Awaitable[dict[str, list[state_pb2.DeviceState]]]]


# What a lamp shows depends on its level, whether it is lit and its faults only: the few
# combinations seen are described once (a city's lamps share a handful of them), not at
# every report. Bounded: a gateway sending odd levels cannot grow it without end.
_LAMPS: dict[tuple[int, bool, tuple[str, ...]], Shown] = {}
_LAMPS_MAX = 4096


def shown(device: state_pb2.DeviceState) -> Shown:
    """The device's text and map colour (:func:`device_summary`, :func:`device_code`)."""
    if device.WhichOneof("detail") != "lamp":
        return device_summary(device), device_code(device)
    lamp = device.lamp
    key = (lamp.level, lamp.lit, tuple(lamp.faults))
    found = _LAMPS.get(key)
    if found is None:
        if len(_LAMPS) >= _LAMPS_MAX:
            _LAMPS.clear()
        found = _LAMPS[key] = (device_summary(device), device_code(device))
    return found


@dataclass(eq=False)
class Follower:
    """One console's live feed: the cabinets it follows and what waits for its next frame.

    Attributes:
        gateway_ids: the cabinets followed.
        visible: whether the operator may see a cabinet (its feed keeps the scope fresh).
        pending: cabinet -> device -> what changed since the last frame (latest only).
        ready: set when something is offered (whoever waits on it clears it: the feed
            shares it with its events).
        hidden: cabinets whose changes were withheld while out of scope: their whole state
            is sent if they come back into it (:meth:`LiveStates.rescope`).
    """

    gateway_ids: frozenset[str]
    visible: Callable[[str], bool]
    pending: Frame = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    hidden: set[str] = field(default_factory=set)

    def offer(self, gateway_id: str, changes: dict[str, Shown]) -> None:
        if not changes:
            return
        if not self.visible(gateway_id):
            self.hidden.add(gateway_id)
            return
        self.pending.setdefault(gateway_id, {}).update(changes)
        self.ready.set()

    def take(self) -> Frame:
        """The next frame (empty if nothing changed), checked against the scope again."""
        frame: Frame = {}
        for gateway_id, devices in self.pending.items():
            if self.visible(gateway_id):
                frame[gateway_id] = devices
            else:
                self.hidden.add(gateway_id)
        self.pending = {}
        return frame


@dataclass(eq=False)
class _Cabinet:
    """A followed cabinet: what its devices show, and what was reported since the last pass."""

    followers: set[Follower] = field(default_factory=set)
    shown: dict[str, Shown] = field(default_factory=dict)
    reported: dict[str, state_pb2.DeviceState] = field(default_factory=dict)
    loaded: bool = False
    # Not connected to this process when last read (its reports may be stored elsewhere).
    remote: bool = True
    read_at: float = -float("inf")


class LiveStates:
    """The followed cabinets' device states, and the consoles that follow them."""

    def __init__(
        self,
        *,
        read: ReadDevices,
        local: Callable[[str], bool],
        monotonic: Callable[[], float] = time.monotonic,
        frame_s: float = FRAME_S,
        remote_read_s: float = REMOTE_READ_S,
    ) -> None:
        """``read``: the current devices of some cabinets, from the store; ``local``:
        whether a cabinet's stream is on this process (its reports come through
        :meth:`stored`)."""
        self._read = read
        self._local = local
        self._monotonic = monotonic
        self.frame_s = frame_s
        self.remote_read_s = remote_read_s
        self._cabinets: dict[str, _Cabinet] = {}
        self._followers: set[Follower] = set()
        self._someone = asyncio.Event()
        self._reported = asyncio.Event()
        # Cabinets reported since the last pass; whether to look for cabinets to read.
        self._dirty: set[str] = set()
        self._scan = False
        self._scanned_at = -float("inf")
        # How many store reads the passes made (one per pass at most), for tests and benches.
        self.reads = 0

    # -- the link's side ----------------------------------------------------------------

    def stored(self, gateway_id: str, report: link_pb2.StateReport) -> None:
        """A state report of ``gateway_id`` was stored (the link calls this after the write)."""
        cabinet = self._cabinets.get(gateway_id)
        if cabinet is None:
            return
        reported = cabinet.reported
        for device in report.devices:
            reported[device.device_id] = device
        self._dirty.add(gateway_id)
        self._reported.set()

    # -- the consoles' side -------------------------------------------------------------

    def follow(
        self,
        gateway_ids: Iterable[str],
        visible: Callable[[str], bool],
        ready: asyncio.Event | None = None,
    ) -> Follower:
        """Follow ``gateway_ids``: the first frame holds their whole state (at once for a
        cabinet already followed, after its read otherwise), later ones what changed;
        ``ready`` is set whenever there is something to take."""
        follower = Follower(
            frozenset(gateway_ids), visible, ready=ready if ready is not None else asyncio.Event()
        )
        for gateway_id in follower.gateway_ids:
            cabinet = self._cabinets.setdefault(gateway_id, _Cabinet())
            cabinet.followers.add(follower)
            if cabinet.loaded:
                follower.offer(gateway_id, dict(cabinet.shown))
        self._followers.add(follower)
        self._someone.set()
        self._scan = True
        self._reported.set()  # its first read, without waiting
        return follower

    def unfollow(self, follower: Follower) -> None:
        self._followers.discard(follower)
        for gateway_id in follower.gateway_ids:
            cabinet = self._cabinets.get(gateway_id)
            if cabinet is None:
                continue
            cabinet.followers.discard(follower)
            if not cabinet.followers:
                del self._cabinets[gateway_id]

    def rescope(self, follower: Follower) -> None:
        """After ``follower``'s scope was read again: a cabinet back in it gets its whole
        state (what changed while it was out was withheld)."""
        for gateway_id in list(follower.hidden):
            if not follower.visible(gateway_id):
                continue
            follower.hidden.discard(gateway_id)
            cabinet = self._cabinets.get(gateway_id)
            if cabinet is not None and cabinet.loaded:
                follower.offer(gateway_id, dict(cabinet.shown))

    def followed(self) -> set[str]:
        """The cabinets some console follows."""
        return set(self._cabinets)

    # -- the passes -----------------------------------------------------------------------

    async def tick(self) -> bool:
        """One pass: read the cabinets due (one read for all), fold what was reported,
        offer each console what changed; whether anything was offered."""
        now = self._monotonic()
        offered = False
        if self._scan or now - self._scanned_at >= self.frame_s:
            # Cabinets followed for the first time, or streaming to another replica.
            self._scan, self._scanned_at = False, now
            due = [
                gateway_id
                for gateway_id, cabinet in self._cabinets.items()
                if not cabinet.loaded
                or (
                    (cabinet.remote or not self._local(gateway_id))
                    and now - cabinet.read_at >= self.remote_read_s
                )
            ]
            if due:
                offered = await self._read_due(due, now)
        dirty, self._dirty = self._dirty, set()
        for gateway_id in dirty:
            cabinet = self._cabinets.get(gateway_id)
            if cabinet is None:
                continue
            if not cabinet.loaded:  # its first read comes first
                self._dirty.add(gateway_id)
                continue
            reported, cabinet.reported = cabinet.reported, {}
            offered |= self._offer(gateway_id, cabinet, self._fold(cabinet, reported.values()))
        return offered

    async def _read_due(self, due: list[str], now: float) -> bool:
        reading = {gateway_id: self._cabinets[gateway_id] for gateway_id in due}
        for gateway_id, cabinet in reading.items():
            cabinet.read_at = now
            cabinet.remote = not self._local(gateway_id)
        self.reads += 1
        try:
            read = await self._read(due)
        except BaseException:
            self._scan = True  # read them again at the next pass
            raise
        offered = False
        for gateway_id, cabinet in reading.items():
            if self._cabinets.get(gateway_id) is not cabinet:  # no longer followed
                continue
            first = not cabinet.loaded
            changes = self._fold(cabinet, read.get(gateway_id, ()))
            cabinet.loaded = True
            if cabinet.reported:
                self._dirty.add(gateway_id)  # reported during the read: over it
            offered |= self._offer(gateway_id, cabinet, dict(cabinet.shown) if first else changes)
        return offered

    @staticmethod
    def _fold(cabinet: _Cabinet, devices: Iterable[state_pb2.DeviceState]) -> dict[str, Shown]:
        changes: dict[str, Shown] = {}
        was = cabinet.shown
        for device in devices:
            now = shown(device)
            if was.get(device.device_id) != now:
                was[device.device_id] = changes[device.device_id] = now
        return changes

    @staticmethod
    def _offer(gateway_id: str, cabinet: _Cabinet, changes: dict[str, Shown]) -> bool:
        if not changes:
            return False
        for follower in cabinet.followers:
            follower.offer(gateway_id, changes)
        return True

    async def run(self) -> None:
        """The passes, while some console follows a cabinet (the server runs this for as
        long as the console serves): a change after a quiet spell goes out at once; after
        a pass that sent something, the next waits :attr:`frame_s` and takes whatever came
        meanwhile (a pass that found nothing to send holds nothing back)."""
        while True:
            if not self._followers:
                self._someone.clear()
                await self._someone.wait()
            with contextlib.suppress(TimeoutError):  # quiet: remote cabinets are still due
                await asyncio.wait_for(self._reported.wait(), self.frame_s)
            self._reported.clear()
            try:
                offered = await self.tick()
            except Exception:  # a store away: the next pass reads again
                log.warning("console live states: pass failed", exc_info=True)
                offered = True  # and not at once
            if offered:
                await asyncio.sleep(self.frame_s)
