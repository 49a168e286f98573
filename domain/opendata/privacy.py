"""The last gate before anything is published: no personal data leaves.

:func:`scan` looks at one exported file for names of fields that carry personal data
(access-list entries, badges, plates, operators, authors of commands, callers, addresses,
free text) and for values shaped like personal data (e-mail addresses, French phone
numbers, number plates old and new, IP addresses, badge-like hexadecimal codes). The
export refuses to write anything when it finds one, and the tests run it, with personal
data planted in the store, over every file of every export.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from foundation.errors import FieldError


class PrivacyError(FieldError):
    """An export would publish personal data; ``field`` names the file and the place."""


# Field names (JSON keys, CSV headers) that carry, or could carry, personal data.
FORBIDDEN_FIELD = re.compile(
    r"(access.?list|badge|plate|immatricul|operator|author|created.?by|issued.?by|"
    r"requested.?by|acknowledged.?by|assigned.?to|closed.?by|ended.?by|confirmed.?by|"
    r"uploaded.?by|actor|e.?mail|phone|t[eé]l[eé]phone|address|caller|reporter|"
    r"^ip$|ip.?address|passage|comment|note|message|serial|token|user|password|name.?of)",
    re.IGNORECASE,
)
PATTERNS: dict[str, re.Pattern[str]] = {
    "e-mail address": re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    "phone number": re.compile(r"(?<![\d.])(?:\+33\s?|0)[1-9](?:[\s.-]?\d{2}){4}(?![\d.])"),
    "number plate": re.compile(r"\b[A-HJ-NP-TV-Z]{2}-?\d{3}-?[A-HJ-NP-TV-Z]{2}\b"),
    "old number plate": re.compile(r"\b\d{1,4} [A-Z]{1,3} (?:\d{2}|2A|2B)\b"),
    "IP address": re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
    "badge code": re.compile(r"\b(?=[0-9A-Fa-f]*[A-Fa-f])(?=[0-9A-Fa-f]*\d)[0-9A-Fa-f]{8,}\b"),
}
# Keys of our own that the field check must not mistake (the dataset's dictionary).
ALLOWED_FIELDS = frozenset({"name", "title", "description", "vcard:hasEmail"})


@dataclass(frozen=True)
class Finding:
    file: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.what}"


def scan(
    file: str, data: bytes, *, allowed_values: Iterable[str] = (), planted: Iterable[str] = ()
) -> list[Finding]:
    """What in ``data`` looks personal. ``allowed_values``: text published on purpose (the
    publisher's contact address); ``planted``: exact values known to be personal (tests)."""
    text = data.decode("utf-8")
    allowed = [v for v in allowed_values if v]
    findings: list[Finding] = []
    keys: set[str] = set()
    values: set[str] = set()
    where = "text"
    if file.endswith((".json", ".geojson", ".jsonld")):
        _walk(json.loads(text), keys, values)
        where = "key"
    elif file.endswith(".csv"):
        rows = list(csv.reader(io.StringIO(text)))
        keys = set(rows[0]) if rows else set()
        values = {cell for row in rows[1:] for cell in row}
        where = "column"
    else:
        values = {text}
    if file.startswith("schemas/"):
        keys = set()  # a schema's keys are JSON Schema's words and the columns, checked apart
    findings += scan_values(file, keys, values, allowed, where)
    for value in planted:
        if value and value in text:
            findings.append(Finding(file, "content", f"planted personal value {value!r}"))
    return findings


def scan_values(
    file: str,
    keys: Iterable[str],
    values: Iterable[str],
    allowed: Iterable[str] = (),
    where: str = "field",
) -> list[Finding]:
    """What looks personal among field names ``keys`` and ``values``."""
    findings = []
    for key in sorted(set(keys)):
        if key not in ALLOWED_FIELDS and FORBIDDEN_FIELD.search(key):
            findings.append(Finding(file, f"{where} {key!r}", "a field that carries personal data"))
    # Each distinct value once (communes, enumerations and dates repeat by the thousand).
    cleaned = "\x00".join(sorted(set(values)))  # a separator no pattern crosses
    for value in allowed:
        if value:
            cleaned = cleaned.replace(value, " ")
    for what, pattern in PATTERNS.items():
        if what == "e-mail address" and "@" not in cleaned:
            continue
        m = pattern.search(cleaned)
        if m is not None:
            findings.append(Finding(file, "value", f"{what} {m.group()!r}"))
    return findings


def check(files: dict[str, bytes], *, allowed_values: Iterable[str] = ()) -> None:
    """Raise :class:`PrivacyError` naming the first finding, if any."""
    allowed = list(allowed_values)
    for name, data in files.items():
        refuse(scan(name, data, allowed_values=allowed))


def check_rows(
    dataset: str,
    columns: Iterable[str],
    rows: Iterable[Mapping[str, Any]],
    allowed_values: Iterable[str] = (),
) -> None:
    """The same gate on a dataset's rows, before they become files: every format of a
    dataset is written from these rows, so one look at its distinct values covers them."""
    values: set[str] = set()
    for row in rows:
        for v in row.values():
            if isinstance(v, list | tuple):
                values.update(str(x) for x in v)
            elif v is not None and not isinstance(v, bool):
                values.add(str(v))
    refuse(scan_values(dataset, columns, values, allowed_values, "column"))


def refuse(found: list[Finding]) -> None:
    if found:
        raise PrivacyError(f"{found[0].file}: {found[0].where}", found[0].what)


def _walk(value: Any, keys: set[str], values: set[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            keys.add(str(k))
            _walk(v, keys, values)
    elif isinstance(value, list):
        for v in value:
            _walk(v, keys, values)
    elif isinstance(value, str):
        values.add(value)
    elif value is not None and not isinstance(value, bool):
        values.add(str(value))
