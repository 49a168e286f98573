"""Operator accounts: a client certificate for the admin API, a role and a scope of communes.

Run on the orchestrator's host (it needs the CA and the store): ``ondijon operator add``
registers the operator, issues a certificate and writes a profile directory the operator's
CLI uses; ``ondijon operator password`` gives them a web console password and a TOTP
secret (the certificate signs them in to the console too, from a browser that holds it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from foundation.errors import FieldError
from orchestrator.config import OrchestratorConfig
from orchestrator.store.database import Store
from provisioning import totp
from provisioning.ca import CertificateAuthority
from provisioning.identity import Identity, Role, check_name
from provisioning.passwords import hash_password
from provisioning.profile import Profile

# crisis: an operator who may also start and end crisis playbooks (issue 12).
ROLES = ("viewer", "operator", "crisis", "admin")
OPERATOR_CERT_LIFETIME = timedelta(days=30)


class OperatorError(FieldError):
    """An operator cannot be added as asked."""


def add_operator(
    config: OrchestratorConfig,
    *,
    name: str,
    role: str,
    communes: Sequence[str],
    profile_dir: Path,
    address: str,
    now: datetime,
) -> Profile:
    """Register ``name`` with ``role`` over ``communes`` and write its profile."""
    check_name("name", name)
    if role not in ROLES:
        raise OperatorError("role", f"must be one of {', '.join(ROLES)}")
    if not communes:
        raise OperatorError("communes", "give at least one commune, or '*' for all")
    ca = CertificateAuthority.load(config.ca_dir, crl_urls=config.crl_urls)
    key_pem, issued = ca.issue_keypair(
        Identity(Role.OPERATOR, name), now=now, lifetime=OPERATOR_CERT_LIFETIME
    )
    store = Store.open(config.store_url)
    try:
        with store.engine.begin() as conn:
            store.put_operator(conn, name=name, role=role, communes=list(communes), now=now)
            store.record_certificate(
                conn,
                serial_hex=issued.serial_hex,
                role=Role.OPERATOR.value,
                name=name,
                not_before=issued.certificate.not_valid_before_utc,
                not_after=issued.not_after,
            )
            store.audit(
                conn,
                at=now,
                actor="local:ondijon operator add",
                action="operator.add",
                target=name,
                commune=",".join(communes),
                result="ok",
                detail=f"role {role}, certificate {issued.serial_hex}",
            )
    finally:
        store.close()
    Profile.write(
        profile_dir,
        address=address,
        key_pem=key_pem,
        chain_pem=issued.chain_pem,
        root_pem=ca.root_pem,
    )
    return Profile.load(profile_dir)


def set_console_password(
    config: OrchestratorConfig, *, name: str, password: str, now: datetime
) -> str:
    """Give ``name`` (a registered operator) a console password and a fresh TOTP secret;
    returns the secret (for the operator's authenticator app, shown once). Ends the
    operator's open console sessions; audited."""
    check_name("name", name)
    password_hash = hash_password(password)
    secret = totp.new_secret()
    store = Store.open(config.store_url)
    try:
        with store.engine.begin() as conn:
            if store.get_operator(conn, name) is None:
                raise OperatorError("name", f"no operator {name!r} (ondijon operator add first)")
            store.put_console_account(
                conn, name=name, password_hash=password_hash, totp_secret=secret, now=now
            )
            store.audit(
                conn,
                at=now,
                actor="local:ondijon operator password",
                action="operator.console_password",
                target=name,
                commune="",
                result="ok",
                detail="password and TOTP secret set",
            )
    finally:
        store.close()
    return secret
