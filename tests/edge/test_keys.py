"""A renewal's key, made and installed by a child interpreter (edge/keys.py): the key is
the CSR's, lands 0600 beside its certificate, and nothing is installed for a chain of another
key or when the request failed."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioning.ca import CertificateAuthority, make_csr, new_private_key
from provisioning.identity import Identity, Role

NOW = datetime.now(UTC)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca", now=NOW)


def _child(state_dir: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-P", "-m", "edge.keys", "--state-dir", str(state_dir)]
    return subprocess.Popen(
        [*command, "--gateway-id", "dj-001"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _csr(child: subprocess.Popen[bytes]) -> bytes:
    assert child.stdout is not None
    return str(json.loads(child.stdout.readline())["csr"]).encode()


def _issue(ca: CertificateAuthority, csr: bytes) -> bytes:
    return ca.issue_for_csr(
        csr, Identity(Role.GATEWAY, "dj-001"), now=NOW, lifetime=timedelta(days=7)
    ).chain_pem


def test_the_child_installs_the_certificate_of_the_key_it_made(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    child = _child(tmp_path)
    chain = _issue(ca, _csr(child))
    out, err = child.communicate(chain, timeout=60)
    assert child.returncode == 0, err
    answer = json.loads(out)
    leaf = x509.load_pem_x509_certificate(chain)
    assert (answer["not_before"], answer["not_after"]) == (
        leaf.not_valid_before_utc.isoformat(),
        leaf.not_valid_after_utc.isoformat(),
    )
    live = tmp_path / "identity" / "current"
    assert live.resolve().name == f"cert-{leaf.serial_number:x}"
    assert (live / "gateway.pem").read_bytes() == chain
    key = serialization.load_pem_private_key((live / "gateway.key").read_bytes(), None)
    assert key.public_key() == leaf.public_key()
    assert (live / "gateway.key").stat().st_mode & 0o777 == 0o600


def test_a_chain_for_another_key_is_refused_and_nothing_installed(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    child = _child(tmp_path)
    _csr(child)
    someone_else = _issue(ca, make_csr(new_private_key(), "dj-001"))
    out, _ = child.communicate(someone_else, timeout=60)
    assert json.loads(out) == {
        "refused": {
            "field": "certificate_pem",
            "reason": "the certificate returned does not match this gateway's key",
        }
    }
    assert not (tmp_path / "identity" / "current").exists()


def test_a_request_that_failed_installs_nothing(tmp_path: Path) -> None:
    child = _child(tmp_path)
    _csr(child)
    out, _ = child.communicate(b"", timeout=60)
    assert child.returncode == 1 and out == b""
    assert not (tmp_path / "identity").exists()
