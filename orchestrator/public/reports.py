"""Citizens' reports: the shell around :mod:`domain.opendata.reports`.

A report (kind, optional detail, position, and a solved proof-of-work challenge) is
matched to the nearest assets of its kind in the register. In the same transaction:

- if one of them already has an active alarm of the kind reported (the system knows:
  a lamp failure, a bollard fault, an earlier report) the report is attached to it;
- else, if its cabinet has an open root cause (mains lost, gateway silent), to that;
- else a ``reported`` alarm is raised on the nearest asset for a crew (one per device:
  more reports of the same lamp count on it).

The reporter gets an opaque reference and follows the alarm's progress with it
(``received``, ``acknowledged``, ``crew_assigned``, ``repaired``). Nothing about the
reporter is kept: no address (rate limits key on it in memory only), no name, no text.
Reports are deleted ``retention`` after they were made (:meth:`ReportService.sweep`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from domain.alarms import REPORTED, ROOT_TYPES, Occurrence
from domain.city.inventory import AssetKind
from domain.opendata import reports as core
from domain.opendata.datasets import LAMP_FAULTS
from domain.opendata.reports import AssetPoint, ReportError
from foundation.files import private_directory, write_atomic
from orchestrator.alarms.service import apply
from orchestrator.store import alarms as alarm_sql
from orchestrator.store import assets as asset_sql
from orchestrator.store import public as sql
from orchestrator.store.records import Conflict
from orchestrator.store.runner import StoreRunner

log = logging.getLogger("ondijon.orchestrator.public")

Connection = Any
BOLLARD_FAULTS = frozenset({"bollard.fault", "bollard.locked_out", "equipment.failed", REPORTED})
FAULTS = {"lamp": LAMP_FAULTS, "bollard_site": BOLLARD_FAULTS}


@dataclass(frozen=True)
class Submitted:
    reference: str
    asset_id: str
    distance_m: float
    attached: bool  # to an alarm the system already had


def read_targets(conn: Connection) -> list[AssetPoint]:
    """The assets a report can be about: lamps and bollard sites of the register."""
    kinds = {AssetKind.LAMP: "lamp", AssetKind.BOLLARD_SITE: "bollard_site"}
    return [
        AssetPoint(
            kinds[a.kind],
            a.asset_id,
            a.gateway_id,
            a.device_id,
            a.commune,
            a.latitude,
            a.longitude,
        )
        for a in asset_sql.load_register(conn).values()
        if a.kind in kinds
    ]


def area_of(
    targets: Sequence[AssetPoint], margin_deg: float = 0.01
) -> tuple[float, float, float, float]:
    """(west, south, east, north) around the assets: where a report may be."""
    if not targets:
        return (0.0, 0.0, 0.0, 0.0)
    lons = [t.longitude for t in targets]
    lats = [t.latitude for t in targets]
    return (
        min(lons) - margin_deg,
        min(lats) - margin_deg,
        max(lons) + margin_deg,
        max(lats) + margin_deg,
    )


def report_key(path: Path) -> bytes:
    """The HMAC key that signs challenges: read, or made (0600) on first start."""
    if not path.exists():
        private_directory(path.parent)
        write_atomic(path, secrets.token_bytes(32))
    key = path.read_bytes()
    if len(key) < 16:
        raise ReportError("report_key_file", f"{path} holds fewer than 16 bytes")
    return key


class ReportService:
    """Reports of one orchestrator process."""

    def __init__(
        self,
        *,
        runner: StoreRunner,
        now: Callable[[], datetime],
        secret: bytes,
        difficulty: int,
        retention: timedelta = core.RETENTION,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        sweep_s: float = 3600.0,
    ) -> None:
        self.runner = runner
        self.now = now
        self.secret = secret
        self.difficulty = difficulty
        self.retention = retention
        self.random_bytes = random_bytes
        self.sweep_s = sweep_s
        self.targets: list[AssetPoint] = []
        self.area = (0.0, 0.0, 0.0, 0.0)

    async def refresh_targets(self) -> None:
        targets = await self.runner.read(read_targets)
        self.targets, self.area = targets, area_of(targets)

    def challenge(self) -> dict[str, Any]:
        challenge = core.issue_challenge(
            self.secret, self.now(), self.random_bytes(16), self.difficulty
        )
        return {
            "challenge": challenge,
            "difficulty": self.difficulty,
            "expires_in_s": int(core.CHALLENGE_TTL.total_seconds()),
            "algorithm": "SHA-256(challenge + ':' + nonce) with `difficulty` leading zero bits",
        }

    async def submit(self, body: Mapping[str, Any]) -> Submitted:
        """Take a report; ReportError (field named, nothing kept) when it is refused."""
        if not self.targets:
            await self.refresh_targets()
        now = self.now()
        report = core.parse(body, self.area)
        spent = core.check_work(
            self.secret, body.get("challenge", ""), body.get("nonce", ""), now, self.difficulty
        )
        matches = core.nearest(report, self.targets)
        if not matches:
            what = "lamp" if core.ASSET_OF[report.kind] == "lamp" else "bollard"
            raise ReportError(
                "latitude", f"no {what} within {core.MAX_DISTANCE_M:.0f} m of this position"
            )
        reference = core.reference(self.random_bytes(core.REFERENCE_BYTES))
        key = spent.hex()

        def write(conn: Connection) -> Submitted:
            if sql.challenge_used(conn, key):
                raise ReportError("challenge", "already used: ask for a new one")
            first = matches[0].asset
            types = FAULTS[first.kind]
            alarm_id = None
            for m in matches:
                alarm_id = sql.active_alarm(conn, m.asset.gateway_id, [m.asset.device_id], types)
                if alarm_id is not None:
                    break
            attached = alarm_id is not None
            if alarm_id is None:
                alarm_id = alarm_sql.open_root(conn, first.gateway_id, ROOT_TYPES)
                attached = alarm_id is not None
            if alarm_id is None:
                occurrence = Occurrence(
                    first.gateway_id,
                    first.device_id,
                    REPORTED,
                    True,
                    now,
                    core.summary(matches)
                    + (
                        f" ({report.kind}, {report.detail})"
                        if report.detail
                        else f" ({report.kind})"
                    ),
                )
                written = apply(conn, first.commune, [occurrence], now)
                alarm_id = (
                    written[-1]
                    if written
                    else sql.active_alarm(conn, first.gateway_id, [first.device_id], [REPORTED])
                )
            add = functools.partial(
                sql.add_report,
                conn,
                sql.StoredReport(
                    reference=reference,
                    kind=report.kind,
                    detail=report.detail,
                    latitude=report.latitude,
                    longitude=report.longitude,
                    commune=first.commune,
                    asset_id=first.asset_id,
                    gateway_id=first.gateway_id,
                    device_id=first.device_id,
                    distance_m=round(matches[0].distance_m, 1),
                    alarm_id=alarm_id,
                    reported_at=now,
                ),
                key,
            )
            try:
                add()
            except Conflict:
                raise ReportError("challenge", "already used: ask for a new one") from None
            return Submitted(reference, first.asset_id, matches[0].distance_m, attached)

        return await self.runner.write(write)

    async def follow(self, reference: str) -> dict[str, Any] | None:
        """What a reporter may know of a report: its progress, nothing of anyone."""
        if not 10 <= len(reference) <= 32 or not all(c.isalnum() or c in "-_" for c in reference):
            return None
        state = await self.runner.read(sql.get_report, reference)
        if state is None:
            return None
        r = state.report
        if state.alarm_open is None or state.alarm_open is False:
            status = "repaired" if state.closed_at is not None else "received"
        elif state.assigned:
            status = "crew_assigned"
        elif state.acknowledged:
            status = "acknowledged"
        else:
            status = "received"
        return {
            "reference": r.reference,
            "kind": r.kind,
            "detail": r.detail or None,
            "asset": r.asset_id,
            "areaServed": r.commune,
            "status": status,
            "reported_on": r.reported_at.date().isoformat(),
            "repaired_on": state.closed_at.date().isoformat() if state.closed_at else None,
            "deleted_on": (r.reported_at + self.retention).date().isoformat(),
        }

    async def sweep(self) -> int:
        """Delete the reports past the retention period; how many."""
        cutoff = self.now() - self.retention
        deleted = await self.runner.write(sql.delete_reports_before, cutoff)
        if deleted:
            log.info("deleted %d citizens' reports past their retention", deleted)
        return deleted

    async def run(self) -> None:
        """Sweep and refresh the assets forever (owned by the server's task set)."""
        while True:
            try:
                await self.sweep()
                await self.refresh_targets()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("report sweep failed; trying again")
            await asyncio.sleep(self.sweep_s)
