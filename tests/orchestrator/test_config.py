"""The orchestrator's TOML: defaults, paths relative to the file, limits, named errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundation.settings import ConfigError
from orchestrator.config import Limits, OrchestratorConfig


def load(tmp_path: Path, text: str) -> OrchestratorConfig:
    path = tmp_path / "conf" / "orchestrator.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return OrchestratorConfig.load(path)


def test_an_empty_file_gives_a_local_orchestrator_beside_it(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    conf = tmp_path / "conf"
    assert (config.listen, config.enroll_listen) == ("127.0.0.1:7443", "127.0.0.1:7444")
    assert config.store_url == f"sqlite:///{conf / 'orchestrator.db'}"
    assert (config.ca_dir, config.state_dir) == (conf / "ca", conf / "orchestrator")
    assert config.dns_names == ("localhost",) and config.ip_addresses == ("127.0.0.1",)
    assert (config.gateway_certificate_days, config.token_ttl_hours) == (7, 72)
    assert config.limits == Limits()


def test_default_limits_let_a_whole_city_reconnect_at_once() -> None:
    # gRPC's own default (1000 soft / 3000 hard) drops streams of a 2,000-cabinet burst.
    limits = Limits()
    assert limits.max_pending_requests >= 10_000
    assert limits.max_pending_requests_hard > limits.max_pending_requests


def test_every_setting_is_read(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
[server]
listen = "0.0.0.0:8443"
enroll_listen = "0.0.0.0:8444"
dns_names = ["orchestrator.dijon.example"]
ip_addresses = ["10.0.0.5"]
[store]
url = "postgresql+psycopg://ondijon@db/ondijon"
[identity]
ca_dir = "/var/lib/ondijon/ca"
state_dir = "state"
gateway_certificate_days = 30
token_ttl_hours = 24
[limits]
event_window = 50
hello_timeout_s = 10
max_pending_requests = 5000
""",
    )
    assert (config.listen, config.enroll_listen) == ("0.0.0.0:8443", "0.0.0.0:8444")
    assert config.dns_names == ("orchestrator.dijon.example",)
    assert config.ip_addresses == ("10.0.0.5",)
    assert config.store_url == "postgresql+psycopg://ondijon@db/ondijon"
    assert config.ca_dir == Path("/var/lib/ondijon/ca")
    assert config.state_dir == tmp_path / "conf" / "state"
    assert (config.gateway_certificate_days, config.token_ttl_hours) == (30, 24)
    assert config.limits.event_window == 50
    assert config.limits.hello_timeout_s == 10.0 and isinstance(
        config.limits.hello_timeout_s, float
    )
    assert config.limits.max_pending_requests == 5000
    assert config.limits.max_batch_events == Limits().max_batch_events


def test_an_absolute_sqlite_path_is_kept(tmp_path: Path) -> None:
    config = load(tmp_path, '[store]\nurl = "sqlite:////var/lib/ondijon/orchestrator.db"\n')
    assert config.store_url == "sqlite:////var/lib/ondijon/orchestrator.db"


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("[serveur]\n", "serveur", "unknown setting"),
        ('[server]\nport = "7443"\n', "server.port", "unknown setting"),
        ('[store]\npath = "x.db"\n', "store.path", "unknown setting"),
        ("[identity]\nca = 1\n", "identity.ca", "unknown setting"),
        ("[limits]\nmax_streams = 1\n", "limits.max_streams", "unknown setting"),
        ('[server]\nlisten = "7443"\n', "server.listen", "is not host:port"),
        ('[server]\nenroll_listen = "host:0"\n', "server.enroll_listen", "is not host:port"),
        ('[server]\ndns_names = "a.example"\n', "server.dns_names", "list of strings"),
        ('[store]\nurl = "mysql://db"\n', "store.url", "sqlite:/// or postgresql"),
        (
            "[identity]\ngateway_certificate_days = 0\n",
            "identity.gateway_certificate_days",
            "at least 1",
        ),
        (
            "[identity]\ngateway_certificate_days = 398\n",
            "identity.gateway_certificate_days",
            "at most",
        ),
        ("[identity]\ntoken_ttl_hours = 721\n", "identity.token_ttl_hours", "at most 720"),
        ("[limits]\nevent_window = 0\n", "limits.event_window", "at least 1"),
        ("[limits]\nevent_window = 1.5\n", "limits.event_window", "must be an integer"),
        ("[limits]\nmax_batch_events = true\n", "limits.max_batch_events", "must be an integer"),
        ('[limits]\nhello_timeout_s = "30"\n', "limits.hello_timeout_s", "must be a number"),
        ("[limits]\nhello_timeout_s = -1.0\n", "limits.hello_timeout_s", "at least 0"),
        ("limits = 3\n", "limits", "must be a table"),
        ('[public]\nlicence = "cc-by"\n', "public.licence", "Licence Ouverte 2.0"),
        ('[public]\nexport_at = "25:00"\n', "public.export_at", "is not HH:MM"),
        ('[public]\nlisten = "7446"\n', "public.listen", "is not host:port"),
        ('[public]\ncert_file = "a.pem"\n', "public.cert_file", "go together"),
        ("[public]\nchallenge_bits = 40\n", "public.challenge_bits", "at most 28"),
        ("[public]\nretention_days = 0\n", "public.retention_days", "at least 1"),
    ],
)
def test_every_mistake_names_its_field(tmp_path: Path, text: str, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_store_bounds_and_the_crl_point_are_read_and_checked(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[server]
crl_listen = "0.0.0.0:7480"
[store]
deadline_s = 4
connect_timeout_s = 2
statement_timeout_s = 3
idle_in_transaction_timeout_s = 6
[identity]
crl_urls = ["http://crl.example.org/ondijon.crl"]
""",
    )
    store = config.store
    assert (store.deadline_s, store.connect_timeout_s) == (4, 2)
    assert (store.statement_timeout_s, store.idle_in_transaction_timeout_s) == (3, 6)
    assert config.crl_urls == ("http://crl.example.org/ondijon.crl",)
    assert config.crl_listen == "0.0.0.0:7480"
    with pytest.raises(ConfigError, match=r"^identity\.crl_urls: .*not an absolute http://"):
        load(tmp_path, '[identity]\ncrl_urls = ["https://crl.example.org/x"]\n')
    with pytest.raises(ConfigError, match=r"^store\.deadline_s: must be at least"):
        load(tmp_path, "[store]\ndeadline_s = 0\n")
