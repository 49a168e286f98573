"""The orchestrator's own certificate and the bundle of client CA roots rotate without a
restart: replaced files are served to the next handshake (orchestrator/server.py,
``dynamic_ssl_server_credentials``)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from foundation.clock import ManualClock
from foundation.files import write_atomic
from ondijon.client import AdminClient
from orchestrator.server import ensure_server_certificate
from protos.ondijon.v1 import control_pb2
from provisioning.ca import KEY_MODE, CertificateAuthority, key_to_pem, new_private_key
from provisioning.identity import Identity, Role
from tests.conftest import City
from tests.security.conftest import channel, leaf, stream

pytestmark = pytest.mark.integration


def served_serial(port: int, root: Path, client: tuple[Path, Path] | None) -> int:
    """Serial of the certificate the server presents to a new TLS connection."""
    context = ssl.create_default_context(cafile=str(root))
    context.set_alpn_protocols(["h2"])
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def new_server_pair(city: City) -> int:
    """Issue a new orchestrator certificate and drop it in place, as a renewal would."""
    key_pem, issued = city.ca.issue_keypair(
        Identity(Role.ORCHESTRATOR, "orchestrator"),
        now=datetime.now(UTC),
        lifetime=timedelta(days=90),
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
    )
    state = city.config.state_dir
    write_atomic(state / "server.key", key_pem, mode=KEY_MODE)
    write_atomic(state / "server.pem", issued.chain_pem)
    return issued.certificate.serial_number


async def test_a_replaced_server_certificate_is_served_without_restart(city: City) -> None:
    root = city.tmp_path / "root.pem"
    root.write_bytes(city.ca.root_pem)
    profile = city.admin.directory
    client = (profile / "operator.pem", profile / "operator.key")
    port, enroll_port = city.running.port, city.running.enroll_port
    before = await asyncio.to_thread(served_serial, port, root, client)
    assert before == await asyncio.to_thread(served_serial, enroll_port, root, None)

    serial = new_server_pair(city)
    assert await asyncio.to_thread(served_serial, port, root, client) == serial
    assert await asyncio.to_thread(served_serial, enroll_port, root, None) == serial
    # The same process still answers, over the new certificate.
    await AdminClient(city.admin).list_gateways(control_pb2.ListGatewaysRequest())


async def test_a_key_without_its_certificate_is_not_served(city: City) -> None:
    root = city.tmp_path / "root.pem"
    root.write_bytes(city.ca.root_pem)
    before = await asyncio.to_thread(served_serial, city.running.enroll_port, root, None)
    # Half a rotation: a new key, the old certificate.
    write_atomic(city.config.state_dir / "server.key", key_to_pem(new_private_key()), mode=KEY_MODE)
    assert await asyncio.to_thread(served_serial, city.running.enroll_port, root, None) == before
    await AdminClient(city.admin).list_gateways(control_pb2.ListGatewaysRequest())


async def test_a_new_root_in_the_client_bundle_is_trusted_without_restart(
    city: City, tmp_path: Path
) -> None:
    await city.register("dj-001")
    other = CertificateAuthority.init(tmp_path / "next-ca", now=datetime.now(UTC))
    key, chain = leaf(
        other, Identity(Role.GATEWAY, "dj-001"), now=datetime.now(UTC), lifetime=timedelta(days=1)
    )

    async def status() -> grpc.StatusCode:
        async with channel(city.address, city.ca.root_pem, key, chain) as chan, stream(chan) as s:
            s.send_raw(b"")
            return await s.closing_status()

    assert await status() is grpc.StatusCode.UNAVAILABLE  # the handshake refuses it
    bundle = city.config.state_dir / "client-ca.pem"
    write_atomic(bundle, bundle.read_bytes() + other.root_pem)
    # Now TLS lets it through, and the store (which never issued it) refuses it.
    assert await status() is grpc.StatusCode.UNAUTHENTICATED


def test_the_orchestrator_renews_its_certificate_past_two_thirds_of_its_life(
    city: City,
) -> None:
    store = city.running.app.runner.store
    cert_path, _ = ensure_server_certificate(
        city.ca, city.config, store, ManualClock(datetime.now(UTC))
    )
    first = x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number
    later = ManualClock(datetime.now(UTC) + timedelta(days=59))
    ensure_server_certificate(city.ca, city.config, store, later)
    assert x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number == first
    later.advance(2 * 86400)
    ensure_server_certificate(city.ca, city.config, store, later)
    assert x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number != first
