"""Campaign rollout rules: canary first, thresholds, windows, night, pause/resume/abort."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.firmware.rollout import (
    CampaignError,
    CampaignPlan,
    CampaignState,
    CampaignStatus,
    Decision,
    GatewayReport,
    Note,
    Outcome,
    TargetGateway,
    Wave,
    Window,
    abort,
    assign_waves,
    decide,
    pause,
    resume,
    start_campaign,
    window_open,
)

# 12:00 in Dijon (CEST) on a May day: daylight, and inside 10:00-16:00.
NOON = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
NIGHT = datetime(2026, 5, 4, 22, 0, tzinfo=UTC)


def _gateway(n: int, *, lamps: bool = False, tags: Iterable[str] = ()) -> TargetGateway:
    return TargetGateway(
        id=f"gw-{n:03d}",
        commune="Dijon",
        latitude=47.322,
        longitude=5.041,
        time_zone="Europe/Paris",
        has_lamps=lamps,
        tags=frozenset(tags),
    )


def _plan(count: int = 100, **changes: object) -> CampaignPlan:
    plan = CampaignPlan("camp-1", "1.5.0", tuple(_gateway(n) for n in range(count)))
    return replace(plan, **changes)  # type: ignore[arg-type]


def _reports(
    ids: Iterable[str], outcome: Outcome, at: datetime, detail: str = ""
) -> dict[str, GatewayReport]:
    return {g: GatewayReport(outcome, at, detail) for g in ids}


def _lines(notes: Iterable[Note], visible: Callable[[str], bool] | None = None) -> list[str]:
    """Notes as a reader sees them."""
    return [line for n in notes if (line := n.render(visible)) is not None]


def test_waves_are_deterministic_cumulative_and_canary_first() -> None:
    gateways = (*(_gateway(n) for n in range(200)), _gateway(999, tags={"canary"}))
    plan = _plan(gateways=gateways)
    waves = assign_waves(plan)
    assert [len(w) for w in waves] == [3, 18, 80, 100]
    assert waves[0][0] == "gw-999"
    assert waves == assign_waves(plan)
    assert sorted(g for w in waves for g in w) == sorted(g.id for g in gateways)
    other = assign_waves(replace(plan, campaign_id="camp-2"))
    assert other[0][0] == "gw-999" and other[0][1:] != waves[0][1:]


def test_the_canary_wave_is_offered_first_and_only() -> None:
    state = start_campaign(_plan(), NOON)
    decision = decide(state, {}, NOON)
    assert decision.offer_to == list(state.waves[0]) and len(decision.offer_to) == 1
    assert decision.status is CampaignStatus.RUNNING
    again = decide(decision.state, {}, NOON + timedelta(minutes=1))
    assert again.offer_to == []


def _run_wave(decision: Decision, outcome: Outcome, at: datetime) -> Decision:
    wave = decision.state.waves[decision.state.wave]
    return decide(decision.state, _reports(wave, outcome, at), at)


def test_waves_advance_only_once_the_success_threshold_is_reached() -> None:
    state = start_campaign(_plan(), NOON)
    first = decide(state, {}, NOON)
    second = _run_wave(first, Outcome.COMMITTED, NOON + timedelta(minutes=10))
    assert second.state.wave == 1
    assert set(second.offer_to) == set(state.waves[1])
    assert "wave 1 reached 1/1 updated: wave 2 opens" in _lines(second.reasons)
    wave2 = state.waves[1]
    # 8 of 9 committed (89%) is under the 90% threshold; one still downloading.
    later = NOON + timedelta(minutes=20)
    partial = {
        **_reports(wave2[:8], Outcome.COMMITTED, later),
        wave2[8]: GatewayReport(Outcome.DOWNLOADING, later),
    }
    stuck = decide(second.state, partial, later)
    assert (stuck.state.wave, stuck.offer_to) == (1, [])
    done = decide(
        stuck.state,
        _reports(wave2[8:], Outcome.COMMITTED, later + timedelta(minutes=1)),
        later + timedelta(minutes=1),
    )
    assert done.state.wave == 2 and len(done.offer_to) == 40


def test_a_failing_canary_halts_everything_and_the_rest_is_never_offered() -> None:
    state = start_campaign(_plan(), NOON)
    first = decide(state, {}, NOON)
    (canary,) = first.offer_to
    report = {
        canary: GatewayReport(Outcome.ROLLED_BACK, NOON + timedelta(minutes=5), "drivers down")
    }
    halted = decide(first.state, report, NOON + timedelta(minutes=5))
    assert halted.status is CampaignStatus.HALTED and halted.offer_to == []
    assert any(
        "wave 1 has 1/1 gateways failed" in r and "drivers down" in r
        for r in _lines(halted.reasons)
    )
    later = decide(halted.state, report, NOON + timedelta(hours=1))
    assert later.status is CampaignStatus.HALTED and later.offer_to == []
    assert set(later.state.offered) == {canary}


def test_a_wave_breaching_its_error_threshold_halts_with_the_next_waves_untouched() -> None:
    state = start_campaign(_plan(), NOON)
    d = _run_wave(decide(state, {}, NOON), Outcome.COMMITTED, NOON + timedelta(minutes=5))
    wave2 = state.waves[1]
    at = NOON + timedelta(minutes=30)
    reports = {
        **_reports(wave2[:7], Outcome.COMMITTED, at),
        **_reports(wave2[7:], Outcome.FAILED, at, "disk full"),
    }
    halted = decide(d.state, reports, at)
    assert halted.status is CampaignStatus.HALTED
    assert "2/9 gateways failed, above its error threshold of 10%" in " ".join(
        _lines(halted.reasons)
    )
    assert set(halted.state.offered) == set(state.waves[0]) | set(wave2)


def test_resume_after_a_halt_acknowledges_the_failures_seen() -> None:
    plan = _plan(waves=(Wave(10, success_threshold=0.5, error_threshold=0.0), Wave(100)))
    state = start_campaign(plan, NOON)
    first = decide(state, {}, NOON)
    wave1 = state.waves[0]
    at = NOON + timedelta(minutes=5)
    reports = {
        **_reports(wave1[:9], Outcome.COMMITTED, at),
        wave1[9]: GatewayReport(Outcome.REFUSED, at, "expired"),
    }
    halted = decide(first.state, reports, at)
    assert halted.status is CampaignStatus.HALTED
    resumed = resume(halted.state, at + timedelta(minutes=1))
    assert "1 failure(s) acknowledged" in _lines(resumed.history)[-1]
    going = decide(resumed, reports, at + timedelta(minutes=2))
    assert going.status is CampaignStatus.RUNNING
    assert len(going.offer_to) == 90


def test_pause_stops_offers_and_resume_restarts_them() -> None:
    state = start_campaign(_plan(), NOON)
    first = decide(state, {}, NOON)
    paused = pause(first.state, NOON, "bus depot festival")
    at = NOON + timedelta(minutes=5)
    held = decide(paused, _reports(first.offer_to, Outcome.COMMITTED, at), at)
    assert held.status is CampaignStatus.PAUSED and held.offer_to == []
    assert held.state.reports[first.offer_to[0]].outcome is Outcome.COMMITTED
    going = decide(resume(held.state, at), {}, at)
    assert going.status is CampaignStatus.RUNNING and set(going.offer_to) == set(state.waves[1])
    with pytest.raises(CampaignError, match="cannot resume a running campaign"):
        resume(going.state, at)


def test_abort_is_final() -> None:
    state = start_campaign(_plan(), NOON)
    aborted = abort(decide(state, {}, NOON).state, NOON, "emergency stop")
    decision = decide(aborted, {}, NOON + timedelta(hours=1))
    assert decision.status is CampaignStatus.ABORTED and decision.offer_to == []
    assert _lines(aborted.history)[-1].endswith("aborted: emergency stop")
    actions: list[Callable[[CampaignState, datetime], CampaignState]] = [resume, pause, abort]
    for action in actions:
        with pytest.raises(CampaignError) as excinfo:
            action(aborted, NOON)
        assert excinfo.value.field == "status"


def test_replayed_and_older_reports_change_nothing() -> None:
    state = start_campaign(_plan(), NOON)
    first = decide(state, {}, NOON)
    (canary,) = first.offer_to
    at = NOON + timedelta(minutes=10)
    committed = {canary: GatewayReport(Outcome.COMMITTED, at)}
    once = decide(first.state, committed, at)
    twice = decide(once.state, committed, at)
    assert twice.state.reports == once.state.reports
    assert twice.state.wave == once.state.wave == 1
    assert twice.offer_to == []
    stale = {canary: GatewayReport(Outcome.DOWNLOADING, at - timedelta(minutes=5))}
    assert decide(twice.state, stale, at).state.reports == once.state.reports
    before_offer = {state.waves[1][0]: GatewayReport(Outcome.FAILED, NOON - timedelta(days=1))}
    assert decide(once.state, before_offer, at).status is CampaignStatus.RUNNING


def test_reports_from_outside_the_target_are_ignored() -> None:
    decision = decide(
        start_campaign(_plan(), NOON), {"intruder": GatewayReport(Outcome.FAILED, NOON)}, NOON
    )
    assert decision.status is CampaignStatus.RUNNING
    assert "ignored a report from intruder" in _lines(decision.reasons)[0]


def test_a_gateway_outside_its_maintenance_window_waits() -> None:
    plan = _plan(count=1, window=Window.parse("10:00-16:00"))
    state = start_campaign(plan, NOON)
    early = datetime(2026, 5, 4, 6, 30, tzinfo=UTC)  # 08:30 in Dijon
    waiting = decide(state, {}, early)
    assert waiting.offer_to == []
    assert (
        "outside the maintenance window 10:00-16:00 (Europe/Paris): gw-000"
        in (_lines(waiting.reasons)[0])
    )
    assert decide(waiting.state, {}, NOON).offer_to == ["gw-000"]


def test_site_windows_override_the_default_and_may_wrap_midnight() -> None:
    window = Window.parse("22:00-04:00")
    plan = _plan(count=2, window=Window.parse("10:00-16:00"), site_windows={"gw-001": window})
    assert window_open(plan, plan.gateways[1], NOON) is not None
    assert window_open(plan, plan.gateways[1], datetime(2026, 5, 4, 23, 30, tzinfo=UTC)) is None
    assert window_open(plan, plan.gateways[0], NOON) is None


def test_lamps_are_not_updated_at_night() -> None:
    plan = _plan(count=0, gateways=(_gateway(1, lamps=True), _gateway(2, lamps=False)))
    state = start_campaign(replace(plan, waves=(Wave(100),)), NIGHT)
    night = decide(state, {}, NIGHT)
    assert night.offer_to == ["gw-002"]
    assert any(
        "lamps are not updated at night" in r and "gw-001" in r for r in _lines(night.reasons)
    )
    assert decide(night.state, {}, NOON + timedelta(days=1)).offer_to == ["gw-001"]


def test_daylight_margin_around_sunrise_and_sunset() -> None:
    plan = _plan(count=0, gateways=(_gateway(1, lamps=True),), daylight_margin=timedelta(hours=1))
    gateway = plan.gateways[0]
    # Dijon, 4 May 2026: sunrise about 04:20 UTC, sunset about 18:55 UTC.
    assert window_open(plan, gateway, datetime(2026, 5, 4, 5, 0, tzinfo=UTC)) is not None
    assert window_open(plan, gateway, datetime(2026, 5, 4, 5, 30, tzinfo=UTC)) is None
    assert window_open(plan, gateway, datetime(2026, 5, 4, 17, 40, tzinfo=UTC)) is None
    assert window_open(plan, gateway, datetime(2026, 5, 4, 18, 10, tzinfo=UTC)) is not None
    assert window_open(replace(plan, daylight_only=False), gateway, NIGHT) is None


def test_the_campaign_completes_when_the_last_wave_succeeds() -> None:
    state = start_campaign(_plan(count=10), NOON)
    decision = decide(state, {}, NOON)
    at = NOON
    while decision.status is CampaignStatus.RUNNING:
        at += timedelta(minutes=10)
        decision = decide(
            decision.state, _reports(decision.state.offered, Outcome.COMMITTED, at), at
        )
    assert decision.status is CampaignStatus.COMPLETED
    assert decision.state.in_flight() == []
    assert len(decision.state.reports) == 10


def test_in_flight_lists_offers_without_an_end() -> None:
    state = start_campaign(_plan(count=10, waves=(Wave(100),)), NOON)
    decision = decide(state, {}, NOON)
    at = NOON + timedelta(minutes=1)
    ids = decision.offer_to
    decision = decide(
        decision.state,
        {
            ids[0]: GatewayReport(Outcome.INSTALLED, at),
            ids[1]: GatewayReport(Outcome.COMMITTED, at),
        },
        at,
    )
    assert set(decision.state.in_flight()) == set(ids) - {ids[1]}


def test_outcomes_map_from_firmware_stages() -> None:
    from protos.ondijon.v1 import firmware_pb2

    assert Outcome.from_stage(firmware_pb2.FIRMWARE_STAGE_ROLLED_BACK) is Outcome.ROLLED_BACK
    assert Outcome.from_stage(firmware_pb2.FIRMWARE_STAGE_COMMITTED) is Outcome.COMMITTED
    assert Outcome.from_stage(firmware_pb2.FIRMWARE_STAGE_UNSPECIFIED) is None


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"campaign_id": ""}, "campaign_id"),
        ({"version": "latest"}, "version"),
        ({"gateways": ()}, "gateways"),
        ({"gateways": (_gateway(1), _gateway(1))}, "gateways[1].id"),
        ({"gateways": (replace(_gateway(1), time_zone="Mars/Olympus"),)}, "gateways[0].time_zone"),
        ({"gateways": (replace(_gateway(1), latitude=95.0),)}, "gateways[0].latitude"),
        ({"waves": ()}, "waves"),
        ({"waves": (Wave(10), Wave(5), Wave(100))}, "waves[1].percent"),
        ({"waves": (Wave(10), Wave(50))}, "waves[1].percent"),
        ({"waves": (Wave(100, error_threshold=1.5),)}, "waves[0].error_threshold"),
        ({"site_windows": {"gw-x": Window.parse("10:00-11:00")}}, "site_windows[gw-x]"),
        ({"daylight_margin": timedelta(minutes=-1)}, "daylight_margin"),
    ],
)
def test_an_invalid_plan_names_its_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(CampaignError) as excinfo:
        start_campaign(_plan(count=3, **changes), NOON)
    assert excinfo.value.field == field


@pytest.mark.parametrize("text", ["10-16", "25:00-26:00", "10:00-10:00", "10:00 to 16:00"])
def test_malformed_windows_are_refused(text: str) -> None:
    with pytest.raises(CampaignError) as excinfo:
        Window.parse(text)
    assert excinfo.value.field == "window"


def test_decide_does_not_change_its_input() -> None:
    state: CampaignState = start_campaign(_plan(), NOON)
    decide(state, {}, NOON)
    assert state.offered == {} and state.wave == 0


def test_a_resumed_campaign_after_a_failed_one_gateway_canary_decides_on_the_next_wave() -> None:
    state = start_campaign(_plan(count=20, waves=(Wave(1), Wave(100))), NOON)
    first = decide(state, {}, NOON)
    (canary,) = first.offer_to
    at = NOON + timedelta(minutes=5)
    failed = {canary: GatewayReport(Outcome.REFUSED, at, "signed only by unknown keys")}
    halted = decide(first.state, failed, at)
    assert halted.status is CampaignStatus.HALTED
    resumed = resume(halted.state, at + timedelta(minutes=1))
    going = decide(resumed, failed, at + timedelta(minutes=2))
    # The acknowledged canary is set aside: wave 1 has nothing left to wait for.
    assert going.status is CampaignStatus.RUNNING
    assert set(going.offer_to) == set(state.waves[1])
    assert (
        "wave 1 reached 0/0 updated, 1 acknowledged failure(s) set aside: wave 2 opens"
        in _lines(going.reasons)
    )


def test_a_wave_that_can_no_longer_reach_its_threshold_halts_saying_why() -> None:
    plan = _plan(count=10, waves=(Wave(100, success_threshold=0.9, error_threshold=0.5),))
    first = decide(start_campaign(plan, NOON), {}, NOON)
    at = NOON + timedelta(minutes=5)
    ids = first.offer_to
    reports = {
        **_reports(ids[:2], Outcome.ROLLED_BACK, at, "health check"),
        **_reports(ids[2:6], Outcome.COMMITTED, at),
    }
    # 2 of 10 failed is under the 50 % error threshold, but 9 can no longer be updated.
    stuck = decide(first.state, reports, at)
    assert stuck.status is CampaignStatus.HALTED
    (line,) = [r for r in _lines(stuck.reasons) if r.startswith("halted")]
    assert line.startswith(
        "halted: wave 1 cannot reach its success threshold: 2 of its 10 gateways failed and 9"
        " must be updated; resume to set the failures aside:"
    )
    going = decide(resume(stuck.state, at), {}, at)
    assert going.status is CampaignStatus.RUNNING  # 8 counted, 90 % of 8 rounds up to 8: reachable
    done = decide(going.state, _reports(ids[6:], Outcome.COMMITTED, at), at)
    assert done.status is CampaignStatus.COMPLETED


def test_an_outcome_is_final_and_a_commit_gives_way_only_to_a_failure() -> None:
    first = decide(start_campaign(_plan(count=1, waves=(Wave(100),)), NOON), {}, NOON)
    (gw,) = first.offer_to
    at = NOON + timedelta(minutes=5)
    back = decide(first.state, {gw: GatewayReport(Outcome.ROLLED_BACK, at, "cut off")}, at)
    later = at + timedelta(minutes=1)
    # The rolled-back process (or its outbox) says COMMITTED later: it stays rolled back.
    lie = decide(back.state, {gw: GatewayReport(Outcome.COMMITTED, later)}, later)
    assert lie.state.reports[gw].outcome is Outcome.ROLLED_BACK
    assert lie.status is CampaignStatus.HALTED

    first = decide(start_campaign(_plan(count=2, waves=(Wave(100),)), NOON), {}, NOON)
    gw = first.offer_to[0]
    committed = decide(first.state, {gw: GatewayReport(Outcome.COMMITTED, at)}, at)
    crash = {gw: GatewayReport(Outcome.ROLLED_BACK, later, "crash loop after commit")}
    fell_back = decide(committed.state, crash, later)
    assert fell_back.state.reports[gw].outcome is Outcome.ROLLED_BACK
    stale = {gw: GatewayReport(Outcome.REBOOTING, later + timedelta(minutes=1))}
    assert decide(fell_back.state, stale, later).state.reports[gw].outcome is Outcome.ROLLED_BACK


def test_a_commit_counts_only_when_the_hello_reports_the_new_version() -> None:
    first = decide(start_campaign(_plan(count=1, waves=(Wave(100),)), NOON), {}, NOON)
    (gw,) = first.offer_to
    at = NOON + timedelta(minutes=15)
    trial_hello = {gw: GatewayReport(Outcome.COMMITTED, at, hello_version="1.5.0")}
    assert decide(first.state, trial_hello, at).status is CampaignStatus.COMPLETED
    # The gateway says COMMITTED but its hello says it runs the old version.
    old_hello = {gw: GatewayReport(Outcome.COMMITTED, at, hello_version="1.4.0")}
    trapped = decide(first.state, old_hello, at)
    assert trapped.status is CampaignStatus.HALTED
    assert trapped.state.failed(gw) and not trapped.state.updated(gw)
    assert f"{gw} (reported committed but its hello reports 1.4.0)" in _lines(trapped.reasons)[0]


def test_reasons_and_history_name_and_count_only_the_readers_gateways() -> None:
    dijon = _gateway(1)
    beaune = replace(_gateway(2), id="bn-002", commune="Beaune")
    plan = _plan(gateways=(dijon, beaune), waves=(Wave(100),))
    state = start_campaign(plan, NOON)
    decision = decide(state, {}, NOON)
    at = NOON + timedelta(minutes=5)
    failed = {"bn-002": GatewayReport(Outcome.FAILED, at, "disk full")}
    halted = decide(decision.state, failed, at)
    in_dijon = {"gw-001"}.__contains__

    everyone = _lines([*halted.state.history, *decision.reasons, *halted.reasons])
    assert any("bn-002" in line for line in everyone)
    seen = _lines([*halted.state.history, *decision.reasons, *halted.reasons], in_dijon)
    assert not any("bn-002" in line or "disk full" in line for line in seen)
    assert seen[0].endswith("started; waves of 1")
    assert "offering 1.5.0 to 1 gateway(s): gw-001" in seen
    # The halt names only Beaune's gateway: Dijon's reader sees why it halted, not who.
    assert "halted: wave 1 has 0/1 gateways failed" in " ".join(seen)


def test_abort_says_who_passed_the_point_of_no_return() -> None:
    first = decide(start_campaign(_plan(count=3, waves=(Wave(100),)), NOON), {}, NOON)
    ids = first.offer_to
    at = NOON + timedelta(minutes=5)
    reports = {
        ids[0]: GatewayReport(Outcome.DOWNLOADING, at),
        ids[1]: GatewayReport(Outcome.REBOOTING, at),
        ids[2]: GatewayReport(Outcome.INSTALLED, at),
    }
    running = decide(first.state, reports, at)
    aborted = abort(running.state, at, "bad release")
    assert _lines(aborted.history)[-1].endswith(
        f"1 gateway(s) had passed the point of no return; their update goes on: {ids[1]}"
    )
    cancelled = {ids[0]: GatewayReport(Outcome.CANCELLED, at + timedelta(minutes=1))}
    after = decide(aborted, cancelled, at + timedelta(minutes=1))
    assert after.state.reports[ids[0]].outcome is Outcome.CANCELLED
    assert after.state.in_flight() == [ids[1], ids[2]]


def test_notes_survive_storage_and_old_plain_lines_still_read() -> None:
    line = Note("{n} wait, {{braces}}: {names}", ("a", "b"), details=(("a", "x"),))
    assert Note.from_json(line.to_json()) == line
    assert Note.from_json("2026-05-04T10:00Z halted: {weird}").render() == (
        "2026-05-04T10:00Z halted: {weird}"
    )
