"""``ondijon audit export``: the audit log, page after page, as CSV or JSON lines.

For archiving on write-once storage and for the tools of an auditor. Entries come oldest
first; ``--since``/``--until`` bound them in time. CSV cells that a spreadsheet would take
for a formula (starting with ``=``, ``+``, ``-``, ``@``) are prefixed with a quote (OWASP,
"CSV injection"): the log holds text typed by callers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any, TextIO

from foundation.errors import FieldError
from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2

FIELDS = ("id", "at", "actor", "action", "target", "commune", "result", "detail")
FORMATS = ("csv", "jsonl")
PAGE = 1000


class AuditExportError(FieldError):
    """The export could not be made: a wrong option (the orchestrator's refusals are
    :class:`~ondijon.client.AdminError`)."""


def record(entry: control_pb2.AuditEntry) -> dict[str, Any]:
    """One entry as plain values (time in ISO 8601 UTC)."""
    return {
        "id": entry.id,
        "at": entry.at.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "commune": entry.commune,
        "result": entry.result,
        "detail": entry.detail,
    }


def csv_safe(value: object) -> object:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write(
    entries: Iterable[control_pb2.AuditEntry], out: TextIO, fmt: str, *, header: bool = True
) -> int:
    """Write ``entries`` to ``out`` as ``fmt`` (csv, with a ``header`` line, or jsonl);
    returns how many."""
    if fmt not in FORMATS:
        raise AuditExportError("format", f"must be one of {', '.join(FORMATS)}")
    count = 0
    writer = None
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        if header:
            writer.writeheader()
    for entry in entries:
        row = record(entry)
        if writer is not None:
            writer.writerow({k: csv_safe(v) for k, v in row.items()})
        else:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count


async def entries(
    client: AdminClient, query: control_pb2.ListAuditRequest
) -> AsyncIterator[control_pb2.AuditEntry]:
    """Every entry matching ``query``, fetched a page at a time."""
    page = control_pb2.ListAuditRequest()
    page.CopyFrom(query)
    page.limit = PAGE
    while True:
        response = await client.list_audit(page)
        for entry in response.entries:
            yield entry
        if len(response.entries) < PAGE:
            return
        page.after_id = response.next_after_id


async def export(
    client: AdminClient, query: control_pb2.ListAuditRequest, out: TextIO, fmt: str
) -> int:
    """Write every entry matching ``query`` to ``out``, a page at a time; returns how many."""
    if fmt not in FORMATS:
        raise AuditExportError("format", f"must be one of {', '.join(FORMATS)}")
    count, header, batch = 0, True, []
    async for entry in entries(client, query):
        batch.append(entry)
        if len(batch) == PAGE:
            count += write(batch, out, fmt, header=header)
            header, batch = False, []
    return count + write(batch, out, fmt, header=header)
