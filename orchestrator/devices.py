"""The current state of a gateway's devices, from its log of state reports.

Reports are stored as received; this module folds a log (snapshot + later reports,
concatenated, which protobuf reads as one StateReport) into the latest state per device.
The per-device work happens here, once every few reports, not on every report.
"""

from __future__ import annotations

import sqlalchemy as sa

from orchestrator.store.store import Store
from protos.ondijon.v1 import link_pb2, state_pb2

# Fold the log into the snapshot after this many reports.
COMPACT_EVERY = 16


def latest(log: bytes) -> list[state_pb2.DeviceState]:
    """The last state of each device in ``log``, ordered by device id."""
    by_id = {d.device_id: d for d in link_pb2.StateReport.FromString(log).devices}
    return [by_id[k] for k in sorted(by_id)]


def current_devices(
    store: Store, conn: sa.Connection, gateway_id: str
) -> list[state_pb2.DeviceState]:
    log, _ = store.get_devices(conn, gateway_id)
    return latest(log)


def compact(store: Store, conn: sa.Connection, gateway_id: str) -> None:
    """Fold a gateway's report log into its snapshot (inside the caller's transaction)."""
    log, through = store.get_devices(conn, gateway_id)
    snapshot = link_pb2.StateReport(devices=latest(log)).SerializeToString()
    store.compact_devices(conn, gateway_id, snapshot, through)
