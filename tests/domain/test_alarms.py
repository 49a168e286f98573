"""The alarm core against an independent reference, over many random event sequences."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from domain import alarms
from domain.alarms import Alarm, AlarmError, Occurrence, Severity, ViewState

T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


def occ(raised: bool, at: datetime, type_: str = "lamp_failure") -> Occurrence:
    return Occurrence("gw-1", "lamp-001", type_, raised, at, "m")


def fold(occurrences: list[Occurrence]) -> Alarm | None:
    alarm: Alarm | None = None
    for o in occurrences:
        alarm = alarms.on_occurrence(alarm, o)
    return alarm


@pytest.mark.parametrize("seed", range(300))
def test_random_sequences_in_time_order_match_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    at = T0
    sequence = []
    for _ in range(rng.randint(1, 30)):
        at += timedelta(seconds=rng.randint(0, 600))
        sequence.append(occ(rng.random() < 0.6, at))
    alarm = fold(sequence)
    # Reference: the alarm exists iff some raise happened; it counts every raise; it is
    # active iff the last occurrence at or after the last raise is a raise.
    raises = [o for o in sequence if o.raised]
    if not raises:
        assert alarm is None
        return
    assert alarm is not None
    assert alarm.count == len(raises)
    assert alarm.first_at == raises[0].at
    assert alarm.last_at == raises[-1].at
    assert alarm.active == sequence[-1].raised or (
        not sequence[-1].raised and sequence[-1].at < raises[-1].at
    )
    assert alarm.open  # nobody acknowledged: it never closes by itself
    assert not alarm.acknowledged
    expected = ViewState.UNACKNOWLEDGED if alarm.active else ViewState.CLEARED
    assert alarms.view_state(alarm, at) is expected


@pytest.mark.parametrize("seed", range(300))
def test_random_operator_actions_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    now = T0
    alarm: Alarm | None = None
    closed: list[Alarm] = []
    acked_since_raise = False
    for _ in range(60):
        now += timedelta(seconds=rng.randint(1, 900))
        step = rng.choice(["raise", "clear", "ack", "assign", "close", "shelve"])
        before = alarm
        try:
            if step in ("raise", "clear"):
                alarm = alarms.on_occurrence(alarm, occ(step == "raise", now))
                if step == "raise" and before is not None and not before.active:
                    acked_since_raise = False
                if step == "raise" and (before is None or not before.open):
                    acked_since_raise = False
            elif alarm is None:
                continue
            elif step == "ack":
                alarm = alarms.acknowledge(alarm, by="op", comment="seen", now=now)
                acked_since_raise = True
            elif step == "assign":
                alarm = alarms.assign(alarm, crew="crew-2")
            elif step == "close":
                alarm = alarms.close(alarm, by="op", note="lamp changed", now=now)
            else:
                alarm = alarms.shelve(alarm, until=now + timedelta(hours=1), now=now)
        except AlarmError as exc:
            # Refused actions change nothing and name the field.
            assert exc.field in ("alarm_id", "until", "note", "crew", "comment")
            assert before is not None and (not before.open or before.acknowledged)
            continue
        if alarm is None:
            continue
        # Invariants: a closed alarm is acknowledged and stays closed; an open alarm that
        # is cleared, acknowledged and unassigned does not exist (it closed by itself).
        if not alarm.open:
            assert alarm.acknowledged and alarm.closed_at is not None
            assert alarm.repair_time() is not None and alarm.repair_time() >= timedelta(0)
            if before is None or before.open:
                closed.append(alarm)
        else:
            assert alarm.active or not alarm.acknowledged or alarm.assigned_to
            assert alarm.acknowledged == acked_since_raise or not alarm.active
        assert alarm.count >= 1
        assert alarm.first_at <= alarm.last_at
    for c in closed:
        assert c.closed_by in ("op", "return to normal")


def test_a_stale_clear_changes_nothing() -> None:
    alarm = fold([occ(True, T0), occ(True, T0 + timedelta(minutes=5))])
    assert alarms.on_occurrence(alarm, occ(False, T0 + timedelta(minutes=1))) == alarm


def test_a_condition_that_comes_back_must_be_acknowledged_again() -> None:
    alarm = fold([occ(True, T0)])
    assert alarm is not None
    alarm = alarms.assign(alarm, crew="east")
    alarm = alarms.acknowledge(alarm, by="op", comment="crew sent", now=T0)
    alarm = alarms.on_occurrence(alarm, occ(False, T0 + timedelta(minutes=1)))
    assert alarm is not None and alarm.open  # assigned: waits for the repair note
    assert alarms.view_state(alarm, T0 + timedelta(minutes=1)) is ViewState.CLEARED
    alarm = alarms.on_occurrence(alarm, occ(True, T0 + timedelta(minutes=2)))
    assert alarm is not None and not alarm.acknowledged and alarm.count == 2
    closed = alarms.close(alarm, by="op", note="cable replaced", now=T0 + timedelta(hours=3))
    assert closed.repair_time() == timedelta(hours=3)


def test_cleared_and_acknowledged_closes_by_itself() -> None:
    alarm = fold([occ(True, T0)])
    assert alarm is not None
    alarm = alarms.acknowledge(alarm, by="op", comment="", now=T0 + timedelta(minutes=1))
    alarm = alarms.on_occurrence(alarm, occ(False, T0 + timedelta(minutes=4)))
    assert alarm is not None and alarm.closed_at == T0 + timedelta(minutes=4)


def test_reminders_every_delay_until_acknowledged_and_not_while_shelved() -> None:
    delay = timedelta(minutes=15)
    alarm = fold([occ(True, T0)])
    assert alarm is not None
    assert not alarms.reminder_due(alarm, T0 + timedelta(minutes=14), delay)
    assert alarms.reminder_due(alarm, T0 + delay, delay)
    alarm = alarms.remind(alarm, T0 + delay)
    assert not alarms.reminder_due(alarm, T0 + delay + timedelta(minutes=14), delay)
    shelved = alarms.shelve(alarm, until=T0 + timedelta(hours=2), now=T0 + delay)
    assert not alarms.reminder_due(shelved, T0 + timedelta(hours=1), delay)
    assert alarms.reminder_due(shelved, T0 + timedelta(hours=2), delay)
    acked = alarms.acknowledge(alarm, by="op", comment="ok", now=T0 + delay)
    assert not alarms.reminder_due(acked, T0 + timedelta(hours=5), delay)


@pytest.mark.parametrize(
    ("action", "field"),
    [
        (lambda a: alarms.shelve(a, until=T0, now=T0), "until"),
        (lambda a: alarms.shelve(a, until=T0 + timedelta(days=31), now=T0), "until"),
        (lambda a: alarms.close(a, by="op", note="  ", now=T0), "note"),
        (lambda a: alarms.assign(a, crew=""), "crew"),
        (lambda a: alarms.acknowledge(a, by="op", comment="x\x1b[2J", now=T0), "comment"),
    ],
)
def test_bad_actions_name_the_field(action: object, field: str) -> None:
    alarm = fold([occ(True, T0)])
    with pytest.raises(AlarmError) as caught:
        action(alarm)  # type: ignore[operator]
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("event_type", "priority", "attributes", "expected"),
    [
        ("lamp_failure", 1, {"state": "raised"}, [("lamp_failure", True)]),
        ("lamp_failure", 2, {"state": "cleared"}, [("lamp_failure", False)]),
        ("mains_lost", 1, {"state": "raised"}, [("mains_lost", True)]),
        ("signal.conflict_cleared", 2, {}, [("signal.conflict_fault", False)]),
        ("fault", 1, {"fault": "motor"}, [("bollard.fault", True)]),
        ("reset", 2, {}, [("bollard.fault", False), ("bollard.locked_out", False)]),
        ("storage.recovered", 1, {}, [("storage.recovered", True)]),
        ("energy_interval", 3, {}, []),
        ("signal.plan_selected", 2, {}, []),
    ],
)
def test_classify_agent_events(
    event_type: str, priority: int, attributes: dict[str, str], expected: object
) -> None:
    assert alarms.classify(event_type, priority, attributes) == expected


def test_severity_and_grouping() -> None:
    assert alarms.severity_of("signal.conflict_fault") is Severity.CRITICAL
    assert alarms.severity_of("something.new") is Severity.WARNING
    assert alarms.is_root_type("mains_lost") and alarms.groups_under("lamp_failure")
    assert not alarms.groups_under("door_open")
