"""Import an inventory into the register: check it, diff it, apply it in one transaction.

The same call answers a dry run (the diff, nothing written) and applies; applying checks
that the register still has the digest the operator's diff was computed against, so what
was shown is what is done. Gateways registered or moved by the import get their group
documents at once (:func:`orchestrator.store.groups.reconcile`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from domain.city.inventory import Asset, Diff, check_inventory, diff, register_digest
from foundation.errors import FieldError
from orchestrator.store import assets as asset_sql
from orchestrator.store import groups as group_sql
from orchestrator.store.groups import Written


class StaleRegister(FieldError):
    """The register changed since the diff was shown."""


@dataclass
class Outcome:
    diff: Diff
    digest: str
    applied: bool
    written: list[Written]


def import_assets(
    conn: sa.Connection,
    incoming: Sequence[Asset],
    where: Sequence[str],
    *,
    dry_run: bool,
    expected_digest: str,
    kinds: Sequence[int],
    now: datetime,
) -> Outcome:
    """Check ``incoming`` against the register, and (unless ``dry_run``) apply the diff;
    ``kinds`` are the document kinds with group documents, brought to moved gateways."""
    current = asset_sql.load_register(conn)
    digest = register_digest(current.values())
    checked = check_inventory(
        incoming, where, known_cabinets=asset_sql.cabinet_communes(conn), today=now.date()
    )
    change = diff(current, checked)
    if dry_run:
        return Outcome(change, digest, False, [])
    if expected_digest and expected_digest != digest:
        raise StaleRegister(
            "expected_digest", "the register changed since this diff was shown; import again"
        )
    moved = asset_sql.apply_diff(conn, change, now=now)
    written: list[Written] = []
    if moved:
        for kind in kinds:
            written += group_sql.reconcile(conn, kind, now=now, only=moved)
    return Outcome(change, digest, True, written)
