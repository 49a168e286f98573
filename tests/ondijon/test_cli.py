"""The ``ondijon`` command on bad input: one line naming what is wrong, a non-zero exit,
and nothing half-written.

Configuration and CA mistakes run ``ondijon.cli.main`` in-process; enrollment mistakes run
``python -m ondijon.cli edge enroll`` as the installer would, against a real orchestrator.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.config import AgentConfig
from edge.identity import EnrollmentError
from edge.identity import enroll as identity_enroll
from foundation.files import write_atomic
from ondijon.cli import main
from provisioning.ca import CertificateAuthority
from tests.conftest import City

AGENT = """\
[gateway]
id = "dj-001"
serial = "SN-1"
state_dir = "state"
[orchestrator]
address = "localhost:7443"
ca_file = "ca.pem"
[site]
latitude = 47.322
longitude = 5.0415
time_zone = "Europe/Paris"
"""

ORCHESTRATOR = """\
[server]
listen = "127.0.0.1:7443"
[store]
url = "sqlite:///orchestrator.db"
[identity]
ca_dir = "ca"
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('time_zone = "Europe/Paris"', "time_zone = Europe"), "not valid TOML"),
        (lambda t: t + "[link]\nreport_every = 1\n", "link.report_every: unknown setting"),
        (lambda t: t + "[lamp]\nid = 'x'\n", "lamp: unknown setting"),
        (
            lambda t: t.replace('"localhost:7443"', '"localhost"'),
            "orchestrator.address: 'localhost' is not host:port",
        ),
        (
            lambda t: t.replace('"localhost:7443"', '"localhost:99999"'),
            "orchestrator.address: 'localhost:99999' is not host:port",
        ),
        (
            lambda t: t.replace("Europe/Paris", "Europe/Dijon"),
            "site.time_zone: 'Europe/Dijon' is not an IANA time zone",
        ),
        (lambda t: t.split("[site]")[0], "site: is required"),
        (lambda t: t.replace('id = "dj-001"', 'id = "dj 001"'), "gateway.id: 'dj 001' is not"),
        (lambda t: t.replace("latitude = 47.322", "latitude = 147.3"), "site.latitude: must be"),
        (lambda t: t.replace('serial = "SN-1"', "serial = 1"), "gateway.serial: must be a string"),
    ],
    ids=[
        "bad-toml",
        "unknown-key",
        "unknown-section",
        "no-port",
        "bad-port",
        "time-zone",
        "missing-section",
        "gateway-id",
        "latitude",
        "type",
    ],
)
def test_a_bad_agent_config_names_the_field_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: object,
    message: str,
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(edit(AGENT))  # type: ignore[operator]
    for command in (["edge", "enroll", "--token", "t"], ["edge", "run"]):
        code, err = run([*command, "--config", str(config)], capsys)
        assert code != 0
        assert err.startswith("ondijon: error: ") and message in err
        assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.toml"]


def ondijon(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed command as a user types it: ``python -m ondijon.cli ...``."""
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    return subprocess.run(
        [sys.executable, "-m", "ondijon.cli", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            '[[lamps]]\nid = "lamp-1"\nbackend = "gpio"\nrelay_pin = 17\npwm_pn = 5\n',
            "lamps[0].pwm_pn: unknown ",
        ),
        (
            '[[bollards]]\nid = "b-1"\nbackend = "simulated"\nspeed = 3\n',
            "bollards[0].speed: unknown",
        ),
        (
            '[[signals]]\nid = "s-1"\nbackend = "simulated"\npoll_intervall_s = 2\n',
            "signals[0].poll_intervall_s: unknown setting",
        ),
    ],
    ids=["lamp", "bollard", "signal"],
)
def test_a_typo_in_an_equipment_table_is_one_line_and_exit_2(
    tmp_path: Path, table: str, message: str
) -> None:
    # Equipment errors were missing from the CLI's hand-kept list: a traceback, exit 1.
    (tmp_path / "agent.toml").write_text(AGENT + table)
    done = ondijon("edge", "run", "--config", "agent.toml", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"ondijon: error: {message}"), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.toml"]  # nothing written


def test_a_missing_config_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["edge", "run", "--config", str(tmp_path / "nope.toml")], capsys)
    assert code != 0 and f"{tmp_path / 'nope.toml'}: no such configuration file" in err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t + "[limits]\nmax_streams = 5\n", "limits.max_streams: unknown setting"),
        (
            lambda t: t + "[limits]\nevent_window = true\n",
            "limits.event_window: must be an integer",
        ),
        (lambda t: t + "[limits]\nhello_timeout_s = -1\n", "limits.hello_timeout_s: must be at"),
        (
            lambda t: t.replace("sqlite:///orchestrator.db", "mysql://db/ondijon"),
            "store.url: must be a sqlite:/// or postgresql+psycopg:// URL",
        ),
        (
            lambda t: t.replace('"127.0.0.1:7443"', '":7443"'),
            "server.listen: ':7443' is not host:port",
        ),
        (lambda t: t.replace("[identity]", "[identity]\ntoken_ttl_hours = 0"), "token_ttl_hours"),
        (lambda t: "[server\n" + t, "not valid TOML"),
    ],
    ids=["unknown-limit", "bool-limit", "negative", "store-url", "listen", "ttl", "bad-toml"],
)
def test_a_bad_orchestrator_config_names_the_field_and_creates_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: object, message: str
) -> None:
    config = tmp_path / "orchestrator.toml"
    config.write_text(edit(ORCHESTRATOR))  # type: ignore[operator]
    for command in ("migrate", "serve"):
        code, err = run(["orchestrator", command, "--config", str(config)], capsys)
        assert code != 0
        assert err.startswith("ondijon: error: ") and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orchestrator.toml"]


def test_ca_init_refuses_to_overwrite_a_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "ca"
    assert run(["ca", "init", "--dir", str(directory)], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    assert {"root.key", "issuing.key", "root.pem", "issuing.pem"} <= set(before)
    assert all((directory / k).stat().st_mode & 0o777 == 0o600 for k in ("root.key", "issuing.key"))

    code, err = run(["ca", "init", "--dir", str(directory), "--name", "Other"], capsys)
    assert code != 0 and f"{directory} already holds a CA" in err
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


def test_ca_init_over_a_file_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").write_text("not a directory")
    code, err = run(["ca", "init", "--dir", str(tmp_path / "taken" / "ca")], capsys)
    assert code != 0 and err.startswith("ondijon: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_ca_init_that_fails_half_way_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def disk_full_at_third_file(path: Path, data: bytes, **kwargs: Any) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        write_atomic(path, data, **kwargs)

    monkeypatch.setattr("provisioning.ca.write_atomic", disk_full_at_third_file)
    code, err = run(["ca", "init", "--dir", str(tmp_path / "ca")], capsys)
    assert code != 0 and "No space left on device" in err
    assert list(tmp_path.iterdir()) == []


# -- enrollment ------------------------------------------------------------------------------


async def enroll(config: AgentConfig, token: str) -> tuple[int, str]:
    """``ondijon edge enroll`` in a process of its own; returns (exit code, stderr)."""
    assert config.source is not None
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ondijon.cli",
        "edge",
        "enroll",
        "--config",
        str(config.source),
        "--token",
        token,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, err.decode()


def installed(config: AgentConfig) -> bytes | None:
    """The certificate the agent would present, if any."""
    identity = config.state_dir / "identity"
    certificates = sorted(identity.glob("cert-*/*")) if identity.exists() else []
    if not config.cert_file.exists():
        assert certificates == [], "a certificate was left outside identity/current"
        return None
    return config.cert_file.read_bytes()


def variant(config: AgentConfig, name: str, old: str, new: str) -> AgentConfig:
    """A copy of ``config`` with its own state directory and ``old`` replaced by ``new``."""
    assert config.source is not None
    directory = config.state_dir.parent / name
    directory.mkdir()
    text = config.source.read_text()
    assert old in text
    path = directory / "agent.toml"
    path.write_text(text.replace(str(config.state_dir), str(directory)).replace(old, new))
    return AgentConfig.load(path)


@pytest.mark.integration
async def test_refused_enrollments_say_why_and_install_nothing(city: City) -> None:
    token = await city.register("dj-001")
    good = city.agent_config("dj-001")
    spent = await city.register("dj-002")
    enrolled = city.agent_config("dj-002")
    await identity_enroll(enrolled, spent)
    certificate = installed(enrolled)
    assert certificate is not None
    foreign_root = city.tmp_path / "foreign-root.pem"
    foreign_root.write_bytes(
        CertificateAuthority.init(city.tmp_path / "foreign", now=datetime.now(UTC)).root_pem
    )
    # Two refusals through the command itself, one from the orchestrator and one from
    # TLS; the others through the same function it calls (a process costs a second).
    by_command = {
        # An unregistered gateway is answered like a wrong token (ids are not enumerable).
        "token: unknown enrollment token": (city.agent_config("dj-404"), "some-token"),
        "CERTIFICATE_VERIFY_FAILED": (
            variant(good, "foreign", str(good.ca_file), str(foreign_root)),
            token,
        ),
    }
    in_process = {
        "token: unknown enrollment token": (good, "not-the-token"),
        "serial: the token is bound to another device serial": (
            variant(good, "stolen", '"SN-dj-001"', '"SN-stolen"'),
            token,
        ),
        "token: already used": (enrolled, spent),
    }

    async def refused(config: AgentConfig, token: str) -> str:
        with pytest.raises(EnrollmentError) as caught:
            await identity_enroll(config, token)
        return str(caught.value)

    from_command, from_function = await asyncio.gather(
        asyncio.gather(*(enroll(c, t) for c, t in by_command.values())),
        asyncio.gather(*(refused(c, t) for c, t in in_process.values())),
    )
    for (code, err), (message, (config, _)) in zip(from_command, by_command.items(), strict=True):
        assert code != 0, err
        # gRPC's own C core may log the TLS failure above; ours is one line, the last.
        last = err.strip().splitlines()[-1]
        assert last.startswith("ondijon: error: ") and message in last, err
        assert installed(config) is None
    for error, (message, (config, _)) in zip(from_function, in_process.items(), strict=True):
        assert message in error
        assert installed(config) is None or config is enrolled
    assert installed(enrolled) == certificate  # a working identity is never touched

    # The refusals did not spend the token: the rightful gateway enrolls with it.
    await identity_enroll(good, token)
    assert installed(good) is not None


# -- desired state ---------------------------------------------------------------------------


async def ondijon_async(*argv: str, cwd: Path) -> tuple[int, str, str]:
    """The installed command in a process of its own, while the city's loop runs."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ondijon.cli",
        *argv,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_desired_put_sends_the_file_and_the_orchestrator_refuses_a_bad_one(
    city: City,
) -> None:
    from domain import documents
    from ondijon.client import AdminClient
    from protos.ondijon.v1 import control_pb2, link_pb2

    await city.register("dj-001")
    example = Path(__file__).resolve().parents[2] / "examples" / "schedule.json"
    put = ("desired", "put", "--profile", str(city.admin.directory), "dj-001")
    code, out, err = await ondijon_async(*put, "schedule", str(example), cwd=city.tmp_path)
    assert (code, out.strip(), err) == (0, "schedule for dj-001 is now version 1", "")
    held = await AdminClient(city.admin).get_desired_state(
        control_pb2.GetDesiredStateRequest(
            gateway_id="dj-001", kind=link_pb2.DOCUMENT_KIND_SCHEDULE
        ),
    )
    kind = documents.kind_named("schedule")
    assert held.document.payload == documents.payload_from_json(
        kind, example.read_text(), source=""
    )

    # The orchestrator parses and refuses a bad document, naming the field (and audits it).
    bad = city.tmp_path / "bad.json"
    bad.write_text(example.read_text().replace('"23:00"', '"25:00"'))
    code, _, err = await ondijon_async(*put, "schedule", str(bad), cwd=city.tmp_path)
    assert code == 2
    assert err.splitlines() == [
        "ondijon: error: INVALID_ARGUMENT: programs[0].points[1].local_time: "
        "expected HH:MM or HH:MM:SS, got '25:00'"
    ]
    # A file that is not a document of its kind is named, and nothing is sent.
    code, _, err = await ondijon_async(*put, "signal-plans", str(example), cwd=city.tmp_path)
    assert code == 2 and err.startswith(f"ondijon: error: {example}: ")
    assert len(err.splitlines()) == 1
