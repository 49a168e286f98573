"""The CRL publisher: reason codes, ever-growing numbers (across restarts too), rebuilt when
the revoked set changes and not otherwise (orchestrator/identity/crl.py,
CertificateAuthority.sign_crl)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from orchestrator.identity.crl import CrlPublisher, next_number, reason_code
from orchestrator.store.database import Store
from orchestrator.store.runner import StoreRunner
from provisioning.ca import CAError, CertificateAuthority, RevokedEntry

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def test_a_reason_starting_with_an_rfc_5280_name_sets_the_code() -> None:
    assert reason_code("key-compromise: cabinet door forced") is x509.ReasonFlags.key_compromise
    assert reason_code("Superseded") is x509.ReasonFlags.superseded
    assert reason_code("cessation-of-operation") is x509.ReasonFlags.cessation_of_operation
    assert reason_code("the cabinet was hit by a bus") is None
    assert reason_code("") is None


def test_crl_numbers_only_go_up() -> None:
    assert next_number(0, NOW) == int(NOW.timestamp())
    assert next_number(int(NOW.timestamp()), NOW) == int(NOW.timestamp()) + 1
    assert next_number(10**12, NOW) == 10**12 + 1


def test_the_ca_signs_a_crl_with_its_issuing_key(ca: CertificateAuthority) -> None:
    crl = ca.sign_crl(
        [RevokedEntry(0xABC, NOW, x509.ReasonFlags.superseded), RevokedEntry(0xDEF, NOW)],
        now=NOW,
        next_update=NOW + timedelta(days=1),
        number=7,
    )
    assert crl.is_signature_valid(ca.issuing.public_key())  # type: ignore[arg-type]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert {entry.serial_number for entry in crl} == {0xABC, 0xDEF}
    with pytest.raises(CAError, match="next_update"):
        ca.sign_crl([], now=NOW, next_update=NOW, number=8)


async def test_the_publisher_rebuilds_only_when_something_changed(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    runner = StoreRunner(store)
    await runner.start()
    ticks = iter(float(i) for i in range(1000))
    path = tmp_path / "crl.pem"
    try:
        publisher = CrlPublisher(ca, runner, path, monotonic=lambda: next(ticks) * 10)
        first = await publisher.current(NOW)
        assert path.read_bytes() == first.pem and not first.serials
        assert (await publisher.current(NOW)) is first  # nothing changed
        with store.engine.begin() as conn:
            store.record_certificate(
                conn,
                serial_hex="abc",
                role="gateway",
                name="dj-001",
                not_before=NOW,
                not_after=NOW + timedelta(days=7),
            )
            store.revoke_certificates(conn, role="gateway", name="dj-001", reason="x", now=NOW)
        second = await publisher.current(NOW)
        assert second.serials == {"abc"} and second.number > first.number
        # A restarted orchestrator keeps counting up from the published file.
        again = await CrlPublisher(ca, runner, path).current(NOW)
        assert again.number > second.number
        # Past half its validity it is re-signed even with nothing new.
        later = await publisher.current(NOW + timedelta(hours=13))
        assert later.number > again.number and later.serials == {"abc"}
        # Expired certificates drop off.
        assert not (await publisher.current(NOW + timedelta(days=8))).serials
    finally:
        await runner.close()
        store.close()
