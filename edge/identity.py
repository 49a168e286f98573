"""The gateway's identity: its key, its certificate, and how it gets them.

``ondijon edge enroll --token T`` makes a P-256 key on the gateway (file mode 0600; it never
leaves the device), sends a CSR with the one-time token to the enrollment port over
server-authenticated TLS (trusting only the installed OnDijon root), and stores the
certificate it gets back. An agent whose certificate expired while it was offline comes
back the same way, with a fresh token from the control room.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import datetime

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.config import AgentConfig
from foundation.errors import FieldError
from foundation.files import fsync_dir, private_directory, write_atomic
from protos.ondijon.v1 import enrollment_pb2, enrollment_pb2_grpc
from provisioning.ca import KEY_MODE, CAError, key_to_pem, load_certs, make_csr, new_private_key

log = logging.getLogger("ondijon.edge.identity")


class IdentityFilesError(FieldError):
    """The gateway's key or certificate is missing or unusable; says what to do."""


class EnrollmentError(FieldError):
    """The orchestrator refused the enrollment (``status`` set), or its answer is unusable."""


@dataclass(frozen=True)
class Credentials:
    """What the agent presents on the mutual-TLS link."""

    root_pem: bytes
    key_pem: bytes
    chain_pem: bytes
    not_before: datetime
    not_after: datetime

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_pem,
            private_key=self.key_pem,
            certificate_chain=self.chain_pem,
        )


def channel_options(config: AgentConfig) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = [
        # A link silently dropped (cellular or NAT timeout) is found within these two, and
        # reopened, through the balancer, to a replica that answers.
        ("grpc.keepalive_time_ms", int(config.keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        # gRPC core times keepalive pings out after this one (a minute by default).
        ("grpc.http2.ping_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Reconnection pacing is ours (jittered backoff in the link), not gRPC's.
        ("grpc.initial_reconnect_backoff_ms", 1000),
        ("grpc.max_reconnect_backoff_ms", 5000),
    ]
    if config.server_name:
        options.append(("grpc.ssl_target_name_override", config.server_name))
    return options


def read_root(config: AgentConfig) -> bytes:
    try:
        root = config.ca_file.read_bytes()
    except FileNotFoundError:
        raise IdentityFilesError(
            "orchestrator.ca_file", f"{config.ca_file} does not exist (install the OnDijon root CA)"
        ) from None
    try:
        load_certs(root, "orchestrator.ca_file")
    except CAError as exc:
        raise IdentityFilesError(exc.field, exc.reason) from None
    return root


def load_credentials(config: AgentConfig) -> Credentials:
    """The key and certificate enrolled earlier; raise if there are none."""
    if not config.key_file.exists() or not config.cert_file.exists():
        raise IdentityFilesError(
            "gateway.state_dir",
            f"no certificate in {config.state_dir}: enroll first with "
            "`ondijon edge enroll --config FILE --token TOKEN`",
        )
    chain = config.cert_file.read_bytes()
    leaf = load_certs(chain, str(config.cert_file))[0]
    return Credentials(
        root_pem=read_root(config),
        key_pem=config.key_file.read_bytes(),
        chain_pem=chain,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
    )


def _pending_key(config: AgentConfig) -> ec.EllipticCurvePrivateKey:
    # A key made by an earlier, interrupted enrollment is reused: it never left the device.
    path = config.state_dir / "identity" / "pending.key"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key
    key = new_private_key()
    private_directory(config.state_dir)  # the agent's alone, whatever the umask
    private_directory(path.parent)
    write_atomic(path, key_to_pem(key), mode=KEY_MODE)
    return key


def install_identity(
    config: AgentConfig, key: ec.EllipticCurvePrivateKey, chain_pem: bytes
) -> x509.Certificate:
    """Make ``key`` and its certificate the live pair in one atomic step.

    Both go into a new directory; the ``current`` symlink is then swapped with
    ``os.replace``, so a power cut leaves either the old pair or the new one, never a key
    with someone else's certificate.
    """
    leaf = load_certs(chain_pem, "certificate_pem")[0]
    if leaf.public_key() != key.public_key():
        raise EnrollmentError(
            "certificate_pem", "the certificate returned does not match this gateway's key"
        )
    base = config.state_dir / "identity"
    generation = base / f"cert-{leaf.serial_number:x}"
    private_directory(generation)
    write_atomic(generation / "gateway.key", key_to_pem(key), mode=KEY_MODE)
    write_atomic(generation / "gateway.pem", chain_pem)
    link = base / "current.new"
    link.unlink(missing_ok=True)
    link.symlink_to(generation.name)
    link.replace(base / "current")
    fsync_dir(base)
    (base / "pending.key").unlink(missing_ok=True)
    for old in base.glob("cert-*"):
        if old != generation:
            shutil.rmtree(old, ignore_errors=True)
    return leaf


async def enroll(config: AgentConfig, token: str, *, timeout: float = 30.0) -> x509.Certificate:
    """Enroll this gateway with ``token``; stores key and certificate under state_dir."""
    root = read_root(config)
    key = _pending_key(config)
    csr = make_csr(key, config.gateway_id)
    credentials = grpc.ssl_channel_credentials(root_certificates=root)
    async with grpc.aio.secure_channel(
        config.enroll_address, credentials, options=channel_options(config)
    ) as channel:
        stub = enrollment_pb2_grpc.EnrollmentStub(channel)
        try:
            response = await stub.Enroll(
                enrollment_pb2.EnrollRequest(
                    gateway_id=config.gateway_id, serial=config.serial, token=token, csr_pem=csr
                ),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise EnrollmentError.answered(exc.code().name, exc.details() or "") from None
    leaf = install_identity(config, key, response.certificate_pem)
    log.info("enrolled as %s until %s", config.gateway_id, leaf.not_valid_after_utc)
    return leaf


async def renew(
    config: AgentConfig, channel: grpc.aio.Channel, *, timeout: float = 30.0
) -> x509.Certificate:
    """Get a new certificate (for a new key) over the mutual-TLS link."""
    key = new_private_key()
    stub = enrollment_pb2_grpc.EnrollmentStub(channel)
    try:
        response = await stub.Renew(
            enrollment_pb2.RenewRequest(csr_pem=make_csr(key, config.gateway_id)),
            timeout=timeout,
        )
    except grpc.aio.AioRpcError as exc:
        raise EnrollmentError.answered(exc.code().name, exc.details() or "") from None
    leaf = install_identity(config, key, response.certificate_pem)
    log.info("certificate renewed until %s", leaf.not_valid_after_utc)
    return leaf
