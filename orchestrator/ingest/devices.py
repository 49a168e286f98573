"""The current state of a gateway's devices, from its log of state reports.

Reports are stored as received; this module folds a log (snapshot + later reports,
concatenated, which protobuf reads as one StateReport) into the latest state per device.
The per-device work happens here, once every few reports, not on every report. A report
that names every device the gateway has is the whole current state by itself: it
replaces the snapshot as it is, with no folding at all (the link does that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.store.connection import Connection
from orchestrator.store.database import Store
from protos.ondijon.v1 import link_pb2, state_pb2

# Fold the log into the snapshot after this many reports.
COMPACT_EVERY = 16


def latest(log: bytes) -> list[state_pb2.DeviceState]:
    """The last state of each device in ``log``, ordered by device id."""
    by_id = {d.device_id: d for d in link_pb2.StateReport.FromString(log).devices}
    return [by_id[k] for k in sorted(by_id)]


def current_devices(store: Store, conn: Connection, gateway_id: str) -> list[state_pb2.DeviceState]:
    log, _ = store.get_devices(conn, gateway_id)
    return latest(log)


def current_devices_of(
    store: Store, conn: Connection, gateway_ids: list[str]
) -> dict[str, list[state_pb2.DeviceState]]:
    """:func:`current_devices` of several gateways, in one transaction."""
    return {gateway_id: current_devices(store, conn, gateway_id) for gateway_id in gateway_ids}


def compact(store: Store, conn: Connection, gateway_id: str) -> set[str]:
    """Fold a gateway's report log into its snapshot (inside the caller's transaction);
    returns the ids of the devices in it."""
    log, through = store.get_devices(conn, gateway_id)
    devices = latest(log)
    snapshot = link_pb2.StateReport(devices=devices).SerializeToString()
    store.compact_devices(conn, gateway_id, snapshot, through)
    return {d.device_id for d in devices}


@dataclass
class DeviceLog:
    """One stream's bookkeeping of its gateway's report log.

    Attributes:
        device_ids: the devices the stored state holds.
        logged: reports appended to the log since its snapshot.
    """

    device_ids: set[str] = field(default_factory=set)
    logged: int = 0

    def rows(
        self,
        store: Store,
        gateway_id: str,
        seq: int,
        payload: bytes,
        ids: set[str],
        *,
        now: datetime,
    ) -> tuple[list[tuple[Any, dict[str, Any]]], bool]:
        """The writes that store report ``seq`` (devices ``ids``), and whether the log is
        now due for folding (:func:`compact`)."""
        if ids >= self.device_ids:
            # It names every device: it is the whole current state, the new snapshot.
            rows = store.snapshot_rows(
                gateway_id, seq, payload, updates=len(ids), now=now, drop_log=self.logged > 0
            )
            self.device_ids, self.logged = ids, 0
            return rows, False
        self.device_ids |= ids
        self.logged += 1
        rows = store.device_report_rows(gateway_id, seq, payload, updates=len(ids), now=now)
        if self.logged >= COMPACT_EVERY:
            self.logged = 0
            return rows, True
        return rows, False
