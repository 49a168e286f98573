"""Who may connect, over real mutual TLS: only certificates of this CA, known to the store,
unexpired, of the right role for the service (orchestrator/access/peers.py,
Certificates.check).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from edge.identity import load_credentials
from orchestrator.access.peers import AuthError, Peer
from orchestrator.wiring import Orchestrator
from protos.ondijon.v1 import control_pb2, control_pb2_grpc, enrollment_pb2, enrollment_pb2_grpc
from provisioning.ca import CertificateAuthority, load_certs, make_csr, new_private_key
from provisioning.identity import Identity, Role, identity_of
from tests.conftest import City
from tests.security.conftest import (
    audit_rows,
    channel,
    enrolled,
    gateway_channel,
    leaf,
    stream,
)

pytestmark = pytest.mark.integration


async def link_status(chan: grpc.aio.Channel) -> grpc.StatusCode:
    """Open a GatewayLink stream, say hello, and return how it ended."""
    async with chan, stream(chan) as s:
        s.send_raw(b"")
        return await s.closing_status()


async def admin_status(chan: grpc.aio.Channel) -> grpc.StatusCode:
    async with chan:
        try:
            await control_pb2_grpc.ControlCentreStub(chan).ListGateways(
                control_pb2.ListGatewaysRequest(), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


async def test_without_a_client_certificate_nothing_is_served(city: City) -> None:
    assert await link_status(channel(city.address, city.ca.root_pem)) is grpc.StatusCode.UNAVAILABLE
    assert (
        await admin_status(channel(city.address, city.ca.root_pem)) is grpc.StatusCode.UNAVAILABLE
    )
    # The server is unharmed.
    assert await admin_status(city.admin.channel()) is grpc.StatusCode.OK


async def test_a_certificate_from_another_ca_is_refused_at_the_handshake(
    city: City, tmp_path: Path
) -> None:
    await city.register("dj-001")
    other = CertificateAuthority.init(tmp_path / "other-ca", now=datetime.now(UTC))
    key, chain = leaf(
        other, Identity(Role.GATEWAY, "dj-001"), now=datetime.now(UTC), lifetime=timedelta(days=1)
    )
    status = await link_status(channel(city.address, city.ca.root_pem, key, chain))
    assert status is grpc.StatusCode.UNAVAILABLE
    key, chain = leaf(
        other, Identity(Role.OPERATOR, "admin"), now=datetime.now(UTC), lifetime=timedelta(days=1)
    )
    status = await admin_status(channel(city.address, city.ca.root_pem, key, chain))
    assert status is grpc.StatusCode.UNAVAILABLE


async def test_an_expired_certificate_is_refused(city: City) -> None:
    await city.register("dj-001")
    past = datetime.now(UTC) - timedelta(days=10)
    key, chain = leaf(
        city.ca, Identity(Role.GATEWAY, "dj-001"), now=past, lifetime=timedelta(days=1)
    )
    # The TLS handshake itself refuses it.
    status = await link_status(channel(city.address, city.ca.root_pem, key, chain))
    assert status is grpc.StatusCode.UNAVAILABLE


async def test_the_certificate_check_refuses_expired_unknown_and_mismatched(city: City) -> None:
    app: Orchestrator = city.running.app
    config = await enrolled(city, "dj-001")
    cert = load_certs(load_credentials(config).chain_pem)[0]
    good = Peer(
        identity_of(cert), format(cert.serial_number, "x"), cert.not_valid_after_utc.timestamp()
    )
    await app.certificates.check(good)
    cases = {
        "expired": Peer(good.identity, good.serial_hex, datetime.now(UTC).timestamp() - 1),
        "not known": Peer(good.identity, "abc123", good.not_after_ts),
        "does not match": Peer(
            Identity(Role.GATEWAY, "dj-002"), good.serial_hex, good.not_after_ts
        ),
    }
    for words, peer in cases.items():
        app.certificates.forget({peer.serial_hex})
        with pytest.raises(AuthError) as caught:
            await app.certificates.check(peer)
        assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
        assert words in str(caught.value)
    refused = [r for r in audit_rows(app) if r["action"] == "auth.refused"]
    assert {r["detail"] for r in refused} == {
        "client certificate is not known to this orchestrator",
        "client certificate does not match its registration",
    }


async def test_a_certificate_of_this_ca_the_store_never_issued_is_refused(city: City) -> None:
    await city.register("dj-001")
    # As if the issuing key had been used behind the orchestrator's back.
    key, chain = leaf(
        city.ca, Identity(Role.GATEWAY, "dj-001"), now=datetime.now(UTC), lifetime=timedelta(days=1)
    )
    status = await link_status(channel(city.address, city.ca.root_pem, key, chain))
    assert status is grpc.StatusCode.UNAUTHENTICATED


async def test_an_operator_certificate_cannot_open_a_gateway_link(city: City) -> None:
    assert await link_status(city.admin.channel()) is grpc.StatusCode.PERMISSION_DENIED


async def test_a_gateway_certificate_cannot_call_the_admin_api(city: City) -> None:
    config = await enrolled(city, "dj-001")
    assert await admin_status(gateway_channel(city, config)) is grpc.StatusCode.PERMISSION_DENIED
    async with gateway_channel(city, config) as chan:
        stub = control_pb2_grpc.ControlCentreStub(chan)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RevokeGateway(control_pb2.RevokeGatewayRequest(gateway_id="dj-001"))
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    refused = [r for r in audit_rows(city.running.app) if r["result"] == "refused"]
    assert refused and refused[0]["actor"] == "spiffe://ondijon/gateway/dj-001"


async def test_only_gateways_renew_and_only_on_the_mutual_tls_port(city: City) -> None:
    csr = make_csr(new_private_key(), "x")
    async with city.admin.channel() as chan:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await enrollment_pb2_grpc.EnrollmentStub(chan).Renew(
                enrollment_pb2.RenewRequest(csr_pem=csr), timeout=10
            )
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await enrollment_pb2_grpc.EnrollmentStub(chan).Enroll(
                enrollment_pb2.EnrollRequest(gateway_id="x", serial="s", token="t", csr_pem=csr),
                timeout=10,
            )
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    async with channel(city.enroll_address, city.ca.root_pem) as chan:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await enrollment_pb2_grpc.EnrollmentStub(chan).Renew(
                enrollment_pb2.RenewRequest(csr_pem=csr), timeout=10
            )
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
