"""The certificate revocation list, published for consumers other than the orchestrator.

gRPC Python does no CRL checking: the orchestrator itself checks every caller's serial
against the store (:mod:`orchestrator.access.certificates`). Other consumers (a reverse proxy,
the field bus broker, an auditor) get the same facts as a standard X.509 CRL signed by the issuing
CA, written to ``<state_dir>/crl.pem`` and served by ``Enrollment.GetCrl`` on both ports.

The CRL lists every revoked certificate that has not yet expired (RFC 5280 lets an
expired one drop off: it is refused anyway). It is rebuilt when the set of revoked
certificates changes (looked at no more than every few seconds, so revocations made on
another replica show up too) and once half its validity has passed. Its number only goes
up: the issue time in seconds, or the previous number plus one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from foundation.files import PUBLIC_FILE, write_atomic
from orchestrator.store.runner import StoreRunner
from provisioning.ca import CertificateAuthority, RevokedEntry

CRL_VALIDITY = timedelta(days=1)
RECHECK_SECONDS = 5.0

# RFC 5280 5.3.1 reason names an operator may start a revocation reason with.
REASONS = {
    "key-compromise": x509.ReasonFlags.key_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}


def reason_code(text: str) -> x509.ReasonFlags | None:
    """The RFC 5280 reason ``text`` starts with (``"key-compromise: door forced"``), if any."""
    word = text.strip().split(":", 1)[0].split(" ", 1)[0].lower()
    return REASONS.get(word)


def next_number(previous: int, now: datetime) -> int:
    """A CRL number above ``previous`` (RFC 5280: monotonically increasing)."""
    return max(previous + 1, int(now.timestamp()))


@dataclass(frozen=True)
class Crl:
    """A signed CRL and what it says."""

    pem: bytes
    number: int
    this_update: datetime
    next_update: datetime
    serials: frozenset[str]


def _number_in(path: Path) -> int:
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return 0


class CrlPublisher:
    """Keeps ``path`` holding the current CRL of ``ca``."""

    def __init__(
        self,
        ca: CertificateAuthority,
        runner: StoreRunner,
        path: Path,
        *,
        validity: timedelta = CRL_VALIDITY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ca = ca
        self.runner = runner
        self.path = path
        self.validity = validity
        self.monotonic = monotonic
        self._crl: Crl | None = None
        self._checked = -float("inf")
        self._previous = _number_in(path)
        self._lock = asyncio.Lock()

    async def current(self, now: datetime, *, force: bool = False) -> Crl:
        """The CRL to hand out at ``now``; rebuilt and re-written when it is out of date."""
        async with self._lock:
            crl = self._crl
            fresh = crl is not None and now < crl.this_update + self.validity / 2
            if fresh and not force and self.monotonic() - self._checked < RECHECK_SECONDS:
                assert crl is not None
                return crl
            rows = await self.runner.read(self.runner.store.revoked_unexpired, now)
            self._checked = self.monotonic()
            serials = frozenset(serial for serial, _, _ in rows)
            if crl is not None and fresh and crl.serials == serials:
                return crl
            crl = self._build(rows, now)
            # Public and signed (for consumers other than the orchestrator).
            await asyncio.to_thread(write_atomic, self.path, crl.pem, mode=PUBLIC_FILE)
            self._crl, self._previous = crl, crl.number
            return crl

    def _build(self, rows: list[tuple[str, datetime, str]], now: datetime) -> Crl:
        number = next_number(self._previous, now)
        signed = self.ca.sign_crl(
            [RevokedEntry(int(serial, 16), at, reason_code(why)) for serial, at, why in rows],
            now=now,
            next_update=now + self.validity,
            number=number,
        )
        return Crl(
            pem=signed.public_bytes(serialization.Encoding.PEM),
            number=number,
            this_update=now,
            next_update=now + self.validity,
            serials=frozenset(serial for serial, _, _ in rows),
        )
