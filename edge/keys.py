"""The gateway's key and certificate on disk, and a renewal's key work in a child interpreter.

:func:`install` makes a key and its certificate the live pair in one atomic step (used by
``ondijon edge enroll`` and by a renewal).

A renewal makes a new P-256 key, a CSR for it, and installs the certificate the
orchestrator returns: ``cryptography``'s work, ~9 MiB that a Pi-class agent would carry for
the rest of its life after its first renewal (every few days). The agent
(:func:`edge.identity.renew`) therefore has a child do it,
``python -m edge.keys --state-dir DIR --gateway-id ID``, which:

1. makes the key, kept in its memory only, and prints ``{"csr": PEM}`` on one line;
2. reads the chain the orchestrator answered from its standard input, checks that it is
   for that key, installs both, and prints ``{"not_before": ISO, "not_after": ISO}``, or
   ``{"refused": {"field": F, "reason": R}}`` when the chain is not for that key;
3. given nothing (the request failed), installs nothing: the key is gone with the child.

The key never leaves the device: it exists in the child until it is written, mode 0600,
beside its certificate.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from foundation.errors import FieldError
from foundation.files import fsync_dir, private_directory, write_atomic

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec


class KeyMismatchError(FieldError):
    """The certificate returned is not for this gateway's key."""


def install(state_dir: Path, key: ec.EllipticCurvePrivateKey, chain_pem: bytes) -> x509.Certificate:
    """Make ``key`` and its certificate the live pair in one atomic step.

    Both go into a new directory; the ``current`` symlink is then swapped with
    ``os.replace``, so a power cut leaves either the old pair or the new one, never a key
    with someone else's certificate.

    Raises:
        KeyMismatchError: the chain's certificate is for another key (nothing changes).
        provisioning.ca.CAError: ``chain_pem`` is not a PEM certificate.
    """
    from provisioning.ca import KEY_MODE, key_to_pem, load_certs

    leaf = load_certs(chain_pem, "certificate_pem")[0]
    if leaf.public_key() != key.public_key():
        raise KeyMismatchError(
            "certificate_pem", "the certificate returned does not match this gateway's key"
        )
    base = state_dir / "identity"
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


def main(argv: Sequence[str] | None = None) -> int:
    """The renewal's child (see the module docstring)."""
    from provisioning.ca import make_csr, new_private_key

    parser = argparse.ArgumentParser(prog="python -m edge.keys")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--gateway-id", required=True)
    args = parser.parse_args(argv)
    key = new_private_key()
    print(json.dumps({"csr": make_csr(key, args.gateway_id).decode()}), flush=True)
    chain = sys.stdin.buffer.read()
    if not chain:
        return 1
    try:
        leaf = install(args.state_dir, key, chain)
    except FieldError as exc:
        print(json.dumps({"refused": {"field": exc.field, "reason": exc.reason}}))
        return 0
    print(
        json.dumps(
            {
                "not_before": leaf.not_valid_before_utc.isoformat(),
                "not_after": leaf.not_valid_after_utc.isoformat(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
