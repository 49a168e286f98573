"""The cabinet's Mosquitto broker, configured by the project: accounts, ACL, listeners.

:func:`provision` makes a cabinet's field bus from nothing: a random password per node
and one for the gateway (``credentials.json``, mode 0600), each node's own configuration
file to flash (``nodes/<node>.json``, :mod:`edge.node.config`), and the broker's files
(:func:`write`). :func:`start` runs ``mosquitto -c <file>`` and waits until it listens.

What the broker enforces (docs/fieldbus.md, "Broker"):

- no anonymous client; one account per node (user name = node id) and one ``gateway``
  account per cabinet;
- ``use_username_as_clientid``: a client's id is its user name, so a node cannot take
  another's session over by connecting with its client id;
- the ACL: the gateway reads and writes the cabinet's whole tree; a node may publish
  only its own ``state`` and ``presence`` and read only its own ``cmd`` and ``program``
  and the cabinet's gateway heartbeat. A publish outside that is dropped by the broker,
  and a subscription outside it receives nothing;
- ``max_packet_size``: no message beyond a few KiB reaches anyone;
- TLS on a second listener when certificate files are given (an ESP32 affords it, about
  40 KB of RAM per connection; smaller boards use the plain listener, which should then
  be bound to the cabinet's own node network).

Passwords are hashed in mosquitto's own format, ``$7$<iterations>$<salt>$<hash>``:
PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt, 64-byte key, standard base64 (what
``mosquitto_passwd`` writes since 2.0). ``mosquitto_passwd -U`` hashes the file in place
when it is installed; otherwise :func:`hash_password` writes the same format.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.node import bus
from edge.node.config import NodeConfig
from edge.node.errors import FieldBusError, InvalidMessage

GATEWAY_USER = "gateway"
PBKDF2_ITERATIONS = 101
MAX_PACKET_SIZE = 4096


class BrokerError(FieldBusError):
    """The broker cannot be configured or started as asked; names the field and reason."""


@dataclass(frozen=True)
class TlsFiles:
    """A TLS listener's server certificate chain and key (PEM files)."""

    certfile: Path
    keyfile: Path


@dataclass(frozen=True)
class BrokerConfig:
    """What a cabinet's broker serves.

    Attributes:
        cabinet: the cabinet id (topic prefix).
        directory: where the broker's files go (written by :func:`write`).
        nodes: node id -> password.
        gateway_password: the gateway account's password.
        port: the plain listener's port (None: no plain listener).
        bind: the address the listeners bind to.
        tls_port: the TLS listener's port, used with ``tls``.
        tls: the TLS listener's certificate and key.
        run_as: the user mosquitto stays or becomes when started as root (its packaged
            default drops to ``mosquitto``, who could not read files made by another).
    """

    cabinet: str
    directory: Path
    nodes: Mapping[str, str]
    gateway_password: str
    port: int | None = 1883
    bind: str = "127.0.0.1"
    tls_port: int | None = None
    tls: TlsFiles | None = None
    run_as: str | None = None

    def __post_init__(self) -> None:
        try:
            bus.check_id("cabinet", self.cabinet)
            for node in self.nodes:
                bus.check_id(f"nodes[{node!r}]", node)
        except InvalidMessage as exc:
            raise BrokerError(exc.field, exc.reason) from None
        if GATEWAY_USER in self.nodes:
            raise BrokerError(f"nodes[{GATEWAY_USER!r}]", "is the gateway's account")
        if self.port is None and self.tls_port is None:
            raise BrokerError("port", "a broker needs a plain or a TLS listener")
        if (self.tls_port is None) != (self.tls is None):
            raise BrokerError("tls", "tls_port and tls go together")
        for name, password in [*self.nodes.items(), (GATEWAY_USER, self.gateway_password)]:
            if not password or any(c in password for c in ":\n\r"):
                raise BrokerError(f"password of {name}", "empty, or holds ':' or a newline")


@dataclass(frozen=True)
class BrokerFiles:
    """The files :func:`write` made."""

    config: Path
    passwd: Path
    acl: Path


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``password`` in mosquitto's PBKDF2-SHA512 format (``$7$101$salt$hash``)."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    encoded_salt, encoded_key = base64.b64encode(salt).decode(), base64.b64encode(key).decode()
    return f"$7${PBKDF2_ITERATIONS}${encoded_salt}${encoded_key}"


def acl_text(cabinet: str, nodes: Sequence[str]) -> str:
    """The ACL: the gateway owns the cabinet's tree, each node only its own topics.

    Written out per node rather than as ``%u`` patterns: the file says exactly who may do
    what, and mosquitto warns about a pattern without ``%u`` (the heartbeat topic).
    """
    root = bus.PREFIX + cabinet
    lines = [
        f"# Field-bus ACL of cabinet {cabinet}, written by edge/fieldbus/broker.py.",
        f"user {GATEWAY_USER}",
        f"topic readwrite {root}/#",
    ]
    for node in nodes:
        own = f"{root}/node/{node}/"
        lines += [
            "",
            f"user {node}",
            f"topic write {own}{bus.STATE}",
            f"topic write {own}{bus.PRESENCE}",
            f"topic read {own}{bus.CMD}",
            f"topic read {own}{bus.PROGRAM}",
            f"topic read {root}/gateway",
        ]
    return "\n".join(lines) + "\n"


def config_text(config: BrokerConfig, files: BrokerFiles) -> str:
    """mosquitto.conf for ``config``."""
    data = config.directory / "data"
    lines = [
        f"# Field-bus broker of cabinet {config.cabinet}, written by edge/fieldbus/broker.py.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {files.passwd}",
        f"acl_file {files.acl}",
        f"max_packet_size {MAX_PACKET_SIZE}",
        "set_tcp_nodelay true",
        "persistence true",
        f"persistence_location {data}/",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    if config.run_as is not None:
        lines.append(f"user {config.run_as}")
    # A client's id is its user name, so no node can take over another's session. It is
    # a listener setting: written before any listener, it opens a default one on 1883.
    if config.port is not None:
        lines += [f"listener {config.port} {config.bind}", "use_username_as_clientid true"]
    if config.tls is not None:
        lines += [
            f"listener {config.tls_port} {config.bind}",
            "use_username_as_clientid true",
            f"certfile {config.tls.certfile}",
            f"keyfile {config.tls.keyfile}",
            "tls_version tlsv1.2",
        ]
    return "\n".join(lines) + "\n"


def write(config: BrokerConfig, *, use_mosquitto_passwd: bool | None = None) -> BrokerFiles:
    """Write the broker's configuration, password file and ACL into ``config.directory``.

    Args:
        config: what the broker serves.
        use_mosquitto_passwd: hash with ``mosquitto_passwd -U`` (True), with
            :func:`hash_password` (False), or the first if installed (None). Passwords
            never go on a command line.
    """
    directory = config.directory
    (directory / "data").mkdir(parents=True, exist_ok=True)
    files = BrokerFiles(directory / "mosquitto.conf", directory / "passwd", directory / "acl")
    accounts = {GATEWAY_USER: config.gateway_password, **config.nodes}
    tool = shutil.which("mosquitto_passwd") if use_mosquitto_passwd is not False else None
    if use_mosquitto_passwd and tool is None:
        raise BrokerError("mosquitto_passwd", "not installed")
    if tool is not None:
        _write_private(files.passwd, "".join(f"{u}:{p}\n" for u, p in accounts.items()))
        subprocess.run([tool, "-U", str(files.passwd)], check=True, capture_output=True)
    else:
        text = "".join(f"{u}:{hash_password(p)}\n" for u, p in accounts.items())
        _write_private(files.passwd, text)
    files.acl.write_text(acl_text(config.cabinet, list(config.nodes)))
    files.config.write_text(config_text(config, files))
    return files


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def provision(
    cabinet: str,
    node_ids: Sequence[str],
    directory: Path,
    *,
    broker_host: str = "127.0.0.1",
    port: int = 1883,
    run_as: str | None = None,
    **node_settings: object,
) -> tuple[BrokerConfig, BrokerFiles]:
    """A new field bus for ``cabinet``: fresh passwords, node configurations, broker files.

    ``node_settings`` go into every node's configuration (e.g. ``fallback_s=300``).
    """
    nodes = {node: secrets.token_urlsafe(18) for node in node_ids}
    config = BrokerConfig(
        cabinet=cabinet,
        directory=directory,
        nodes=nodes,
        gateway_password=secrets.token_urlsafe(18),
        port=port,
        run_as=run_as,
    )
    files = write(config)
    credentials = {"cabinet": cabinet, "gateway": config.gateway_password, "nodes": nodes}
    _write_private(directory / "credentials.json", json.dumps(credentials, indent=1))
    (directory / "nodes").mkdir(exist_ok=True)
    for node, password in nodes.items():
        node_config = NodeConfig(
            cabinet=cabinet,
            node=node,
            password=password,
            broker=broker_host,
            port=port,
            **node_settings,  # type: ignore[arg-type]
        )
        _write_private(directory / "nodes" / f"{node}.json", node_config.to_json())
    return config, files


def free_port() -> int:
    """A TCP port free on the loopback now (for tests and the bench)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RunningBroker:
    """A mosquitto process started by :func:`start`; :meth:`stop` ends it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """End it at once, as a crash would (no goodbye, no persistence save)."""
        self.process.kill()
        self.process.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def mosquitto_binary() -> str | None:
    """The mosquitto binary, or None (Debian installs it in /usr/sbin)."""
    found = shutil.which("mosquitto")
    if found is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"
    return found


def start(
    files: BrokerFiles, port: int, *, binary: str | None = None, timeout: float = 10.0
) -> RunningBroker:
    """Run ``mosquitto -c`` on ``files`` and wait until ``port`` accepts connections."""
    binary = binary or mosquitto_binary()
    if binary is None:
        raise BrokerError("mosquitto", "the mosquitto binary is not installed")
    log = files.config.with_suffix(".log")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [binary, "-c", str(files.config)], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError("mosquitto", f"exited at start: {log.read_text()[-500:]}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return RunningBroker(process, port, log)
        time.sleep(0.05)
    process.kill()
    raise BrokerError("mosquitto", f"not listening on {port} after {timeout} s")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge.fieldbus.broker``: provision a cabinet's bus, optionally run it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cabinet", required=True)
    parser.add_argument("--nodes", type=int, default=100, help="nodes n-0001..n-N")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--broker-host", default="127.0.0.1", help="what nodes dial")
    parser.add_argument("--start", action="store_true", help="run mosquitto on it")
    args = parser.parse_args(argv)
    port = args.port or free_port()
    run_as = getpass.getuser() if os.geteuid() == 0 else None
    nodes = [f"n-{i:04d}" for i in range(1, args.nodes + 1)]
    _, files = provision(
        args.cabinet, nodes, args.dir, broker_host=args.broker_host, port=port, run_as=run_as
    )
    print(f"broker configuration: {files.config}  (port {port}, {len(nodes)} nodes)")
    print(f"credentials: {args.dir / 'credentials.json'}; node files: {args.dir / 'nodes'}")
    if args.start:
        running = start(files, port)
        # Stopped by Ctrl-C or by SIGTERM (a service manager, a test): either way the
        # broker goes with this process instead of running on as an orphan.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print(f"mosquitto running (pid {running.process.pid}); Ctrl-C stops it", flush=True)
        try:
            running.process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            running.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
