"""What the load benchmarks share: a CA, many registered gateways with their own
certificates, and a real orchestrator process on SQLite.

Used by ``link_bench.py``, ``drain_bench.py``, ``city_bench.py``, ``command_bench.py`` and
``ingest_curve.py`` (which also starts several replicas on one PostgreSQL database); not a
benchmark itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orchestrator.config import OrchestratorConfig
from orchestrator.identity.operators import add_operator
from orchestrator.store.database import Store
from provisioning.ca import CertificateAuthority, key_to_pem, make_csr, new_private_key
from provisioning.identity import Identity, Role
from provisioning.profile import Profile


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class BenchCity:
    """A CA, ``identities`` (key PEM, certificate chain PEM) of registered gateways, and an
    orchestrator configuration in ``work``."""

    work: Path
    ca: CertificateAuthority
    port: int
    db: Path
    identities: list[tuple[bytes, bytes]]
    store_url: str = ""
    console_port: int = 0  # the web console's HTTPS port, 0 when off
    enroll_port: int = 0
    # Each replica's (mutual-TLS port, enrollment port), kept for its restarts.
    replica_ports: dict[int, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        work: Path,
        gateways: int,
        prefix: str,
        store_url: str | None = None,
        *,
        console: bool = False,
    ) -> BenchCity:
        """``store_url``: SQLite in ``work`` when None, else that (empty) database;
        ``console``: the orchestrator serves its web console (on a free port)."""
        now = datetime.now(UTC)
        ca = CertificateAuthority.init(work / "ca", now=now)
        port, enroll_port = free_port(), free_port()
        db = work / "orchestrator.db"
        store_url = store_url or f"sqlite:///{db}"
        console_port = free_port() if console else 0
        (work / "orchestrator.toml").write_text(
            _config(work, port, enroll_port, store_url, work / "orchestrator", console_port)
        )
        store = Store.open(store_url)
        print(f"issuing {gateways} gateway certificates ...", flush=True)
        identities: list[tuple[bytes, bytes]] = []
        with store.engine.begin() as conn:
            for g in range(gateways):
                gid = f"{prefix}-{g:05d}"
                store.add_gateway(
                    conn,
                    gateway_id=gid,
                    serial=gid,
                    commune="Dijon",
                    latitude=47.3,
                    longitude=5.0,
                    time_zone="Europe/Paris",
                    tags=[],
                    now=now,
                )
                key = new_private_key()
                cert = ca.issue_for_csr(
                    make_csr(key, gid),
                    Identity(Role.GATEWAY, gid),
                    now=now,
                    lifetime=timedelta(days=1),
                )
                store.record_certificate(
                    conn,
                    serial_hex=cert.serial_hex,
                    role="gateway",
                    name=gid,
                    not_before=cert.certificate.not_valid_before_utc,
                    not_after=cert.not_after,
                )
                identities.append((key_to_pem(key), cert.chain_pem))
        store.close()
        return cls(work, ca, port, db, identities, store_url, console_port, enroll_port)

    def operator(self, name: str = "bench", role: str = "admin") -> Profile:
        """An operator of every commune, registered with the orchestrator's store and CA;
        its profile (certificate, key, address) for the admin API."""
        return add_operator(
            OrchestratorConfig.load(self.work / "orchestrator.toml"),
            name=name,
            role=role,
            communes=["*"],
            profile_dir=self.work / "profiles" / name,
            address=f"localhost:{self.port}",
            now=datetime.now(UTC),
        )

    def start_orchestrator(self, wrap: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """``ondijon orchestrator serve`` in its own process, once it listens (``wrap``: a
        command it runs under, such as a profiler)."""
        return self._serve(self.work / "orchestrator.toml", self.port, "orchestrator", wrap)

    def start_replica(self, index: int) -> tuple[subprocess.Popen[bytes], int]:
        """Another orchestrator process on the same store and CA (its own ports and state
        directory), once it listens; returns it and its mutual-TLS port. Started again
        (after it stopped), it keeps its ports."""
        if index not in self.replica_ports:
            self.replica_ports[index] = free_port(), free_port()
        port, enroll_port = self.replica_ports[index]
        config = self.work / f"replica-{index}.toml"
        state = self.work / f"replica-{index}"
        config.write_text(_config(self.work, port, enroll_port, self.store_url, state))
        return self._serve(config, port, f"replica-{index}"), port

    def _serve(
        self, config: Path, port: int, name: str, wrap: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        server = subprocess.Popen(
            [
                *wrap,
                sys.executable,
                "-m",
                "ondijon.cli",
                "orchestrator",
                "serve",
                "--config",
                str(config),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for _ in range(300):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        return server


def _config(
    work: Path, port: int, enroll_port: int, store_url: str, state: Path, console_port: int = 0
) -> str:
    console = f"127.0.0.1:{console_port}" if console_port else ""
    return (
        f'[server]\nlisten = "127.0.0.1:{port}"\nenroll_listen = "127.0.0.1:{enroll_port}"\n'
        f'[store]\nurl = "{store_url}"\n'
        f'[identity]\nca_dir = "{work / "ca"}"\nstate_dir = "{state}"\n'
        # No web console (unless asked, on a free port) and no public side: their fixed
        # ports would keep a second replica from starting.
        # The bench's consoles all sign in from one address within a minute.
        f'[console]\nlisten = "{console}"\nsign_in_per_minute = 1000\n[public]\nlisten = ""\n'
    )
