"""Cost of one configuration schema library in the agent: msgspec vs pydantic.

Each measurement is a fresh interpreter (``python -I``), so nothing is shared between
runs. It reports, per library: the import time, VmRSS before/after the import, after
defining the agent's schema and after decoding one agent TOML (100 lamps, 4 bollards,
2 signals, a cabinet), the decode time, and the error message an unknown key gets.

    python bench/config_schema_bench.py --python /path/to/venv/bin/python [--lib msgspec]

Run it once per clean venv holding only that library (and once inside the project venv
after ``import edge.agent`` with ``--after-agent`` to get the marginal cost in the agent).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

TOML = (
    r"""
[gateway]
id = "dijon-darcy-01"
serial = "SN-4F2A-0001"
state_dir = "/var/lib/ondijon/agent"
[orchestrator]
address = "orchestrator.example.org:7443"
enroll_address = "orchestrator.example.org:7444"
ca_file = "/etc/ondijon/root.pem"
[site]
latitude = 47.3226
longitude = 5.0339
time_zone = "Europe/Paris"
[clock]
rtc = false
sync = "auto"
[outbox]
max_bytes = 67108864
[firmware]
release_keys = ["/etc/ondijon/release-2026.pub"]
state_dir = "/var/lib/ondijon/firmware"
[cabinet]
id = "cabinet"
backend = "gpio"
door_pin = 22
mains_pin = 23
"""
    + "".join(
        f"""
[[lamps]]
id = "lamp-{i:03d}"
backend = "gpio"
nominal_power_w = 60
relay_pin = {i}
pwm_pin = {i + 200}
sense_pin = {i + 400}
"""
        for i in range(100)
    )
    + "".join(
        f"""
[[bollards]]
id = "bollard-{i}"
backend = "simulated"
motor_up_pin = {10 * i + 1}
motor_down_pin = {10 * i + 2}
warning_light_pin = {10 * i + 3}
up_limit_pin = {10 * i + 4}
down_limit_pin = {10 * i + 5}
loop_pin = {10 * i + 6}
edge_pin = {10 * i + 7}
emergency_pin = {10 * i + 8}
rise_s = 4.0
lower_s = 3.0
"""
        for i in range(4)
    )
    + "".join(
        f"""
[[signals]]
id = "crossing-{i}"
backend = "simulated"
poll_interval_s = 2.0
[signals.safety_card]
groups = ["ns", "ew", "ped"]
min_green_s = 6
min_amber_s = 3
min_all_red_s = 1
intergreens = [["ns", "ew", 5], ["ew", "ns", 5], ["ew", "ped", 6], ["ped", "ew", 4]]
[signals.simulated]
watchdog_s = 10.0
[signals.simulated.heads.ns]
red = {100 + i * 10}
amber = {101 + i * 10}
green = {102 + i * 10}
[signals.simulated.heads.ew]
red = {103 + i * 10}
amber = {104 + i * 10}
green = {105 + i * 10}
"""
        for i in range(2)
    )
)

MSGSPEC_SCHEMA = r"""
from typing import Annotated, Literal
import msgspec
from msgspec import Meta, Struct, field

Pin = Annotated[int, Meta(ge=0, le=1023)] | str
Seconds = Annotated[float, Meta(gt=0)]

class C(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass

class Gateway(C, kw_only=True):
    id: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$")]
    serial: str
    state_dir: str

class Orchestrator(C, kw_only=True):
    address: str
    enroll_address: str = ""
    ca_file: str
    server_name: str = ""

class Site(C, kw_only=True):
    latitude: Annotated[float, Meta(ge=-90, le=90)]
    longitude: Annotated[float, Meta(ge=-180, le=180)]
    time_zone: str
    commune: str = ""

class Clock(C, kw_only=True):
    mode: Literal["system", "simulated"] = "system"
    start: str | None = None
    speed: Annotated[float, Meta(ge=0.001)] = 1.0
    rtc: bool = False
    sync: Literal["auto", "systemd-timesyncd", "adjtimex", "none"] = "auto"

class Link(C, kw_only=True):
    report_interval_s: Annotated[float, Meta(ge=0.05)] = 1.0

class Outbox(C, kw_only=True):
    max_bytes: Annotated[int, Meta(ge=1048576)] = 67108864

class Firmware(C, kw_only=True):
    release_keys: Annotated[list[str], Meta(min_length=1)]
    state_dir: str
    health_deadline_s: Annotated[float, Meta(ge=1)] = 300.0
    health_interval_s: Annotated[float, Meta(ge=0.01)] = 10.0
    signature_threshold: Annotated[int, Meta(ge=1)] = 1

class Lamp(C, kw_only=True):
    id: str
    backend: Literal["gpio", "simulated"]
    nominal_power_w: Annotated[float, Meta(gt=0)] = 60.0
    relay_pin: Pin | None = None
    pwm_pin: Pin | None = None
    sense_pin: Pin | None = None
    relay_active_high: bool = True
    pwm_frequency_hz: Annotated[float, Meta(gt=0)] = 1000.0

class Bollard(C, kw_only=True):
    id: str
    backend: Literal["gpio", "simulated"]
    motor_up_pin: Pin
    motor_down_pin: Pin
    warning_light_pin: Pin
    up_limit_pin: Pin
    down_limit_pin: Pin
    loop_pin: Pin
    edge_pin: Pin
    emergency_pin: Pin
    loop_fault_pin: Pin | None = None
    reset_pin: Pin | None = None
    rise_s: Seconds = 4.0
    lower_s: Seconds = 3.0

class Card(C, kw_only=True):
    groups: list[str]
    min_green_s: int | dict[str, int] = 6
    min_amber_s: int = 3
    min_all_red_s: int = 1
    intergreens: list[tuple[str, str, int]] = []

class Head(C, kw_only=True):
    red: Pin
    green: Pin
    amber: Pin | None = None

class SimulatedSignal(C, kw_only=True):
    watchdog_s: Seconds = 10.0
    conflicts: list[tuple[str, str]] | None = None
    heads: dict[str, Head] = {}

class BusPriority(C, kw_only=True):
    max_requests: int = 3
    window_s: Seconds = 120.0
    expiry_s: Seconds = 10.0

class Signal(C, kw_only=True):
    id: str
    backend: Literal["gpio", "simulated"]
    poll_interval_s: Seconds = 2.0
    safety_card: Card
    bus_priority: BusPriority = BusPriority()
    simulated: SimulatedSignal | None = None

class Cabinet(C, kw_only=True):
    id: str = "cabinet"
    backend: Literal["gpio", "simulated"]
    door_pin: Pin | None = None
    mains_pin: Pin | None = None

class Agent(C, kw_only=True):
    gateway: Gateway
    orchestrator: Orchestrator
    site: Site
    clock: Clock = Clock()
    link: Link = Link()
    outbox: Outbox = Outbox()
    firmware: Firmware | None = None
    lamps: list[Lamp] = []
    bollards: list[Bollard] = []
    signals: list[Signal] = []
    cabinet: Cabinet | None = None

def decode(text):
    return msgspec.toml.decode(text.encode(), type=Agent)
def error_type():
    return msgspec.ValidationError
"""

PYDANTIC_SCHEMA = r"""
import tomllib
from typing import Annotated, Literal
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Pin = Annotated[int, Field(ge=0, le=1023)] | str
Seconds = Annotated[float, Field(gt=0)]

class C(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

class Gateway(C):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$")]
    serial: str
    state_dir: str

class Orchestrator(C):
    address: str
    enroll_address: str = ""
    ca_file: str
    server_name: str = ""

class Site(C):
    latitude: Annotated[float, Field(ge=-90, le=90)]
    longitude: Annotated[float, Field(ge=-180, le=180)]
    time_zone: str
    commune: str = ""

class Clock(C):
    mode: Literal["system", "simulated"] = "system"
    start: str | None = None
    speed: Annotated[float, Field(ge=0.001)] = 1.0
    rtc: bool = False
    sync: Literal["auto", "systemd-timesyncd", "adjtimex", "none"] = "auto"

class Link(C):
    report_interval_s: Annotated[float, Field(ge=0.05)] = 1.0

class Outbox(C):
    max_bytes: Annotated[int, Field(ge=1048576)] = 67108864

class Firmware(C):
    release_keys: Annotated[list[str], Field(min_length=1)]
    state_dir: str
    health_deadline_s: Annotated[float, Field(ge=1)] = 300.0
    health_interval_s: Annotated[float, Field(ge=0.01)] = 10.0
    signature_threshold: Annotated[int, Field(ge=1)] = 1

class Lamp(C):
    id: str
    backend: Literal["gpio", "simulated"]
    nominal_power_w: Annotated[float, Field(gt=0)] = 60.0
    relay_pin: Pin | None = None
    pwm_pin: Pin | None = None
    sense_pin: Pin | None = None
    relay_active_high: bool = True
    pwm_frequency_hz: Annotated[float, Field(gt=0)] = 1000.0

class Bollard(C):
    id: str
    backend: Literal["gpio", "simulated"]
    motor_up_pin: Pin
    motor_down_pin: Pin
    warning_light_pin: Pin
    up_limit_pin: Pin
    down_limit_pin: Pin
    loop_pin: Pin
    edge_pin: Pin
    emergency_pin: Pin
    loop_fault_pin: Pin | None = None
    reset_pin: Pin | None = None
    rise_s: Seconds = 4.0
    lower_s: Seconds = 3.0

class Card(C):
    groups: list[str]
    min_green_s: int | dict[str, int] = 6
    min_amber_s: int = 3
    min_all_red_s: int = 1
    intergreens: list[Annotated[tuple[str, str, int], Field(strict=False)]] = []

class Head(C):
    red: Pin
    green: Pin
    amber: Pin | None = None

class SimulatedSignal(C):
    watchdog_s: Seconds = 10.0
    conflicts: list[Annotated[tuple[str, str], Field(strict=False)]] | None = None
    heads: dict[str, Head] = {}

class BusPriority(C):
    max_requests: int = 3
    window_s: Seconds = 120.0
    expiry_s: Seconds = 10.0

class Signal(C):
    id: str
    backend: Literal["gpio", "simulated"]
    poll_interval_s: Seconds = 2.0
    safety_card: Card
    bus_priority: BusPriority = BusPriority()
    simulated: SimulatedSignal | None = None

class Cabinet(C):
    id: str = "cabinet"
    backend: Literal["gpio", "simulated"]
    door_pin: Pin | None = None
    mains_pin: Pin | None = None

class Agent(C):
    gateway: Gateway
    orchestrator: Orchestrator
    site: Site
    clock: Clock = Clock()
    link: Link = Link()
    outbox: Outbox = Outbox()
    firmware: Firmware | None = None
    lamps: list[Lamp] = []
    bollards: list[Bollard] = []
    signals: list[Signal] = []
    cabinet: Cabinet | None = None

def decode(text):
    # strict models (no "5" -> 5, no true -> 1); TOML arrays become tuples where typed so
    return Agent.model_validate(tomllib.loads(text))
def error_type():
    return ValidationError
"""

CHILD = r"""
import gc, json, sys, time
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
lib, after_agent, toml_text, schema = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
if after_agent:
    import edge.agent  # noqa: F401  the agent's own imports first: the marginal cost
import tomllib
gc.collect()
r0 = rss(); t0 = time.perf_counter()
if lib == "msgspec":
    import msgspec, msgspec.toml  # noqa
elif lib == "pydantic":
    import pydantic  # noqa
t1 = time.perf_counter(); r1 = rss()
ns = {}
if lib != "none":
    exec(schema, ns)
t2 = time.perf_counter(); r2 = rss()
if lib == "none":
    tomllib.loads(toml_text); t3 = time.perf_counter(); r3 = rss(); err = ""
else:
    cfg = ns["decode"](toml_text)
    t3 = time.perf_counter(); r3 = rss()
    n = 200
    s = time.perf_counter()
    for _ in range(n):
        ns["decode"](toml_text)
    per = (time.perf_counter() - s) / n
    bad = toml_text.replace("poll_interval_s = 2.0", "poll_intervall_s = 2.0", 1)
    try:
        ns["decode"](bad); err = "ACCEPTED"
    except ns["error_type"]() as e:
        err = str(e).replace("\n", " | ")
    bad2 = toml_text.replace("relay_pin = 7\n", 'relay_pin = true\n', 1)
    try:
        ns["decode"](bad2); err2 = "ACCEPTED"
    except ns["error_type"]() as e:
        err2 = str(e).replace("\n", " | ")
    err = err + "  ||  " + err2
print(json.dumps({"rss0": r0, "import_kb": r1 - r0, "schema_kb": r2 - r1, "decode_kb": r3 - r2,
                  "total_kb": r3 - r0, "import_ms": (t1 - t0) * 1000, "schema_ms": (t2 - t1) * 1000,
                  "first_decode_ms": (t3 - t2) * 1000,
                  "decode_ms": (per * 1000) if lib != "none" else 0.0, "error": err}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--lib", choices=["msgspec", "pydantic", "none"], required=True)
    parser.add_argument("--after-agent", action="store_true")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    schema = {"msgspec": MSGSPEC_SCHEMA, "pydantic": PYDANTIC_SCHEMA, "none": ""}[args.lib]
    flags = [] if args.after_agent else ["-I"]
    runs = []
    for _ in range(args.runs):
        out = subprocess.run(
            [args.python, *flags, "-c", CHILD, args.lib, str(int(args.after_agent)), TOML, schema],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        out = out.stdout
        runs.append(json.loads(out))
    keys = [
        "rss0",
        "import_kb",
        "schema_kb",
        "decode_kb",
        "total_kb",
        "import_ms",
        "schema_ms",
        "first_decode_ms",
        "decode_ms",
    ]
    summary = {k: round(statistics.median(r[k] for r in runs), 2) for k in keys}
    summary["lib"] = args.lib
    summary["after_agent"] = args.after_agent
    summary["error"] = runs[0]["error"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
