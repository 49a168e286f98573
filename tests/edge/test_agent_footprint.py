"""What ``ondijon edge run`` loads: only what its cabinet uses (issue 18, a Pi-class board).

The real command runs in a child interpreter on a cabinet without field bus nor monitoring
port (simulated lamps, a bollard and a crossing), enrolled (a key and a certificate), with
pinned release keys, holding a schedule whose holiday program runs on French public
holidays, on a simulated clock set on 14 July. Once the schedule has asked for the year's
holidays and the link has read the certificate and tried the orchestrator (nobody listens),
the child lists its modules and stops itself (SIGTERM, as systemd would); none of those
below may be among them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.config import AgentConfig
from edge.identity import install_identity
from edge.storage.state import AgentState
from ondijon.demo import BOLLARD, SIGNAL, signal_plans
from protos.ondijon.v1 import link_pb2, schedule_pb2
from provisioning.ca import CertificateAuthority, make_csr, new_private_key
from provisioning.identity import Identity, Role

# Module (or package) -> why a cabinet like this one must not carry it.
NOT_LOADED = {
    "cryptography": "~9 MiB: certificate dates are read from the DER, a renewal's key is made "
    "by a child (edge.keys), a signature checked only when a release is offered",
    "holidays": "every country's holidays, ~15 MiB: the agent asks a child (edge.public_holidays)",
    "dateutil": "the holidays package's",
    "aiomqtt": "the field bus, absent here",
    "paho": "the field bus, absent here",
    "prometheus_client": "the [observe] port, absent here",
    "edge.observe": "the [observe] port, absent here",
    "orchestrator": "the central service",
    "sqlalchemy": "the orchestrator's store",
    "aiohttp": "the orchestrator's console",
    "jsonschema": "not the agent's",
    "ondijon.admin": "the control room's commands",
    "ondijon.client": "the control room's admin client",
    "ondijon.city_cli": "the control room's commands",
    "ondijon.alarms_cli": "the control room's commands",
    "ondijon.firmware_cli": "the control room's commands",
    "ondijon.opendata_cli": "the control room's commands",
    "domain.city": "the city's register and generator",
    "protos.ondijon.v1.control_pb2": "the admin API",
    "google.protobuf.json_format": "documents written as JSON, the command line's",
}

# Run in the child: the real command line, a watcher thread that waits for the schedule's
# first question about holidays and the link's first failed attempt, then lists the modules
# and stops the agent.
CHILD = """
import gc, json, os, signal, sys, threading, time

def link_error():
    links = [o for o in gc.get_objects() if type(o).__name__ == "GatewayLinkClient"]
    return links[0].status.last_error if links else ""

def watch():
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        calendar = sys.modules.get("domain.schedule.calendar")
        if calendar is not None and calendar.region_holidays.cache_info().currsize:
            if link_error():
                break
        time.sleep(0.05)
    with open(sys.argv[1], "w") as out:
        json.dump({"modules": sorted(sys.modules), "source": type(calendar._source).__name__,
                   "asked": calendar.region_holidays.cache_info().currsize,
                   "link": link_error()}, out)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=watch, daemon=True).start()
from ondijon.cli import main
sys.exit(main(["edge", "run", "--config", sys.argv[2]]))
"""


def _schedule() -> schedule_pb2.Schedule:
    s = schedule_pb2
    return s.Schedule(
        programs=[
            s.Program(id="night", points=[s.SwitchPoint(local_time="20:00", lamp_level=100)]),
            s.Program(id="holiday", points=[s.SwitchPoint(local_time="20:00", lamp_level=50)]),
        ],
        rules=[
            s.CalendarRule(program_id="night", priority=1),
            s.CalendarRule(program_id="holiday", priority=10, day_kind=s.DAY_KIND_PUBLIC_HOLIDAY),
        ],
        holiday_region="FR",
    )


def _hold(state_dir: Path, kind: int, payload: bytes, version: int) -> None:
    with AgentState(state_dir / "state.json") as state:
        state.accept_document(
            link_pb2.DesiredDocument(
                kind=kind,  # type: ignore[arg-type]
                version=version,
                digest=hashlib.sha256(payload).digest(),
                payload=payload,
            )
        )


def _enrolled(tmp_path: Path, config: AgentConfig) -> None:
    """A key and a certificate installed as ``ondijon edge enroll`` does."""
    now = datetime.now(UTC)
    ca = CertificateAuthority.init(tmp_path / "ca", now=now)
    key = new_private_key()
    issued = ca.issue_for_csr(
        make_csr(key, config.gateway_id),
        Identity(Role.GATEWAY, config.gateway_id),
        now=now,
        lifetime=timedelta(days=7),
    )
    install_identity(config, key, issued.chain_pem)


SIMULATED = (
    "\n".join(
        f'[[lamps]]\nid = "lamp-{i}"\nbackend = "simulated"\nnominal_power_w = 60' for i in range(3)
    )
    + f"\n\n{BOLLARD}\n{SIGNAL}"
)
# Lamps on the pin factory's pins (gpiozero's mock pins here, a Pi's in the street).
WIRED = "\n".join(
    f'[[lamps]]\nid = "lamp-{i}"\nbackend = "gpio"\nrelay_pin = {5 + 3 * i}\n'
    f"pwm_pin = {6 + 3 * i}\nsense_pin = {7 + 3 * i}\nnominal_power_w = 60"
    for i in range(3)
)


@pytest.mark.parametrize(
    ("equipment", "also_not_loaded"),
    [
        (SIMULATED, {}),
        (WIRED, {"edge.equipment.sim": "the simulators, for a cabinet on real pins"}),
    ],
    ids=["simulated lamps, bollard and crossing", "wired lamps"],
)
def test_edge_run_loads_only_what_the_cabinet_uses(
    tmp_path: Path, equipment: str, also_not_loaded: dict[str, str]
) -> None:
    state_dir = tmp_path / "agent"
    release_key = tmp_path / "release.pub"
    release_key.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[gateway]\nid = "footprint"\nserial = "SN-footprint"\nstate_dir = "{state_dir}"\n'
        # Nobody listens there: the agent runs its street alone, retrying its link.
        '[orchestrator]\naddress = "127.0.0.1:9"\nenroll_address = "127.0.0.1:9"\n'
        f'ca_file = "{tmp_path / "ca" / "root.pem"}"\n'
        '[site]\nlatitude = 47.322\nlongitude = 5.0415\ntime_zone = "Europe/Paris"\n'
        '[clock]\nmode = "simulated"\nstart = "2026-07-14T21:00:00+02:00"\n'
        f'[firmware]\nrelease_keys = ["{release_key}"]\nstate_dir = "{tmp_path / "firmware"}"\n'
        f"\n{equipment}\n"
    )
    _enrolled(tmp_path, AgentConfig.load(config))
    _hold(state_dir, link_pb2.DOCUMENT_KIND_SCHEDULE, _schedule().SerializeToString(), 1)
    if "[[signals]]" in equipment:
        plans = signal_plans().SerializeToString()
        _hold(state_dir, link_pb2.DOCUMENT_KIND_SIGNAL_PLANS, plans, 1)
    listing = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(listing), str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, GPIOZERO_PIN_FACTORY="mock", GPIOZERO_MOCK_PIN_CLASS="mockpwmpin"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(listing.read_text())
    # The schedule did ask for the holidays, through the child: the check below means it.
    assert seen["asked"] > 0 and seen["source"] == "HolidayWindow", seen
    # The link read the key and certificate, then found nobody listening.
    assert seen["link"].startswith("UNAVAILABLE: failed to connect"), seen["link"]
    loaded = {
        heavy: why
        for heavy, why in {**NOT_LOADED, **also_not_loaded}.items()
        if any(m == heavy or m.startswith(heavy + ".") for m in seen["modules"])
    }
    assert loaded == {}
