"""The node's copy of its lamp program: the switch points of the coming days.

The cabinet computes them from the site's schedule (calendars, sunset and sunrise, the
local time zone and its DST changes) and sends each instant as Unix epoch seconds (UTC).
So the node needs no time-zone database and no astronomy: midnight is not an event for
it, and a DST change is at most one more switch point at the instant the cabinet chose.

A program covers ``[t0, t0 + end)``. Before ``t0`` and from ``t0 + end`` on it says
nothing (``None``) and the node uses its default level: a program that ran out, like one
that never came, never leaves the street dark.

Programs are built by :func:`edge.node.bus.decode_program`, which refuses every invalid
one; the constructor here trusts its arguments.
"""


class Program:
    """Switch points relative to ``t0``: ``levels[i]`` holds from ``t0 + offsets[i]``.

    Attributes:
        number: the version the cabinet gave it (higher is newer).
        t0: the first switch point, epoch seconds.
        end: seconds after ``t0`` at which the program stops saying anything.
        offsets: strictly increasing seconds after ``t0``, the first one 0.
        levels: the level (0..100) from each offset on.
    """

    __slots__ = ("end", "levels", "number", "offsets", "t0")

    def __init__(
        self,
        number: int,
        t0: int,
        end: int,
        offsets: list[int] | tuple[int, ...],
        levels: list[int] | tuple[int, ...],
    ) -> None:
        self.number = number
        self.t0 = t0
        self.end = end
        self.offsets: tuple[int, ...] = tuple(offsets)
        self.levels: tuple[int, ...] = tuple(levels)

    def covers(self, epoch_s: float) -> bool:
        """Whether the program says something at ``epoch_s``."""
        return self.t0 <= epoch_s < self.t0 + self.end

    def level_at(self, epoch_s: float) -> int | None:
        """The level in force at ``epoch_s``, or None outside the program."""
        if not self.covers(epoch_s):
            return None
        return self.levels[self._index(epoch_s - self.t0)]

    def next_switch(self, epoch_s: float) -> int | None:
        """The first instant after ``epoch_s`` at which :meth:`level_at` may change.

        None once the program has ended; ``t0`` before it starts; ``t0 + end`` after its
        last switch point.
        """
        if epoch_s >= self.t0 + self.end:
            return None
        if epoch_s < self.t0:
            return self.t0
        i = self._index(epoch_s - self.t0) + 1
        if i < len(self.offsets):
            return self.t0 + self.offsets[i]
        return self.t0 + self.end

    def _index(self, offset: float) -> int:
        # The last point at or before ``offset``: offsets[0] is 0, so there is one.
        lo, hi = 0, len(self.offsets)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.offsets[mid] <= offset:
                lo = mid
            else:
                hi = mid
        return lo

    def same_as(self, other: "Program | None") -> bool:
        """Whether ``other`` says exactly the same thing (so storing it again is a waste)."""
        return (
            other is not None
            and self.number == other.number
            and self.t0 == other.t0
            and self.end == other.end
            and self.offsets == other.offsets
            and self.levels == other.levels
        )
