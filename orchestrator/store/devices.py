"""Device state: the report log and its folded snapshot, per gateway."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.store.records import (
    _LOG_DELETE,
    _REPORT_INSERT,
    Tables,
    _report_counter,
    _snapshot_upsert,
)
from orchestrator.store.schema import (
    device_reports,
    gateway_devices,
)


class DeviceTables(Tables):
    """Device state: the report log and its folded snapshot, per gateway."""

    def device_report_rows(
        self, gateway_id: str, seq: int, payload: bytes, *, updates: int, now: datetime
    ) -> list[tuple[Any, dict[str, Any]]]:
        """The writes that append one state report (serialized StateReport) to a gateway's
        log, as (statement, parameters) pairs for :meth:`StoreRunner.write_rows`.

        The hot path of ingestion: statements are built once per dialect and executed with
        bound parameters, many gateways' reports in one ``executemany``.
        """
        return [
            (_REPORT_INSERT, {"gateway_id": gateway_id, "seq": seq, "payload": payload}),
            (
                _report_counter(self.engine.dialect.name),
                {
                    "gateway_id": gateway_id,
                    "payload": b"",
                    "updated_at": now,
                    "device_updates": updates,
                },
            ),
        ]

    def snapshot_rows(
        self,
        gateway_id: str,
        seq: int,
        payload: bytes,
        *,
        updates: int,
        now: datetime,
        drop_log: bool,
    ) -> list[tuple[Any, dict[str, Any]]]:
        """The writes that make a complete report (every device of the gateway) the
        snapshot as it is, dropping the log it supersedes when there is one."""
        rows: list[tuple[Any, dict[str, Any]]] = [
            (
                _snapshot_upsert(self.engine.dialect.name),
                {
                    "gateway_id": gateway_id,
                    "payload": payload,
                    "through_seq": seq,
                    "updated_at": now,
                    "device_updates": updates,
                },
            )
        ]
        if drop_log:
            rows.append((_LOG_DELETE, {"gateway_id": gateway_id, "through_seq": seq}))
        return rows

    def add_device_report(
        self,
        conn: sa.Connection,
        gateway_id: str,
        seq: int,
        payload: bytes,
        *,
        updates: int,
        now: datetime,
    ) -> None:
        """Append one state report to a gateway's log, inside ``conn``'s transaction."""
        for statement, params in self.device_report_rows(
            gateway_id, seq, payload, updates=updates, now=now
        ):
            conn.execute(statement, params)

    def last_report_seq(self, conn: sa.Connection, gateway_id: str) -> int:
        reports = conn.execute(
            sa.select(sa.func.max(device_reports.c.seq)).where(
                device_reports.c.gateway_id == gateway_id
            )
        ).scalar()
        folded = conn.execute(
            sa.select(gateway_devices.c.through_seq).where(
                gateway_devices.c.gateway_id == gateway_id
            )
        ).scalar()
        return max(int(reports or 0), int(folded or 0))

    def get_devices(self, conn: sa.Connection, gateway_id: str) -> tuple[bytes, int]:
        """Snapshot and later reports, concatenated (a StateReport with duplicates), and
        the last report sequence they include."""
        row = conn.execute(
            sa.select(gateway_devices.c.payload, gateway_devices.c.through_seq).where(
                gateway_devices.c.gateway_id == gateway_id
            )
        ).first()
        snapshot, through = (bytes(row.payload), int(row.through_seq)) if row else (b"", 0)
        later = conn.execute(
            sa.select(device_reports.c.seq, device_reports.c.payload)
            .where(device_reports.c.gateway_id == gateway_id)
            .where(device_reports.c.seq > through)
            .order_by(device_reports.c.seq)
        ).all()
        last = int(later[-1].seq) if later else through
        return snapshot + b"".join(bytes(r.payload) for r in later), last

    def compact_devices(
        self, conn: sa.Connection, gateway_id: str, snapshot: bytes, through_seq: int
    ) -> None:
        """Replace the snapshot with ``snapshot`` and drop the reports it folds in."""
        conn.execute(
            gateway_devices.update()
            .where(gateway_devices.c.gateway_id == gateway_id)
            .values(payload=snapshot, through_seq=through_seq)
        )
        conn.execute(
            device_reports.delete()
            .where(device_reports.c.gateway_id == gateway_id)
            .where(device_reports.c.seq <= through_seq)
        )

    def device_updates_total(self, conn: sa.Connection) -> int:
        total = conn.execute(sa.select(sa.func.sum(gateway_devices.c.device_updates))).scalar()
        return int(total or 0)
