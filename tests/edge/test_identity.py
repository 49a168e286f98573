"""The gateway's identity on disk: enrollment, renewal, and what is never left half-done.

The key is made on the gateway and kept 0600; the live key and certificate are swapped as
one pair; a refused enrollment installs nothing; a certificate from another CA gets no
link to the orchestrator.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from edge.config import AgentConfig
from edge.identity import (
    EnrollmentError,
    IdentityFilesError,
    enroll,
    install_identity,
    load_credentials,
    read_root,
    renew,
)
from protos.ondijon.v1 import enrollment_pb2, enrollment_pb2_grpc
from provisioning.ca import CertificateAuthority, load_certs, make_csr, new_private_key
from provisioning.identity import Identity, Role, identity_of
from tests.conftest import City


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def public_pem(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.integration
async def test_enrollment_installs_a_private_key_and_a_certificate_naming_the_gateway(
    city: City,
) -> None:
    token = await city.register("dj-001")
    config = city.agent_config("dj-001")
    with pytest.raises(IdentityFilesError, match="enroll first"):
        load_credentials(config)

    leaf = await enroll(config, token)
    assert identity_of(leaf) == Identity(Role.GATEWAY, "dj-001")
    identity = config.state_dir / "identity"
    assert (identity / "current").is_symlink()
    assert (identity / "current").resolve().name == f"cert-{leaf.serial_number:x}"
    assert mode(config.key_file) == 0o600 and mode(config.identity_dir) == 0o700
    assert not (identity / "pending.key").exists()
    credentials = load_credentials(config)
    key = serialization.load_pem_private_key(credentials.key_pem, None)
    assert public_pem(key.public_key()) == public_pem(leaf.public_key())
    chain = load_certs(credentials.chain_pem)
    chain[0].verify_directly_issued_by(chain[1])
    assert credentials.not_after == leaf.not_valid_after_utc


@pytest.mark.integration
async def test_a_refused_enrollment_keeps_its_key_for_the_next_try(city: City) -> None:
    token = await city.register("dj-001")
    config = city.agent_config("dj-001")
    with pytest.raises(EnrollmentError, match="PERMISSION_DENIED: token"):
        await enroll(config, "mistyped-token")
    pending = config.state_dir / "identity" / "pending.key"
    assert not config.identity_dir.exists()
    assert mode(pending) == 0o600
    made_on_the_gateway = serialization.load_pem_private_key(pending.read_bytes(), None)

    # The key made for the refused attempt never left the device: it is the one certified.
    leaf = await enroll(config, token)
    assert public_pem(leaf.public_key()) == public_pem(made_on_the_gateway.public_key())


@pytest.mark.integration
async def test_renewal_swaps_key_and_certificate_together(city: City) -> None:
    config = await city.enrolled("dj-001")
    first = load_credentials(config)
    old_generation = config.identity_dir.resolve()
    async with grpc.aio.secure_channel(city.address, first.channel_credentials()) as channel:
        renewed = await renew(config, channel)
    second = load_credentials(config)
    assert second.key_pem != first.key_pem and second.chain_pem != first.chain_pem
    leaf = load_certs(second.chain_pem)[0]
    assert (
        (second.not_before, second.not_after)
        == (
            renewed.not_valid_before_utc,
            renewed.not_valid_after_utc,
        )
        == (leaf.not_valid_before_utc, leaf.not_valid_after_utc)
    )
    key = serialization.load_pem_private_key(second.key_pem, None)
    assert public_pem(key.public_key()) == public_pem(leaf.public_key())
    assert identity_of(leaf) == Identity(Role.GATEWAY, "dj-001")
    assert not old_generation.exists()  # the old pair is gone, not left beside the new one


def foreign_certificate(
    tmp_path: Path, gateway_id: str
) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A key and a certificate naming ``gateway_id``, from a CA the orchestrator never met."""
    other = CertificateAuthority.init(tmp_path / "other-ca", now=datetime.now(UTC), name="Evil")
    key = new_private_key()
    issued = other.issue_for_csr(
        make_csr(key, gateway_id),
        Identity(Role.GATEWAY, gateway_id),
        now=datetime.now(UTC),
        lifetime=timedelta(days=1),
    )
    return issued.chain_pem, key


@pytest.mark.integration
async def test_a_certificate_for_another_key_is_not_installed(city: City) -> None:
    config = await city.enrolled("dj-001")
    before = (config.key_file.read_bytes(), config.cert_file.read_bytes())
    chain, _ = foreign_certificate(city.tmp_path, "dj-001")
    with pytest.raises(EnrollmentError, match="does not match this gateway's key"):
        install_identity(config, new_private_key(), chain)
    assert (config.key_file.read_bytes(), config.cert_file.read_bytes()) == before


@pytest.mark.integration
async def test_a_certificate_from_another_ca_gets_no_link(city: City) -> None:
    config = await city.enrolled("dj-001")
    chain, key = foreign_certificate(city.tmp_path, "dj-001")
    install_identity(config, key, chain)
    credentials = load_credentials(config)
    async with grpc.aio.secure_channel(city.address, credentials.channel_credentials()) as channel:
        stub = enrollment_pb2_grpc.EnrollmentStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Renew(enrollment_pb2.RenewRequest(csr_pem=b""), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    store = city.running.app.runner.store
    with store.engine.connect() as conn:
        assert store.get_gateway(conn, "dj-001").last_seen is None


def test_the_root_ca_file_must_exist_and_hold_a_certificate(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[gateway]\nid = "dj-001"\nserial = "SN"\nstate_dir = "{tmp_path}"\n'
        '[orchestrator]\naddress = "localhost:7443"\nca_file = "ca.pem"\n'
        '[site]\nlatitude = 47.3\nlongitude = 5.0\ntime_zone = "Europe/Paris"\n'
    )
    config = AgentConfig.load(path)
    with pytest.raises(IdentityFilesError, match=r"orchestrator\.ca_file: .* does not exist"):
        read_root(config)
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(IdentityFilesError, match=r"orchestrator\.ca_file: not a PEM certificate"):
        read_root(config)
