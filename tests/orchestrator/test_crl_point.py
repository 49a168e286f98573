"""Certificates say where their CRL is, and the orchestrator serves it there: a relying
party on any TLS stack (not only OnDijon's own clients) can check revocation.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from foundation.clock import SystemClock
from ondijon.client import AdminClient
from orchestrator.config import OrchestratorConfig
from orchestrator.server import start
from protos.ondijon.v1 import control_pb2
from provisioning.ca import CAError, CertificateAuthority, load_certs
from provisioning.identity import Identity, Role
from tests.conftest import City, orchestrator_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def distribution_points(cert: x509.Certificate) -> list[str]:
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return [str(name.value) for point in points for name in point.full_name or []]


def test_leaves_name_the_crl_urls_and_bad_urls_are_refused_by_name(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    CertificateAuthority.init(tmp_path / "ca", now=now)
    urls = ("http://crl.example.org/ondijon.crl", "http://10.0.0.5:7480/crl")
    ca = CertificateAuthority.load(tmp_path / "ca", crl_urls=urls)
    _, issued = ca.issue_keypair(
        Identity(Role.OPERATOR, "alice"), now=now, lifetime=timedelta(days=1)
    )
    assert distribution_points(issued.certificate) == list(urls)
    bare = CertificateAuthority.load(tmp_path / "ca")
    _, plain = bare.issue_keypair(
        Identity(Role.OPERATOR, "bob"), now=now, lifetime=timedelta(days=1)
    )
    with pytest.raises(x509.ExtensionNotFound):
        distribution_points(plain.certificate)
    for bad in ("https://crl.example.org/x", "ftp://x/y", "crl.example.org/x", "http:///x"):
        with pytest.raises(CAError, match=r"^crl_urls\[0\]: "):
            CertificateAuthority.load(tmp_path / "ca", crl_urls=(bad,))


@pytest.mark.integration
async def test_a_gateway_certificate_points_at_a_crl_that_lists_it_once_revoked(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/crl/ondijon.crl"
    config: OrchestratorConfig = replace(
        orchestrator_config(tmp_path), crl_urls=(url,), crl_listen=f"127.0.0.1:{port}"
    )
    running = await start(config, SystemClock(), ca=ca)
    city = City(tmp_path, ca, config, running, admin=None)  # type: ignore[arg-type]
    city.admin = city.operator("admin", "admin", ["*"])
    try:
        agent = await city.enrolled("dj-crl")
        leaf = load_certs(agent.cert_file.read_bytes())[0]
        assert distribution_points(leaf) == [url]
        operator_pem = (city.admin.directory / "operator.pem").read_bytes()
        assert distribution_points(load_certs(operator_pem)[0]) == [url]

        def fetch(where: str) -> tuple[str, bytes]:
            with urllib.request.urlopen(where, timeout=5) as answer:
                return answer.headers["Content-Type"], answer.read()

        kind, der = await asyncio.to_thread(fetch, url)
        assert kind == "application/pkix-crl"
        crl = x509.load_der_x509_crl(der)
        assert crl.is_signature_valid(ca.issuing.public_key())  # type: ignore[arg-type]
        assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is None

        await AdminClient(city.admin).revoke_gateway(
            control_pb2.RevokeGatewayRequest(gateway_id="dj-crl", reason="key-compromise"),
        )
        _, der = await asyncio.to_thread(fetch, url)
        revoked = x509.load_der_x509_crl(der)
        assert revoked.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None

        with pytest.raises(urllib.error.HTTPError) as missing:
            await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/anything-else")
        assert missing.value.code == 404
    finally:
        await running.stop(0)
