"""What the load benchmarks share: a CA, many registered gateways with their own
certificates, and a real orchestrator process on SQLite.

Used by ``link_bench.py`` and ``drain_bench.py``; not a benchmark itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orchestrator.store.database import Store
from provisioning.ca import CertificateAuthority, key_to_pem, make_csr, new_private_key
from provisioning.identity import Identity, Role


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

    @classmethod
    def build(cls, work: Path, gateways: int, prefix: str) -> BenchCity:
        now = datetime.now(UTC)
        ca = CertificateAuthority.init(work / "ca", now=now)
        port, enroll_port = free_port(), free_port()
        db = work / "orchestrator.db"
        (work / "orchestrator.toml").write_text(
            f'[server]\nlisten = "127.0.0.1:{port}"\nenroll_listen = "127.0.0.1:{enroll_port}"\n'
            f'[store]\nurl = "sqlite:///{db}"\n'
            f'[identity]\nca_dir = "{work / "ca"}"\nstate_dir = "{work / "orchestrator"}"\n'
            '[console]\nlisten = ""\n[public]\nlisten = ""\n'  # one host may run several
        )
        store = Store.open(f"sqlite:///{db}")
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
        return cls(work, ca, port, db, identities)

    def start_orchestrator(self) -> subprocess.Popen[bytes]:
        """``ondijon orchestrator serve`` in its own process, once it listens."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        config = self.work / "orchestrator.toml"
        log = open(self.work / "orchestrator.log", "wb")  # noqa: SIM115 - lives with the process
        server = subprocess.Popen(
            [sys.executable, "-m", "ondijon.cli", "orchestrator", "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for _ in range(300):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.1)
        return server
