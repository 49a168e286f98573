"""The gateway's identity: its key, its certificate, and how it gets them.

``ondijon edge enroll --token T`` makes a P-256 key on the gateway (file mode 0600; it never
leaves the device), sends a CSR with the one-time token to the enrollment port over
server-authenticated TLS (trusting only the installed OnDijon root), and stores the
certificate it gets back. An agent whose certificate expired while it was offline comes
back the same way, with a fresh token from the control room.

The running agent reads only the dates of its certificate (:mod:`provisioning.validity`) and
has a child interpreter make and install the key of a renewal (:mod:`edge.keys`):
``cryptography`` is loaded only by ``ondijon edge enroll``, by that child, and to word what
is wrong with a file the quick reader cannot read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import grpc

from edge import keys
from edge.config import AgentConfig
from foundation.errors import FieldError
from foundation.escaping import escape
from foundation.files import private_directory, write_atomic
from protos.ondijon.v1 import enrollment_pb2, enrollment_pb2_grpc
from provisioning import validity

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

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
        if not validity.every_validity(root):
            raise ValueError("no certificate")
    except ValueError:
        from provisioning.ca import CAError, load_certs

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
    try:
        not_before, not_after = validity.validity(chain)
    except ValueError:
        # What the quick reader cannot read, the full parser words (or reads after all).
        from provisioning.ca import load_certs

        leaf = load_certs(chain, str(config.cert_file))[0]
        not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    return Credentials(
        root_pem=read_root(config),
        key_pem=config.key_file.read_bytes(),
        chain_pem=chain,
        not_before=not_before,
        not_after=not_after,
    )


def _pending_key(config: AgentConfig) -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from provisioning.ca import KEY_MODE, key_to_pem, new_private_key

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
    """Make ``key`` and its certificate the live pair in one atomic step
    (:func:`edge.keys.install`)."""
    try:
        return keys.install(config.state_dir, key, chain_pem)
    except keys.KeyMismatchError as exc:
        raise EnrollmentError(exc.field, exc.reason) from None


@dataclass(frozen=True)
class Renewed:
    """What the agent keeps of the certificate a renewal installed: its dates."""

    not_valid_before_utc: datetime
    not_valid_after_utc: datetime


async def enroll(config: AgentConfig, token: str, *, timeout: float = 30.0) -> x509.Certificate:
    """Enroll this gateway with ``token``; stores key and certificate under state_dir."""
    from provisioning.ca import make_csr

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


# How long the renewal's child may take to start (a Pi Zero loads cryptography in seconds)
# and to install what it was given.
CHILD_TIMEOUT_S = 120.0


async def renew(
    config: AgentConfig, channel: grpc.aio.Channel, *, timeout: float = 30.0
) -> Renewed:
    """Get a new certificate, for a new key, over the mutual-TLS link.

    The key is made and installed by a child interpreter (:mod:`edge.keys`); this process
    only carries its request and the orchestrator's answer.

    Raises:
        EnrollmentError: the orchestrator refused, or answered a certificate for another key.
        IdentityFilesError: the child could not make the key or install the pair.
    """
    child = await asyncio.create_subprocess_exec(
        # -P: no working directory ahead of the release on the child's path (as the launcher).
        *(sys.executable, "-P", "-m", "edge.keys"),
        *("--state-dir", str(config.state_dir), "--gateway-id", config.gateway_id),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        line, err = await asyncio.wait_for(child.stdout.readline(), CHILD_TIMEOUT_S), b""
        if not line:  # it ended: what it said on its way out
            _, err = await asyncio.wait_for(child.communicate(), CHILD_TIMEOUT_S)
        request = _answer(line, err)
        stub = enrollment_pb2_grpc.EnrollmentStub(channel)
        try:
            response = await stub.Renew(
                enrollment_pb2.RenewRequest(csr_pem=str(request["csr"]).encode()),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise EnrollmentError.answered(exc.code().name, exc.details() or "") from None
        out, err = await asyncio.wait_for(
            child.communicate(response.certificate_pem), CHILD_TIMEOUT_S
        )
        installed = _answer(out, err)
        refused = installed.get("refused")
        if isinstance(refused, dict):
            raise EnrollmentError(str(refused["field"]), str(refused["reason"]))
        renewed = Renewed(
            datetime.fromisoformat(str(installed["not_before"])),
            datetime.fromisoformat(str(installed["not_after"])),
        )
    except (KeyError, ValueError, TimeoutError) as exc:
        raise IdentityFilesError(
            "gateway.state_dir", f"the renewal's key child failed: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    log.info("certificate renewed until %s", renewed.not_valid_after_utc)
    return renewed


def _answer(line: bytes, err: bytes = b"") -> dict[str, object]:
    """One JSON line of the child (:mod:`edge.keys`); its last error line if there is none."""
    try:
        answer = json.loads(line)
    except ValueError:
        said = err.decode(errors="replace").strip().splitlines()[-1:] or ["nothing"]
        raise ValueError(f"it answered {escape(said[0])!r}") from None
    if not isinstance(answer, dict):
        raise ValueError(f"it answered {escape(str(answer))!r}")
    return answer
