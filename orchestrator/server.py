"""The orchestrator process: two TLS ports, no plaintext anywhere.

- the main port requires a client certificate from the OnDijon CA (mutual TLS) and serves
  GatewayLink, ControlCentre and Enrollment.Renew / GetCrl;
- the console port (optional, ``[console] listen``) serves the web console over HTTPS with
  the same server certificate (:mod:`orchestrator.console`);
- the enrollment port is server-authenticated TLS only and serves Enrollment.Enroll, where
  a one-time token is the credential, and GetCrl. It takes small messages and few calls at
  once: anyone can reach it.

Both ports read their certificate, and the main port its bundle of client CA roots
(``client-ca.pem``), through ``dynamic_ssl_server_credentials``: when the files change, the
next handshake uses the new ones, without a restart. The orchestrator renews its own
certificate that way past two thirds of its life (checked hourly); to rotate the CA, put
the old and the new root in ``client-ca.pem`` until every peer has moved.

Every call of both ports first goes through admission (:mod:`orchestrator.access.admission`:
strict decoding, rate limits, stream caps). In the background, the revocation sweeper
closes streams whose certificate was revoked elsewhere or expired.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2_grpc

from foundation.clock import Clock
from foundation.files import private_directory, write_atomic
from orchestrator.access.admission import Admission
from orchestrator.config import OrchestratorConfig
from orchestrator.console.app import ConsoleServer, serve_console
from orchestrator.identity.crl_point import CrlPoint
from orchestrator.ingest.link import STOPPING, add_gateway_link
from orchestrator.ingest.readiness import health_servicer as health_servicer_for_grpc
from orchestrator.ingest.routing import new_replica_id
from orchestrator.metrics import Metrics
from orchestrator.observe.observer import Observer
from orchestrator.public.http import PublicServer, serve_public
from orchestrator.store.database import Store
from orchestrator.store.runner import StoreRunner
from orchestrator.wiring import Orchestrator, build
from protos.ondijon.v1 import control_pb2_grpc, enrollment_pb2_grpc, firmware_pb2_grpc
from provisioning.ca import KEY_MODE, CAError, CertificateAuthority, load_certs
from provisioning.identity import Identity, Role

log = logging.getLogger("ondijon.orchestrator")

SERVER_CERT_LIFETIME = timedelta(days=90)
SERVER_CERT_CHECK_SECONDS = 3600.0
# The enrollment port is open to anyone: small requests (a CSR, a token), few at a time
# (and each address at most RateLimits.anonymous_calls_at_once of them, within deadlines).
ENROLL_MAX_MESSAGE_BYTES = 64 * 1024
ENROLL_MAX_CONCURRENT_CALLS = 128
MAX_METADATA_BYTES = 8 * 1024


@dataclass
class Running:
    """A started orchestrator: its server, bound ports and shared parts."""

    servers: tuple[grpc.aio.Server, ...]
    port: int
    enroll_port: int
    app: Orchestrator
    admission: Admission | None = None
    tasks: tuple[asyncio.Task[None], ...] = ()
    crl_point: CrlPoint | None = None
    public: PublicServer | None = None

    @property
    def public_port(self) -> int:
        return self.public.port if self.public else 0

    console: ConsoleServer | None = None

    @property
    def console_port(self) -> int:
        return self.console.port if self.console else 0

    observer: Observer | None = None

    async def stop(self, grace: float = 2.0) -> None:
        app = self.app
        if self.public is not None:
            await self.public.stop()
        if self.console is not None:
            await self.console.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await app.campaigns.stop()
        await app.router.stop()
        # A gateway's link (or an event feed) never ends by itself: the servers' grace would
        # only hold it here. Balancers hear this replica is not serving; its streams, and
        # any opened from now on, are closed at once, and the gateways reconnect to another
        # replica. Calls under way get the grace.
        await app.readiness.stopping()
        closed = app.hub.stop(grpc.StatusCode.UNAVAILABLE, STOPPING)
        log.info("stopping: %d stream(s) closed, %.0f s for calls under way", closed, grace)
        await asyncio.gather(*(server.stop(grace) for server in self.servers))
        if self.crl_point is not None:
            await asyncio.to_thread(self.crl_point.stop)
        if app.runner.available:
            await app.router.release_all()
        await app.runner.close()
        app.runner.store.close()
        if self.observer is not None:
            self.observer.close()


def ensure_server_certificate(
    ca: CertificateAuthority, config: OrchestratorConfig, store: Store, clock: Clock
) -> tuple[Path, Path]:
    """Issue the orchestrator's own certificate when missing or past two thirds of its life."""
    private_directory(config.state_dir)  # 0700 whatever the umask: keys live here
    cert_path, key_path = config.state_dir / "server.pem", config.state_dir / "server.key"
    now = clock.now()
    if cert_path.exists() and key_path.exists():
        cert = load_certs(cert_path.read_bytes(), str(cert_path))[0]
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        if now < cert.not_valid_before_utc + life * 2 / 3:
            return cert_path, key_path
    key_pem, issued = ca.issue_keypair(
        Identity(Role.ORCHESTRATOR, "orchestrator"),
        now=now,
        lifetime=SERVER_CERT_LIFETIME,
        dns_names=config.dns_names,
        ip_addresses=config.ip_addresses,
    )
    write_atomic(key_path, key_pem, mode=KEY_MODE)
    write_atomic(cert_path, issued.chain_pem)
    with store.engine.begin() as conn:
        store.record_certificate(
            conn,
            serial_hex=issued.serial_hex,
            role=Role.ORCHESTRATOR.value,
            name="orchestrator",
            not_before=issued.certificate.not_valid_before_utc,
            not_after=issued.not_after,
        )
    log.info("issued the orchestrator certificate %s", issued.serial_hex)
    return cert_path, key_path


class _CredentialFiles:
    """Serves the current certificate files to gRPC; re-reads them when they change."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.paths = (cert, key) if client_ca is None else (cert, key, client_ca)
        self._stamp: tuple[int, ...] = ()

    def _now_stamp(self) -> tuple[int, ...]:
        # Inode and size too: files are replaced (os.replace), sometimes twice within the
        # file system's timestamp granularity.
        stats = [os.stat(p) for p in self.paths]
        return tuple(v for st in stats for v in (st.st_ino, st.st_mtime_ns, st.st_size))

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        stamp = self._now_stamp()
        cert, key, *client_ca = (p.read_bytes() for p in self.paths)
        _check_pair(cert, key)
        self._stamp = stamp
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], client_ca[0] if client_ca else None
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration:
        # grpc-stubs types this as never-None; gRPC treats None as "unchanged".
        # Called by gRPC on new handshakes; must be cheap and must not raise.
        try:
            if self._now_stamp() == self._stamp:
                return None  # type: ignore[return-value]
            return self.configuration()
        except (OSError, ValueError, CAError):
            log.exception("could not reload TLS files; keeping the current ones")
            return None  # type: ignore[return-value]


def _check_pair(cert_pem: bytes, key_pem: bytes) -> None:
    """Raise ValueError unless the key is the certificate's: files caught mid-rotation
    (new key, old certificate) must not be served."""
    key = serialization.load_pem_private_key(key_pem, None)
    cert = load_certs(cert_pem, "server.pem")[0]
    if key.public_key() != cert.public_key():
        raise ValueError("server.key does not match server.pem (a rotation in progress?)")


def _options(config: OrchestratorConfig, max_message_bytes: int = 0) -> list[tuple[str, int]]:
    limits = config.limits
    max_message = max_message_bytes or limits.max_message_bytes
    return [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        ("grpc.server.max_pending_requests", limits.max_pending_requests),
        ("grpc.server.max_pending_requests_hard_limit", limits.max_pending_requests_hard),
        # Keepalive (docs/integrators.md): the server pings every connection after
        # keepalive_time_s and drops it when a ping goes unanswered for keepalive_timeout_s;
        # it keeps pinging a quiet cabinet (no data for hours is normal). Clients may ping
        # every min_client_ping_interval_s; faster is struck out with too_many_pings.
        ("grpc.keepalive_time_ms", limits.keepalive_time_s * 1000),
        ("grpc.keepalive_timeout_ms", limits.keepalive_timeout_s * 1000),
        # gRPC core (1.85) times keepalive pings out after the general ping timeout (one
        # minute by default), whatever keepalive_timeout_ms says: set both.
        ("grpc.http2.ping_timeout_ms", limits.keepalive_timeout_s * 1000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", limits.min_client_ping_interval_s * 1000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 0),
        ("grpc.server_handshake_timeout_ms", int(limits.handshake_timeout_s * 1000)),
        # Request metadata (headers): above the soft size some calls are refused, above the
        # hard size all (gRPC's own defaults, stated here because integrators rely on them).
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", 2 * MAX_METADATA_BYTES),
    ]


async def start(
    config: OrchestratorConfig, clock: Clock, *, ca: CertificateAuthority | None = None
) -> Running:
    """Open the store, issue the server certificate if needed and start listening."""
    ca = ca or CertificateAuthority.load(config.ca_dir)
    if config.crl_urls:
        ca.crl_urls = config.crl_urls
    replica = new_replica_id()
    settings = replace(
        config.store, application_name=f"{config.store.application_name}-{replica}"[:63]
    )
    # Metrics and health over HTTP first: not ready (rather than silent) while migrating.
    observer = Observer(Metrics(), config.observe_listen)
    try:
        store = Store.open(config.store_url, settings)
    except BaseException:
        observer.close()
        raise
    cert_path, key_path = ensure_server_certificate(ca, config, store, clock)
    client_ca = _client_ca_bundle(config, ca)
    runner = StoreRunner(store)
    await runner.start()
    health_servicer = health_servicer_for_grpc()
    app = build(
        config=config,
        clock=clock,
        ca=ca,
        runner=runner,
        replica=replica,
        health_servicer=health_servicer,
        metrics=observer.metrics,
    )
    await app.readiness.start()
    await app.crl.current(clock.now())
    await app.router.start()
    admission = app.admission

    server = grpc.aio.server(options=_options(config), interceptors=[admission])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    add_gateway_link(app.link, server)
    control_pb2_grpc.add_ControlCentreServicer_to_server(app.control, server)
    control_pb2_grpc.add_CityServicer_to_server(app.city, server)
    control_pb2_grpc.add_OperationsServicer_to_server(app.operations, server)
    firmware_pb2_grpc.add_FirmwareServicer_to_server(app.campaigns.releases, server)
    firmware_pb2_grpc.add_CampaignsServicer_to_server(app.campaigns_api, server)
    app.campaigns.start()
    enrollment_pb2_grpc.add_EnrollmentServicer_to_server(app.renew, server)
    files = _CredentialFiles(cert_path, key_path, client_ca)
    mtls = grpc.dynamic_ssl_server_credentials(
        files.configuration(), files.fetch, require_client_authentication=True
    )
    port = server.add_secure_port(config.listen, mtls)

    enroll_server = app.enroll
    enroll_grpc = grpc.aio.server(
        options=_options(config, ENROLL_MAX_MESSAGE_BYTES),
        interceptors=[admission],
        maximum_concurrent_rpcs=ENROLL_MAX_CONCURRENT_CALLS,
    )
    enrollment_pb2_grpc.add_EnrollmentServicer_to_server(enroll_server, enroll_grpc)
    # Health on the enrollment port too: a balancer checks it without a client certificate.
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, enroll_grpc)
    server_files = _CredentialFiles(cert_path, key_path, None)
    server_only = grpc.dynamic_ssl_server_credentials(
        server_files.configuration(), server_files.fetch, require_client_authentication=False
    )
    enroll_port = enroll_grpc.add_secure_port(config.enroll_listen, server_only)
    if port == 0 or enroll_port == 0:
        raise OSError(f"could not listen on {config.listen} / {config.enroll_listen}")
    await server.start()
    await enroll_grpc.start()
    console = None
    if app.console is not None:
        console = await serve_console(
            app.console, config.console.listen, cert_path, key_path, client_ca
        )
    crl_point = None
    if config.crl_listen:
        crl_point = CrlPoint(config.crl_listen, app.crl.path, config.crl_urls)
        crl_point.start()
    tasks: tuple[asyncio.Task[None], ...] = (
        asyncio.create_task(app.readiness.run(), name="readiness"),
        asyncio.create_task(app.sweeper.run(), name="revocation-sweeper"),
        asyncio.create_task(app.alarms.run(), name="alarm-sweep"),
        asyncio.create_task(app.alarm_gauge.run(), name="alarm-gauge"),
        asyncio.create_task(_keep_server_certificate(app, store), name="server-certificate"),
        asyncio.create_task(observer.run(), name="observe"),
    )
    public = None
    if app.public is not None:
        p = config.public
        cert, key = (
            (config.base_dir / p.cert_file, config.base_dir / p.key_file)
            if p.cert_file
            else (cert_path, key_path)
        )
        public = await serve_public(app.public, p.listen, cert, key)
        tasks += (
            asyncio.create_task(app.public.run(), name="open-data-refresh"),
            asyncio.create_task(app.public.reports.run(), name="report-sweep"),
        )
    if app.daily_export is not None:
        tasks += (asyncio.create_task(app.daily_export.run(), name="daily-export"),)
    if app.console is not None:
        tasks += (asyncio.create_task(app.console.states.run(), name="console-live-states"),)
    observer.attach(app.runner, app.hub, app.readiness)
    log.info("orchestrator listening: mutual TLS on %d, enrollment on %d", port, enroll_port)
    return Running(
        servers=(server, enroll_grpc),
        port=port,
        enroll_port=enroll_port,
        app=app,
        admission=admission,
        tasks=tasks,
        crl_point=crl_point,
        public=public,
        console=console,
        observer=observer,
    )


def _client_ca_bundle(config: OrchestratorConfig, ca: CertificateAuthority) -> Path:
    """``client-ca.pem``, holding at least the current root (other roots are kept: rotation)."""
    path = config.state_dir / "client-ca.pem"
    held = path.read_bytes() if path.exists() else b""
    if ca.root_pem not in held:
        if held:
            log.warning("adding the current CA root to %s (other roots there stay trusted)", path)
        write_atomic(path, held + ca.root_pem)
    return path


async def _keep_server_certificate(app: Orchestrator, store: Store) -> None:
    """Renew the orchestrator's own certificate in place, before it runs out."""
    while True:
        await app.clock.sleep(SERVER_CERT_CHECK_SECONDS)
        try:
            await asyncio.to_thread(ensure_server_certificate, app.ca, app.config, store, app.clock)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not renew the orchestrator certificate; will retry")


async def serve(config: OrchestratorConfig, clock: Clock) -> None:
    """Run until SIGINT or SIGTERM, then stop cleanly."""
    running = await start(config, clock)
    # Ingestion allocates short-lived messages by the million and makes few cycles: move
    # what start-up built out of the collector's way and collect the young generation
    # less often (measured: the collector took ~9 % of the process at city load).
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"orchestrator ready: mutual TLS on {config.listen.rpartition(':')[0]}:{running.port}, "
        f"enrollment on {config.enroll_listen.rpartition(':')[0]}:{running.enroll_port}",
        flush=True,
    )
    if running.public is not None:
        host = config.public.listen.rpartition(":")[0]
        print(f"open data and reports: https://{host}:{running.public_port}/", flush=True)
    if running.console is not None:
        host = config.console.listen.rpartition(":")[0]
        print(f"console: https://{host}:{running.console_port}/", flush=True)
    await stop.wait()
    log.info("stopping")
    await running.stop()
