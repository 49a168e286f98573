"""The node's decisions: command, program, default; never dark; ticks that wrap; clocks
that step; a reboot with or without a board clock. Runs on CPython and MicroPython.
"""

from edge.node.luminaire import Luminaire
from edge.node.program import Program
from edge.node.ticks import TICKS_PERIOD, ManualTicks, ticks_diff
from tests.edge.node.portable import raises

T0 = 1774699200  # 2026-03-28 12:00 UTC
HOUR = 3600
# off in the day, 100 % from 18:00 UTC, 50 % from 22:00, 100 % from 04:00, off from 06:00,
# for three days
POINTS = []
for day in range(3):
    base = day * 86400
    POINTS += [(base, 0), (base + 6 * HOUR, 100), (base + 10 * HOUR, 50)]
    POINTS += [(base + 16 * HOUR, 100), (base + 18 * HOUR, 0)]
PROGRAM = Program(9, T0, 3 * 86400, [o for o, _ in POINTS], [lv for _, lv in POINTS])


def _expected(t):
    level = None
    for o, lv in POINTS:
        if T0 + o <= t:
            level = lv
    return level


def _lum(ticks, program=PROGRAM, default=80, fallback_s=300):
    return Luminaire(default, fallback_s * 1000, ticks_diff, ticks.ms(), program)


def test_a_fallback_level_of_zero_is_refused():
    raises(ValueError, Luminaire, 0, 1000, ticks_diff, 0)


def test_without_gateway_and_time_the_node_lights_at_its_default_level():
    ticks = ManualTicks()
    lum = _lum(ticks)
    assert lum.decide(ticks.ms()) == (80, "d")
    lum.command(0, 1)  # a retained command without a live gateway is not obeyed
    assert lum.decide(ticks.ms()) == (80, "d")


def test_command_holds_for_the_fallback_time_then_the_program_rules():
    ticks = ManualTicks()
    lum = _lum(ticks)
    lum.heard_gateway(T0 + 7 * HOUR, ticks.ms())
    lum.command(20, 1)
    assert lum.decide(ticks.ms()) == (20, "c")
    ticks.advance(299_999)
    assert lum.decide(ticks.ms()) == (20, "c")
    assert lum.next_change_ms() == 1
    ticks.advance(1)
    assert lum.decide(ticks.ms()) == (100, "p")
    lum.heard_gateway(T0 + 7 * HOUR + 400, ticks.ms())
    assert lum.decide(ticks.ms()) == (20, "c")


def test_without_any_program_the_fallback_is_the_default_level_day_or_night():
    ticks = ManualTicks()
    lum = _lum(ticks, program=None)
    lum.heard_gateway(T0, ticks.ms())
    lum.command(0, 1)
    ticks.advance(300_000)
    assert lum.decide(ticks.ms()) == (80, "d")


def test_alone_for_days_across_tick_wraps_the_node_follows_its_program_then_the_default():
    start = TICKS_PERIOD - 5 * 60_000  # the counter wraps five minutes in
    ticks = ManualTicks(start)
    lum = _lum(ticks)
    lum.heard_gateway(T0, ticks.ms())
    lum.command(70, 1)
    wraps = 0
    t = T0
    step = 60_000  # a minute at a time, as many polls would
    for _ in range(4 * 24 * 60):
        before = ticks.ms()
        ticks.advance(step)
        wraps += ticks.ms() < before
        t += step // 1000
        level, mode = lum.decide(ticks.ms())
        if t - T0 < 300:
            assert (level, mode) == (70, "c")
        elif t < T0 + 3 * 86400:
            assert (level, mode) == (_expected(t), "p"), t
        else:
            assert (level, mode) == (80, "d"), t
    assert wraps >= 1
    assert lum.wall_s() == T0 + 4 * 86400


def test_a_clock_step_reevaluates_at_once():
    ticks = ManualTicks()
    lum = _lum(ticks, fallback_s=60)
    lum.heard_gateway(T0 + 5 * HOUR, ticks.ms())  # 17:00 UTC: off
    ticks.advance(60_000)
    assert lum.decide(ticks.ms()) == (0, "p")
    # the gateway's clock was an hour and a half late: it steps forward to 18:31
    assert lum.heard_gateway(T0 + 6 * HOUR + 31 * 60, ticks.ms()) is True
    ticks.advance(60_000)
    assert lum.decide(ticks.ms()) == (100, "p")
    # and back (an NTP correction the other way)
    assert lum.heard_gateway(T0 + 5 * HOUR, ticks.ms()) is True
    ticks.advance(60_000)
    assert lum.decide(ticks.ms()) == (0, "p")
    assert lum.clock_steps == 2
    # a heartbeat within the tolerance is no step
    assert lum.heard_gateway(T0 + 5 * HOUR + 61, ticks.ms()) is False


def test_after_a_reboot_the_board_clock_is_believed_only_inside_the_program():
    ticks = ManualTicks()
    lum = _lum(ticks)
    assert lum.decide(ticks.ms(), rtc_epoch_s=T0 + 11 * HOUR) == (50, "p")
    assert lum.decide(ticks.ms(), rtc_epoch_s=946684800) == (80, "d")  # lost power: 2000
    assert lum.decide(ticks.ms(), rtc_epoch_s=0) == (80, "d")  # 1970
    assert lum.decide(ticks.ms(), rtc_epoch_s=T0 + 30 * 86400) == (80, "d")


def test_a_counter_read_out_of_order_adds_no_time():
    ticks = ManualTicks(1000)
    lum = _lum(ticks)
    lum.heard_gateway(T0, 1000)
    lum.advance(500)
    assert lum.wall_s() == T0
    assert lum.uptime_s == 0
