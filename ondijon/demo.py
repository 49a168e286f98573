"""``ondijon demo``: a small city on this machine, every part real.

It creates a CA, starts an orchestrator (SQLite) and three cabinet agents as separate
processes, each enrolled with its own one-time token and talking mutual TLS on loopback;
equipment runs on gpiozero's mock pins and the simulated backends, under a simulated clock
that runs a night in minutes. It pushes a lighting program through the admin API and
prints the fleet converging until Ctrl-C, which stops every process cleanly.

The demo's directory is its own: it is created with a marker file (:data:`MARKER`) and a
rerun wipes it only when the marker is there; a directory holding anything else is
refused. The agents share one simulated clock (same start, speed and real origin), and the
demo's operator profile names it, so a command typed against the demo
(``ondijon command override``) is timed on the street's clock, not the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from edge.config import AgentConfig
from edge.identity import enroll
from foundation.errors import FieldError
from ondijon.client import AdminClient
from orchestrator.config import OrchestratorConfig
from orchestrator.identity.operators import add_operator, set_console_password
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2, signal_pb2, state_pb2
from provisioning.ca import CertificateAuthority
from provisioning.profile import Profile, ProfileClock
from provisioning.totp import code_at

MARKER = ".ondijon-demo"

TZ = "Europe/Paris"
DEMO_PASSWORD = "demo-control-room"  # noqa: S105 (a local demo, printed on screen)

CABINETS: list[tuple[str, str, float, float, str]] = [
    # id, commune, latitude, longitude, extra equipment
    ("dijon-darcy", "Dijon", 47.3226, 5.0339, "cabinet"),
    ("chenove-centre", "Chenove", 47.2920, 5.0060, "bollard"),
    ("talant-mairie", "Talant", 47.3370, 5.0050, "signal"),
]
LAMPS_PER_CABINET = 8

BOLLARD = """
[[bollards]]
id = "rue-piétonne"
backend = "simulated"
"""

# A two-phase crossing; the simulator's own conflict monitor knows ns and ew conflict.
SIGNAL = """
[[signals]]
id = "carrefour"
backend = "simulated"
[signals.safety_card]    # from commissioning: no document may relax it
groups = ["ns", "ew"]
min_green_s = 6
min_amber_s = 3
min_all_red_s = 2
intergreens = [["ns", "ew", 5], ["ew", "ns", 5]]
[signals.simulated]
conflicts = [["ns", "ew"]]
[signals.simulated.heads.ns]
red = 2
amber = 3
green = 4
[signals.simulated.heads.ew]
red = 5
amber = 6
green = 7
"""


def signal_plans() -> signal_pb2.SignalPlans:
    """The crossing's groups, intergreens and its day plan (60 s cycle)."""
    return signal_pb2.SignalPlans(
        intersection=signal_pb2.Intersection(
            groups=[
                signal_pb2.SignalGroup(
                    id=g,
                    kind=signal_pb2.SIGNAL_GROUP_KIND_VEHICLE,
                    min_green_s=6,
                    amber_s=3,
                    all_red_s=2,
                )
                for g in ("ns", "ew")
            ],
            intergreens=[
                signal_pb2.Intergreen(from_group="ns", to_group="ew", seconds=5),
                signal_pb2.Intergreen(from_group="ew", to_group="ns", seconds=5),
            ],
        ),
        plans=[
            signal_pb2.SignalPlan(
                id="day",
                cycle_s=60,
                greens=[
                    signal_pb2.GreenInterval(group="ns", start_s=0, end_s=29),
                    signal_pb2.GreenInterval(group="ew", start_s=34, end_s=55),
                ],
            )
        ],
    )


class DemoError(FieldError):
    """The demo cannot run as asked; nothing was changed."""


def prepare_directory(root: Path) -> None:
    """Make ``root`` the demo's own, empty directory: wiped when an earlier demo made it
    (it holds :data:`MARKER`), created when missing; refused when it holds anything else."""
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise DemoError("--dir", f"{root} exists and is not a directory the demo made")
    if root.exists():
        if (root / MARKER).is_file():
            shutil.rmtree(root)
        elif any(root.iterdir()):
            raise DemoError(
                "--dir",
                f"{root} is not empty and was not made by the demo (no {MARKER} in it); "
                "the demo wipes its directory on every run: choose another --dir",
            )
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(
        "Made by `ondijon demo`: the next run of the demo wipes this directory.\n"
    )


def demo_clock(now: datetime, speed: float) -> ProfileClock:
    """The demo's street clock: today 16:50 at the sites, read at ``now`` (real time)."""
    start = now.astimezone(ZoneInfo(TZ)).replace(hour=16, minute=50, second=0, microsecond=0)
    return ProfileClock(start=start, speed=speed, origin=now)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lighting_program() -> schedule_pb2.Schedule:
    """Lamps on at civil dusk, 50 % from 23:00, full at 05:30, off at sunrise; the crossing
    flashes amber from 23:00 to 05:30; the bollard is down for deliveries 05:30-11:00."""
    sun = schedule_pb2
    up_list = sun.BollardSetting(position=sun.BOLLARD_POSITION_UP, access=sun.ACCESS_POLICY_LIST)
    down_open = sun.BollardSetting(
        position=sun.BOLLARD_POSITION_DOWN, access=sun.ACCESS_POLICY_OPEN
    )
    return sun.Schedule(
        programs=[
            sun.Program(
                id="night",
                points=[
                    sun.SwitchPoint(sun_event=sun.SUN_EVENT_CIVIL_DUSK, lamp_level=100),
                    sun.SwitchPoint(
                        local_time="23:00",
                        lamp_level=50,
                        signal_mode=sun.SIGNAL_MODE_FLASHING_AMBER,
                    ),
                    sun.SwitchPoint(
                        local_time="05:30",
                        lamp_level=100,
                        signal_plan="day",
                        signal_mode=sun.SIGNAL_MODE_NORMAL,
                        bollard=down_open,
                    ),
                    sun.SwitchPoint(local_time="11:00", bollard=up_list),
                    sun.SwitchPoint(sun_event=sun.SUN_EVENT_SUNRISE, lamp_level=0),
                ],
            )
        ],
        rules=[sun.CalendarRule(program_id="night", priority=1)],
        holiday_region="FR",
    )


def _agent_toml(
    root: Path,
    gateway_id: str,
    lat: float,
    lon: float,
    extra: str,
    address: str,
    enroll_address: str,
    clock: ProfileClock,
) -> str:
    lamps = "\n".join(
        f'[[lamps]]\nid = "{gateway_id}-lamp-{i:02d}"\nbackend = "simulated"\nnominal_power_w = 60'
        for i in range(1, LAMPS_PER_CABINET + 1)
    )
    equipment = (
        '[cabinet]\nid = "cabinet"\nbackend = "simulated"\n'
        + {
            "cabinet": "",
            "bollard": BOLLARD,
            "signal": SIGNAL,
        }[extra]
    )
    return f"""[gateway]
id = "{gateway_id}"
serial = "SN-{gateway_id}"
state_dir = "{root / gateway_id}"

[orchestrator]
address = "{address}"
enroll_address = "{enroll_address}"
ca_file = "{root / "ca" / "root.pem"}"

[site]
latitude = {lat}
longitude = {lon}
time_zone = "{TZ}"

[clock]
mode = "simulated"
start = "{clock.start.isoformat()}"
speed = {clock.speed}
origin = "{clock.origin.isoformat()}"

{lamps}

{equipment}
"""


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONUNBUFFERED="1")
    handle = open(log, "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [sys.executable, "-m", "ondijon.cli", *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


async def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"nothing listens on port {port}")
        await asyncio.sleep(0.1)


async def _status(profile: Profile, desired_version: int) -> str:
    listing = await AdminClient(profile).list_gateways(control_pb2.ListGatewaysRequest())
    lines = []
    live = {c[0] for c in CABINETS}
    for g in listing.gateways:
        if g.gateway_id not in live:
            continue  # the generated city's cabinets (--city) have no agent running
        devices = await AdminClient(profile).list_devices(
            control_pb2.ListDevicesRequest(gateway_id=g.gateway_id)
        )
        lamps = [d.lamp for d in devices.devices if d.HasField("lamp")]
        lit = sum(1 for lamp in lamps if lamp.level > 0)
        level = max((lamp.level for lamp in lamps), default=0)
        held = {h.kind: h.version for h in g.held}
        version = held.get(link_pb2.DOCUMENT_KIND_SCHEDULE, 0)
        sync = "in sync" if version == desired_version else f"holds v{version}"
        cabinet = [d for d in devices.devices if d.HasField("cabinet")]
        last = cabinet[0].observed_at.ToDatetime(tzinfo=UTC) if cabinet else None
        when = last.astimezone(ZoneInfo(TZ)).strftime("%H:%M") if last else "--:--"
        extra = ""
        for d in devices.devices:
            if d.HasField("bollard"):
                motion = state_pb2.BollardMotion.Name(d.bollard.motion).removeprefix(
                    "BOLLARD_MOTION_"
                )
                extra += f"  bollard {motion.lower()}"
            if d.HasField("signal"):
                mode = schedule_pb2.SignalMode.Name(d.signal.mode).removeprefix("SIGNAL_MODE_")
                extra += f"  crossing {mode.lower().replace('_', ' ')} {d.signal.plan}"
        lines.append(
            f"  {g.gateway_id:16} {'online ' if g.connected else 'offline'} "
            f"schedule v{desired_version} {sync:10} lamps lit {lit}/{len(lamps)} at {level:3d}%"
            f"  site time {when}{extra}"
        )
    return "\n".join(lines)


async def _demo(root: Path, speed: float, seconds: float, with_city: bool = False) -> None:
    prepare_directory(root)
    now = datetime.now(UTC)
    print(f"creating a certificate authority in {root}/ca ...", flush=True)
    CertificateAuthority.init(root / "ca", now=now)
    port, enroll_port, console_port = _free_port(), _free_port(), _free_port()
    (root / "orchestrator.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nenroll_listen = "127.0.0.1:{enroll_port}"\n'
        f'[console]\nlisten = "127.0.0.1:{console_port}"\n'
        f'[store]\nurl = "sqlite:///{root / "orchestrator.db"}"\n'
        f'[identity]\nca_dir = "{root / "ca"}"\nstate_dir = "{root / "orchestrator"}"\n'
    )
    config = OrchestratorConfig.load(root / "orchestrator.toml")
    address = f"localhost:{port}"
    profile = add_operator(
        config,
        name="control-room",
        role="admin",
        communes=["*"],
        profile_dir=root / "profile",
        address=address,
        now=now,
    )
    # The web console's demo login: a password and a TOTP secret for any authenticator app
    # (or `python -m provisioning.totp SECRET` for the current code).
    secret = set_console_password(config, name="control-room", password=DEMO_PASSWORD, now=now)
    clock = demo_clock(now, speed)
    Profile.set_clock(root / "profile", clock)
    print(f"CA, orchestrator config and an admin profile in {root}/", flush=True)
    print("starting the orchestrator (SQLite store, mutual TLS) ...", flush=True)
    processes = [
        _spawn(
            ["orchestrator", "serve", "--config", str(root / "orchestrator.toml")],
            root / "orchestrator.log",
        )
    ]
    try:
        await _wait_port(port)
        await _wait_port(enroll_port)
        print(f"orchestrator up: mutual TLS on :{port}, enrollment on :{enroll_port}", flush=True)
        await _wait_port(console_port)
        print(
            f"console: https://localhost:{console_port}/ (certificate from {root}/ca/root.pem)\n"
            f"  sign in as control-room, password {DEMO_PASSWORD!r}, TOTP secret {secret}\n"
            f"  code now {code_at(secret, time.time())}; the next ones: "
            f".venv/bin/python -m provisioning.totp {secret}",
            flush=True,
        )
        for gateway_id, commune, lat, lon, extra in CABINETS:
            added = await AdminClient(profile).add_gateway(
                control_pb2.AddGatewayRequest(
                    gateway_id=gateway_id,
                    serial=f"SN-{gateway_id}",
                    commune=commune,
                    latitude=lat,
                    longitude=lon,
                    time_zone=TZ,
                ),
            )
            path = root / f"{gateway_id}.toml"
            path.write_text(
                _agent_toml(
                    root,
                    gateway_id,
                    lat,
                    lon,
                    extra,
                    address,
                    f"localhost:{enroll_port}",
                    clock,
                )
            )
            await enroll(AgentConfig.load(path), added.enrollment_token)
            processes.append(
                _spawn(["edge", "run", "--config", str(path)], root / f"{gateway_id}.log")
            )
            print(
                f"cabinet {gateway_id} ({commune}) enrolled with its one-time token, agent started",
                flush=True,
            )
        if with_city:
            await _add_generated_city(profile)
        version = 0
        for gateway_id, _, _, _, extra in CABINETS:
            if extra == "signal":
                await AdminClient(profile).put_desired_state(
                    control_pb2.PutDesiredStateRequest(
                        gateway_id=gateway_id,
                        kind=link_pb2.DOCUMENT_KIND_SIGNAL_PLANS,
                        payload=signal_plans().SerializeToString(),
                    ),
                )
            put = await AdminClient(profile).put_desired_state(
                control_pb2.PutDesiredStateRequest(
                    gateway_id=gateway_id,
                    kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
                    payload=lighting_program().SerializeToString(),
                ),
            )
            version = put.document.version
        print(
            f"program v{version} pushed through the admin API: lamps on at civil dusk, 50 % from "
            "23:00, off at sunrise; the crossing flashes amber 23:00-05:30; the bollard is down "
            f"for deliveries 05:30-11:00.\nSimulated clocks start at "
            f"{clock.start.astimezone(ZoneInfo(TZ)):%H:%M} and run x{speed:g}. In another shell: "
            f"export ONDIJON_PROFILE={root / 'profile'} and try `ondijon gateway list`.\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        deadline = asyncio.get_running_loop().time() + seconds if seconds else None
        while deadline is None or asyncio.get_running_loop().time() < deadline:
            print(await _status(profile, version), flush=True)
            print(flush=True)
            await asyncio.sleep(2)
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        print("stopped: orchestrator and agents exited; logs in", root)


async def _add_generated_city(profile: Profile) -> None:
    """Put the generated Dijon-sized city (domain.city.generator) in the asset register,
    beside the three live cabinets: its 1,500 cabinets are registered gateways with no
    agent running (offline in the fleet and convergence views)."""
    from domain.city.generator import generate
    from ondijon.city_cli import import_requests
    from orchestrator.assets.wire import asset_to_proto

    city = generate()
    messages = [asset_to_proto(a) for a in city.assets]
    done = await AdminClient(profile).import_assets(
        import_requests(messages, dry_run=False, digest="")
    )
    print(
        f"generated city added to the register: {done.added} assets "
        f"({len(city.cabinets)} cabinets of {len(city.communes)} communes); try "
        "`ondijon fleet`, `ondijon group convergence schedule` with --profile"
    )


def run_demo(root: Path, *, speed: float, seconds: float, with_city: bool = False) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(root.resolve(), speed, seconds, with_city))
    return 0
