"""Revocation over real mutual TLS: the open stream is closed at once, new streams and
renewals are refused, other replicas catch up on their sweep, the CRL says so, and the
only way back is a fresh token (orchestrator/identity/revocation.py, identity_admin.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import grpc
import pytest
from cryptography import x509

from edge.identity import EnrollmentError, enroll, load_credentials
from ondijon.client import AdminClient, AdminError
from orchestrator.identity.revocation import Sweeper
from protos.ondijon.v1 import control_pb2, control_pb2_grpc, enrollment_pb2, enrollment_pb2_grpc
from provisioning.ca import load_certs, make_csr, new_private_key
from tests.conftest import City
from tests.security.conftest import channel, enrolled, gateway_channel, stream

pytestmark = pytest.mark.integration


def serial_of(config: object) -> str:
    chain = load_credentials(config).chain_pem  # type: ignore[arg-type]
    return format(load_certs(chain)[0].serial_number, "x")


async def revoke(
    city: City, gateway_id: str, reason: str = ""
) -> control_pb2.RevokeGatewayResponse:
    response = await AdminClient(city.admin).revoke_gateway(
        control_pb2.RevokeGatewayRequest(gateway_id=gateway_id, reason=reason),
    )
    return response


async def test_revoking_closes_the_open_stream_at_once_and_refuses_new_ones(city: City) -> None:
    config = await enrolled(city, "dj-001")
    serial = serial_of(config)
    async with gateway_channel(city, config) as chan, stream(chan) as s:
        await s.hello()
        started = time.perf_counter()
        response = await revoke(city, "dj-001", "key-compromise: cabinet door forced")
        assert await s.closing_status() is grpc.StatusCode.UNAUTHENTICATED
        latency = time.perf_counter() - started
    assert list(response.revoked_serials) == [serial]
    assert response.streams_closed == 1
    assert latency < 2.0, f"revocation took {latency:.3f} s to close the stream"
    print(f"revocation to stream closed: {latency * 1000:.1f} ms")

    async with gateway_channel(city, config) as chan, stream(chan) as s:
        s.send_raw(b"")
        assert await s.closing_status() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await enrollment_pb2_grpc.EnrollmentStub(chan).Renew(
                enrollment_pb2.RenewRequest(csr_pem=make_csr(new_private_key(), "dj-001"))
            )
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_another_replicas_revocation_closes_the_stream_on_the_next_sweep(
    city: City,
) -> None:
    app = city.running.app
    config = await enrolled(city, "dj-001")
    async with gateway_channel(city, config) as chan, stream(chan) as s:
        await s.hello()
        # Another replica writes the revocation to the shared store; this one only learns
        # of it by looking.
        with app.runner.store.engine.begin() as conn:
            app.runner.store.revoke_certificates(
                conn, role="gateway", name="dj-001", reason="elsewhere", now=datetime.now(UTC)
            )
        assert app.hub.connected("dj-001")
        assert await Sweeper(app.revoker).sweep() == 1
        assert await s.closing_status() is grpc.StatusCode.UNAUTHENTICATED
    assert await Sweeper(app.revoker).sweep() == 0


async def test_revoking_an_operator_ends_its_event_feed(city: City) -> None:
    app = city.running.app
    watcher = city.operator("watcher", "viewer", ["Dijon"])
    async with watcher.channel() as chan:
        feed = control_pb2_grpc.ControlCentreStub(chan).WatchEvents(
            control_pb2.WatchEventsRequest()
        )
        for _ in range(200):
            if app.hub.open_serials() - {""}:
                break
            await asyncio.sleep(0.01)
        with app.runner.store.engine.begin() as conn:
            app.runner.store.revoke_certificates(
                conn, role="operator", name="watcher", reason="left", now=datetime.now(UTC)
            )
        assert await Sweeper(app.revoker).sweep() == 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in feed:
                pass
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_the_crl_lists_revoked_certificates_signed_by_the_issuing_ca(city: City) -> None:
    config = await enrolled(city, "dj-001")
    await enrolled(city, "dj-002")
    serial = serial_of(config)
    async with channel(city.enroll_address, city.ca.root_pem) as chan:
        before = await enrollment_pb2_grpc.EnrollmentStub(chan).GetCrl(
            enrollment_pb2.GetCrlRequest()
        )
    assert (
        x509.load_pem_x509_crl(before.crl_pem).get_revoked_certificate_by_serial_number(
            int(serial, 16)
        )
        is None
    )
    response = await revoke(city, "dj-001", "key-compromise: cabinet door forced")

    # Anyone can fetch it from the enrollment port (no client certificate) ...
    async with channel(city.enroll_address, city.ca.root_pem) as chan:
        published = await enrollment_pb2_grpc.EnrollmentStub(chan).GetCrl(
            enrollment_pb2.GetCrlRequest()
        )
    crl = x509.load_pem_x509_crl(published.crl_pem)
    assert crl.is_signature_valid(city.ca.issuing.public_key())  # type: ignore[arg-type]
    assert crl.issuer == city.ca.issuing.subject
    assert published.crl_number == response.crl_number > before.crl_number
    entry = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert len(list(crl)) == 1  # dj-002 is not listed
    # ... and it is on disk for consumers that read files.
    assert (city.config.state_dir / "crl.pem").read_bytes() == published.crl_pem


async def test_a_revoked_gateway_comes_back_only_with_a_fresh_token(city: City) -> None:
    config = await enrolled(city, "dj-001")
    early = await AdminClient(city.admin).issue_enrollment_token(
        control_pb2.IssueEnrollmentTokenRequest(gateway_id="dj-001"),
    )
    await revoke(city, "dj-001")
    # A token handed out before the revocation died with it.
    with pytest.raises(EnrollmentError, match="already used"):
        await enroll(config, early.enrollment_token)
    fresh = await AdminClient(city.admin).issue_enrollment_token(
        control_pb2.IssueEnrollmentTokenRequest(gateway_id="dj-001"),
    )
    await enroll(config, fresh.enrollment_token)
    async with gateway_channel(city, config) as chan, stream(chan) as s:
        welcome = await s.hello()
    assert welcome.gateway_id == "dj-001"


async def test_revoking_a_gateway_nobody_may_see_is_refused(city: City) -> None:
    await enrolled(city, "dj-001")
    with pytest.raises(AdminError) as caught:
        await revoke(city, "dj-404")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
