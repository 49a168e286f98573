"""Current device state from a log of reports: the last state of each device, whenever the
log is folded into a snapshot."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.ingest.devices import DeviceLog, compact, current_devices, latest
from orchestrator.store.database import Store
from protos.ondijon.v1 import link_pb2, schedule_pb2, state_pb2

NOW = datetime(2026, 12, 21, 16, 30, tzinfo=UTC)

Report = list[tuple[str, int]]


def encode(report: Report) -> bytes:
    return link_pb2.StateReport(
        batch_id=7,
        devices=[
            state_pb2.DeviceState(
                device_id=device,
                kind=schedule_pb2.DEVICE_KIND_LAMP,
                lamp=state_pb2.LampState(level=level, lit=level > 0),
            )
            for device, level in report
        ],
    ).SerializeToString()


def levels(states: list[state_pb2.DeviceState]) -> list[tuple[str, int]]:
    return [(s.device_id, s.lamp.level) for s in states]


def test_the_last_report_of_a_device_wins_and_devices_come_sorted() -> None:
    log = encode([("lamp-2", 10), ("lamp-1", 20)]) + encode([("lamp-2", 0), ("lamp-3", 5)])
    assert levels(latest(log)) == [("lamp-1", 20), ("lamp-2", 0), ("lamp-3", 5)]
    lamp_2 = latest(log)[1]
    assert not lamp_2.lamp.lit  # the whole state is replaced, not merged field by field
    assert latest(b"") == []


reports = st.lists(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 100)), max_size=4),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(reports, st.data())
def test_folding_any_prefix_into_a_snapshot_changes_nothing(
    log: list[Report], data: st.DataObject
) -> None:
    model: dict[str, int] = {}
    for report in log:
        model.update(report)
    cut = data.draw(st.integers(0, len(log)))
    snapshot = link_pb2.StateReport(
        devices=latest(b"".join(encode(r) for r in log[:cut]))
    ).SerializeToString()
    folded = snapshot + b"".join(encode(r) for r in log[cut:])
    assert levels(latest(folded)) == sorted(model.items())


def test_compaction_in_the_store_keeps_the_current_state(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'devices.db'}")
    try:
        with store.engine.begin() as conn:
            store.add_gateway(
                conn,
                gateway_id="dj-001",
                serial="SN",
                commune="Dijon",
                latitude=47.3,
                longitude=5.0,
                time_zone="Europe/Paris",
                tags=[],
                now=NOW,
            )
            for seq, report in enumerate([[("a", 1), ("b", 1)], [("a", 2)], [("c", 3)]], 1):
                store.add_device_report(conn, "dj-001", seq, encode(report), updates=1, now=NOW)
        with store.engine.begin() as conn:
            before = levels(current_devices(store, conn, "dj-001"))
            compact(store, conn, "dj-001")
            compact(store, conn, "dj-001")  # folding twice is harmless
        with store.engine.connect() as conn:
            assert levels(current_devices(store, conn, "dj-001")) == before
            assert before == [("a", 2), ("b", 1), ("c", 3)]
            log, through = store.get_devices(conn, "dj-001")
            # The log is now the snapshot alone: one entry per device, nothing left to fold.
            assert through == 3 and len(link_pb2.StateReport.FromString(log).devices) == 3
    finally:
        store.close()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from(["lamp-1", "lamp-2", "lamp-3"]), st.integers(0, 100)),
            min_size=1,
            max_size=3,
            unique_by=lambda d: d[0],
        ),
        min_size=1,
        max_size=40,
    )
)
def test_complete_reports_replace_the_snapshot_and_partial_ones_are_logged(
    reports: list[Report],
) -> None:
    # What the link stores (DeviceLog: a report naming every device becomes the snapshot
    # as it is, others are logged and folded every so often) reads back as the last state
    # of each device, exactly as if every report had been logged and folded.
    store = Store.open("sqlite://")
    try:
        with store.engine.begin() as conn:
            store.add_gateway(
                conn,
                gateway_id="dj-001",
                serial="s",
                commune="c",
                latitude=0,
                longitude=0,
                time_zone="UTC",
                tags=[],
                now=NOW,
            )
        devices = DeviceLog()
        for seq, report in enumerate(reports, start=1):
            ids = {device for device, _ in report}
            rows, fold = devices.rows(store, "dj-001", seq, encode(report), ids, now=NOW)
            with store.engine.begin() as conn:
                for statement, params in rows:
                    conn.execute(statement, params)
                if fold:
                    compact(store, conn, "dj-001")
        expected: dict[str, int] = {}
        for report in reports:
            expected.update(report)
        with store.engine.connect() as conn:
            assert levels(current_devices(store, conn, "dj-001")) == sorted(expected.items())
    finally:
        store.close()
