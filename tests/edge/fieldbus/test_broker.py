"""The generated broker configuration, enforced by a real Mosquitto: accounts, hashes,
the ACL (a node publishing as another is refused), session take-over, TLS."""

from __future__ import annotations

import base64
import datetime as dt
import getpass
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge.fieldbus import broker
from edge.fieldbus.host_umqtt import HostClient, HostTLS
from edge.node import bus
from tests.conftest import mosquitto_binary, need
from tests.edge.fieldbus.conftest import Cabinet

RUN_AS = getpass.getuser() if os.geteuid() == 0 else None


def _client(cabinet: Cabinet, user: str, password: str, client_id: str | None = None) -> HostClient:
    client = HostClient(client_id or user, "127.0.0.1", cabinet.port, user, password, 60)
    client.set_callback(lambda topic, msg: None)
    client.connect(timeout=5)
    return client


def _collect(client: HostClient, topic: str) -> list[tuple[bytes, bytes]]:
    got: list[tuple[bytes, bytes]] = []
    client.set_callback(lambda t, m: got.append((t, m)))
    client.subscribe(topic.encode(), 1)
    return got


def _drain(*clients: HostClient, seconds: float = 0.3) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for client in clients:
            client.check_msg()
        time.sleep(0.01)


def test_our_hash_is_mosquitto_passwd_s_format() -> None:
    tool = shutil.which("mosquitto_passwd")
    need(tool is not None, "mosquitto_passwd is not installed")
    assert tool is not None

    def written_by_mosquitto(tmp: Path) -> str:
        path = tmp / "pw"
        path.write_text("u:correct horse\n")
        subprocess.run([tool, "-U", str(path)], check=True)
        return path.read_text().strip().split(":", 1)[1]

    for i in range(3):
        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"pw-{os.getpid()}-{i}"
        tmp.mkdir()
        try:
            theirs = written_by_mosquitto(tmp)
        finally:
            shutil.rmtree(tmp)
        _, seven, iterations, salt, _key = theirs.split("$")
        assert (seven, iterations) == ("7", "101")
        assert broker.hash_password("correct horse", salt=base64.b64decode(salt)) == theirs


@pytest.mark.mqtt
@pytest.mark.parametrize("use_tool", [True, False], ids=["mosquitto_passwd", "builtin-pbkdf2"])
def test_the_broker_accepts_right_passwords_and_refuses_wrong_ones(
    tmp_path: Path, use_tool: bool
) -> None:
    if use_tool:
        need(shutil.which("mosquitto_passwd") is not None, "mosquitto_passwd is not installed")
    port = broker.free_port()
    config = broker.BrokerConfig(
        "cab-01", tmp_path, {"n-0001": "right"}, "gw-secret", port=port, run_as=RUN_AS
    )
    files = broker.write(config, use_mosquitto_passwd=use_tool)
    assert "right" not in files.passwd.read_text()
    assert files.passwd.stat().st_mode & 0o777 == 0o600
    running = broker.start(files, port, binary=mosquitto_binary())
    try:
        HostClient("n-0001", "127.0.0.1", port, "n-0001", "right").connect(timeout=5)
        HostClient("gateway", "127.0.0.1", port, "gateway", "gw-secret").connect(timeout=5)
        for user, password in [("n-0001", "wrong"), ("n-0002", "right"), (None, None)]:
            with pytest.raises(Exception, match="5"):  # CONNACK 5: not authorised
                HostClient("x", "127.0.0.1", port, user, password).connect(timeout=5)
    finally:
        running.stop()


@pytest.mark.mqtt
def test_a_node_publishing_as_another_is_refused_by_the_broker(cabinet: Cabinet) -> None:
    gateway = _client(cabinet, "gateway", cabinet.config.gateway_password)
    seen = _collect(gateway, "ondijon/v1/cab-01/#")
    liar = _client(cabinet, "n-0001", cabinet.password["n-0001"])
    state = bus.encode_state(bus.NodeState(0, "c", 0.0, 0, [], 1, 0, 0, 0))
    liar.publish(b"ondijon/v1/cab-01/node/n-0002/state", state)  # as another node
    liar.publish(b"ondijon/v1/cab-01/node/n-0001/cmd", bus.encode_command(0, 1))  # a command
    liar.publish(b"ondijon/v1/cab-01/gateway", bus.encode_heartbeat(1774699200))
    liar.publish(b"ondijon/v1/cab-02/node/n-0001/state", state)  # another cabinet
    liar.publish(b"ondijon/v1/cab-01/node/n-0001/state", state)  # its own: allowed
    _drain(gateway)
    assert seen == [(b"ondijon/v1/cab-01/node/n-0001/state", state)]


@pytest.mark.mqtt
def test_a_node_reads_only_its_own_commands_and_program(cabinet: Cabinet) -> None:
    gateway = _client(cabinet, "gateway", cabinet.config.gateway_password)
    snoop = _client(cabinet, "n-0001", cabinet.password["n-0001"])
    heard = _collect(snoop, "ondijon/v1/#")
    gateway.publish(b"ondijon/v1/cab-01/node/n-0002/cmd", bus.encode_command(0, 1), True, 1)
    gateway.publish(b"ondijon/v1/cab-01/node/n-0001/cmd", bus.encode_command(5, 2), True, 1)
    gateway.publish(b"ondijon/v1/cab-01/gateway", bus.encode_heartbeat(1774699200))
    _drain(snoop)
    assert sorted(t for t, _ in heard) == [
        b"ondijon/v1/cab-01/gateway",
        b"ondijon/v1/cab-01/node/n-0001/cmd",
    ]


@pytest.mark.mqtt
def test_a_node_cannot_take_over_another_s_session_with_its_client_id(cabinet: Cabinet) -> None:
    gateway = _client(cabinet, "gateway", cabinet.config.gateway_password)
    seen = _collect(gateway, "ondijon/v1/cab-01/node/+/state")
    victim = _client(cabinet, "n-0002", cabinet.password["n-0002"])
    _client(cabinet, "n-0001", cabinet.password["n-0001"], client_id="n-0002")
    _drain(gateway, victim, seconds=0.2)
    state = bus.encode_state(bus.NodeState(10, "c", 6.5, 0, [], 1, 0, 0, 0))
    victim.publish(b"ondijon/v1/cab-01/node/n-0002/state", state)  # still connected
    _drain(gateway)
    assert seen == [(b"ondijon/v1/cab-01/node/n-0002/state", state)]


def test_a_bad_broker_configuration_is_refused_by_name(tmp_path: Path) -> None:
    def field(**changes: object) -> str:
        settings: dict[str, object] = {
            "cabinet": "cab-01",
            "directory": tmp_path,
            "nodes": {"n-1": "p"},
            "gateway_password": "g",
        }
        settings.update(changes)
        with pytest.raises(broker.BrokerError) as caught:
            broker.BrokerConfig(**settings)  # type: ignore[arg-type]
        return caught.value.field

    assert field(cabinet="Cab/1") == "cabinet"
    assert field(nodes={"n#1": "p"}) == "nodes['n#1']"
    assert field(nodes={"gateway": "p"}) == "nodes['gateway']"
    assert field(nodes={"n-1": "a:b"}) == "password of n-1"
    assert field(gateway_password="") == "password of gateway"
    assert field(port=None) == "port"
    assert field(tls_port=8883) == "tls"
    assert list(tmp_path.iterdir()) == []


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cabinet")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.mqtt
def test_nodes_that_afford_tls_connect_over_it_and_verify_the_broker(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    plain, secure = broker.free_port(), broker.free_port()
    config = broker.BrokerConfig(
        "cab-01",
        tmp_path / "cab",
        {"n-0001": "pw"},
        "g",
        port=plain,
        tls_port=secure,
        tls=broker.TlsFiles(cert, key),
        run_as=RUN_AS,
    )
    running = broker.start(broker.write(config), secure, binary=mosquitto_binary())
    try:
        context = ssl.create_default_context(cafile=str(cert))
        client = HostClient("n-0001", "localhost", secure, "n-0001", "pw", 60, ssl=HostTLS(context))
        client.connect(timeout=5)
        client.publish(b"ondijon/v1/cab-01/node/n-0001/presence", bus.encode_presence(True))
        assert client.bytes_sent > 0
        stranger = ssl.create_default_context()  # does not trust the cabinet's certificate
        with pytest.raises(ssl.SSLCertVerificationError):
            HostClient(
                "n-0001", "localhost", secure, "n-0001", "pw", 60, ssl=HostTLS(stranger)
            ).connect(timeout=5)
        HostClient("n-0001", "127.0.0.1", plain, "n-0001", "pw").connect(timeout=5)
    finally:
        running.stop()
