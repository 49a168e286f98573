"""The node's program: the level at any instant, checked against a plain reference on
many random programs, across midnight and DST (which are nothing to the node: its switch
points are UTC epoch seconds). Runs on CPython and MicroPython.
"""

import random

from edge.node.program import Program

T0 = 1774699200  # 2026-03-28 12:00 UTC


def _reference(points, t0, end, t):
    # A linear scan over absolute instants, written apart from Program's bisection.
    if t < t0 or t >= t0 + end:
        return None
    level = None
    for at, lv in points:
        if t0 + at <= t:
            level = lv
    return level


def test_level_at_matches_a_linear_scan_on_random_programs():
    random.seed(16)
    rand = random.randint
    for _ in range(200):
        end = rand(60, 14 * 86400)
        count = rand(1, min(96, end))
        offsets = sorted(set([0] + [rand(1, end - 1) for _ in range(count - 1)]))
        points = [(o, rand(0, 100)) for o in offsets]
        program = Program(1, T0, end, offsets, [lv for _, lv in points])
        probes = [T0 - 1, T0, T0 + end - 1, T0 + end]
        for o in offsets:
            probes += [T0 + o - 1, T0 + o, T0 + o + 1]
        probes += [T0 + rand(0, end) for _ in range(20)]
        for t in probes:
            assert program.level_at(t) == _reference(points, T0, end, t), (offsets, t)
            switch = program.next_switch(t)
            if program.covers(t):
                assert switch > t and program.level_at(switch - 1) == program.level_at(t)


def test_across_midnight_the_evening_level_holds_until_the_morning_point():
    # 22:00 UTC 100 %, 23:00 50 %, 04:30 next day 100 %, 06:00 off
    evening = 1774735200  # 2026-03-28 22:00 UTC
    program = Program(2, evening, 86400, [0, 3600, 23400, 28800], [100, 50, 100, 0])
    midnight = evening + 7200
    assert program.level_at(midnight - 1) == 50
    assert program.level_at(midnight) == 50
    assert program.level_at(midnight + 1) == 50
    assert program.level_at(evening + 23400) == 100
    assert program.next_switch(midnight) == evening + 23400


def test_a_dst_night_is_two_switch_points_an_hour_closer_in_utc():
    # Europe/Paris, night of 2026-03-28 to 29 (clocks go 02:00 -> 03:00 at 01:00 UTC):
    # 23:00 CET is 22:00 UTC; 05:30 CEST is 03:30 UTC, 5.5 h later, not 6.5.
    at_2300_cet = 1774735200
    at_0530_cest = 1774755000
    assert at_0530_cest - at_2300_cet == 5 * 3600 + 1800
    program = Program(3, at_2300_cet, 86400, [0, at_0530_cest - at_2300_cet], [50, 100])
    assert program.level_at(at_0530_cest - 1) == 50
    assert program.level_at(at_0530_cest) == 100
    # and in autumn (2026-10-25, 03:00 CEST -> 02:00 CET at 01:00 UTC): 7.5 h apart
    at_2300_cest = 1792875600
    at_0530_cet = 1792902600
    assert at_0530_cet - at_2300_cest == 7 * 3600 + 1800
    program = Program(4, at_2300_cest, 86400, [0, at_0530_cet - at_2300_cest], [50, 100])
    assert program.level_at(at_0530_cet - 1) == 50 and program.level_at(at_0530_cet) == 100


def test_outside_its_span_a_program_says_nothing():
    program = Program(1, T0, 3600, [0], [0])
    assert program.level_at(T0 - 1) is None and program.level_at(T0 + 3600) is None
    assert program.next_switch(T0 - 100) == T0
    assert program.next_switch(T0) == T0 + 3600
    assert program.next_switch(T0 + 3600) is None
