"""The balena backend against a local fake of the balena API v7 (loopback only)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from orchestrator.firmware.balena import (
    BalenaBackend,
    BalenaError,
    BalenaSettings,
    DeviceStatus,
    judge_device,
    make_sdk,
)
from orchestrator.firmware.rollout import (
    CampaignPlan,
    GatewayReport,
    Outcome,
    TargetGateway,
    Wave,
    decide,
    start_campaign,
)

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
KEY = "test-api-key"
COMMIT = "c" * 32
UUIDS = ["1" * 32, "2" * 32, "3" * 32]


@dataclass
class FakeBalena:
    """The few API v7 resources the SDK touches to pin devices and read their status."""

    releases: dict[int, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def get(self, path: str, query: str) -> list[dict[str, Any]]:
        select = re.search(r"\$select=([^&]*)", query)
        fields = select.group(1).split(",") if select else None
        if path.startswith("/v7/release"):
            rows = list(self.releases.values())
            one = re.fullmatch(r"/v7/release\((\d+)\)", path)
            if one:
                rows = [r for r in rows if r["id"] == int(one.group(1))]
            for commit in re.findall(r"commit eq '([0-9a-f]+)'", query):
                rows = [r for r in rows if r["commit"] == commit]
            if "status eq 'success'" in query:
                rows = [r for r in rows if r["status"] == "success"]
            for app in re.findall(r"belongs_to__application eq (\d+)", query):
                rows = [r for r in rows if r["belongs_to__application"]["__id"] == int(app)]
        elif path.startswith("/v7/device"):
            one = re.fullmatch(r"/v7/device\(uuid='([0-9a-f]+)'\)", path)
            wanted = [one.group(1)] if one else re.findall(r"'([0-9a-f]{32})'", query)
            rows = [self.devices[u] for u in wanted if u in self.devices]
        else:
            raise LookupError(path)
        return [{k: v for k, v in r.items() if fields is None or k in fields} for r in rows]

    def patch(self, query: str, body: dict[str, Any]) -> None:
        ids = {int(i) for i in re.findall(r"\d+", query.split("$filter=")[1])}
        for device in self.devices.values():
            if device["id"] in ids:
                device["is_pinned_on__release"] = {"__id": body["is_pinned_on__release"]}


@pytest.fixture
def balena_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeBalena, str]]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    fake = FakeBalena()
    app = {"__id": 3}
    fake.releases = {
        11: {"id": 11, "commit": COMMIT, "status": "success", "belongs_to__application": app},
        12: {"id": 12, "commit": "d" * 32, "status": "failed", "belongs_to__application": app},
    }
    for n, uuid in enumerate(UUIDS):
        fake.devices[uuid] = {
            "id": 100 + n,
            "uuid": uuid,
            "belongs_to__application": app,
            "is_online": True,
            "overall_status": "operational",
            "is_running__release": {"__id": 10},
            "is_pinned_on__release": None,
        }

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, payload: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _handle(self) -> None:
            url = urlsplit(self.path)
            path, query = unquote(url.path), unquote(url.query)
            fake.requests.append((self.command, f"{path}?{query}"))
            if self.headers.get("Authorization") != f"Bearer {KEY}":
                self._reply(401, b"Unauthorized")
                return
            try:
                if self.command == "GET":
                    self._reply(200, json.dumps({"d": fake.get(path, query)}).encode())
                elif self.command == "PATCH" and path == "/v7/device":
                    length = int(self.headers.get("Content-Length") or 0)
                    fake.patch(query, json.loads(self.rfile.read(length)))
                    self._reply(200, b"OK")
                else:
                    self._reply(405, b"not in the fake")
            except LookupError:
                self._reply(404, b"not in the fake")

        do_GET = do_PATCH = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _backend(url: str, **changes: Any) -> BalenaBackend:
    return BalenaBackend(BalenaSettings(api_key=KEY, api_url=url, **changes))


async def test_offering_a_wave_pins_its_devices_to_the_release(
    balena_api: tuple[FakeBalena, str],
) -> None:
    fake, url = balena_api
    backend = _backend(url)
    devices = {"gw-1": UUIDS[0], "gw-2": UUIDS[1], "gw-3": UUIDS[2]}
    await backend.offer(["gw-1", "gw-2"], devices, COMMIT)
    pinned = {u: d["is_pinned_on__release"] for u, d in fake.devices.items()}
    assert pinned == {UUIDS[0]: {"__id": 11}, UUIDS[1]: {"__id": 11}, UUIDS[2]: None}
    assert ("PATCH", "/v7/device?$filter=id in (100, 101)") in fake.requests


async def test_releases_resolve_by_commit_or_id_and_must_have_succeeded(
    balena_api: tuple[FakeBalena, str],
) -> None:
    _fake, url = balena_api
    backend = _backend(url)
    assert await backend.resolve_release(COMMIT) == 11
    assert await backend.resolve_release(11) == 11
    with pytest.raises(BalenaError, match="is failed, not success") as excinfo:
        await backend.resolve_release("d" * 32)
    assert excinfo.value.field == "release"
    with pytest.raises(BalenaError, match="ReleaseNotFound"):
        await backend.resolve_release("e" * 32)


async def test_device_status_reads_what_balena_says(balena_api: tuple[FakeBalena, str]) -> None:
    fake, url = balena_api
    fake.devices[UUIDS[0]]["is_pinned_on__release"] = {"__id": 11}
    status = await _backend(url).device_status(UUIDS[0])
    assert status == DeviceStatus(UUIDS[0], True, "operational", 10, 11)
    with pytest.raises(BalenaError) as excinfo:
        await _backend(url).device_status("f" * 32)
    assert excinfo.value.field == f"devices.{'f' * 32}"


async def test_balena_outcomes_drive_the_campaign(balena_api: tuple[FakeBalena, str]) -> None:
    fake, url = balena_api
    backend = _backend(url, update_deadline=timedelta(hours=1))
    gateways = tuple(
        TargetGateway(f"gw-{n}", "Dijon", 47.32, 5.04, "Europe/Paris", False) for n in (1, 2, 3)
    )
    device_of = {g.id: UUIDS[n] for n, g in enumerate(gateways)}
    plan = CampaignPlan("camp-b", "1.5.0", gateways, waves=(Wave(33), Wave(100)))
    first = decide(start_campaign(plan, NOW), {}, NOW)
    (canary,) = first.offer_to
    release_id = await backend.resolve_release(COMMIT)
    await backend.offer(first.offer_to, device_of, COMMIT)

    uuid = device_of[canary]
    fake.devices[uuid]["overall_status"] = "updating"
    at = NOW + timedelta(minutes=5)
    reports = await backend.outcomes(device_of, release_id, first.state.offered, at)
    assert reports[canary].outcome is Outcome.DOWNLOADING
    fake.devices[uuid].update(overall_status="operational", is_running__release={"__id": 11})
    at = NOW + timedelta(minutes=10)
    reports = await backend.outcomes(device_of, release_id, first.state.offered, at)
    assert reports == {canary: GatewayReport(Outcome.COMMITTED, at, "running release 11")}
    second = decide(first.state, reports, at)
    assert len(second.offer_to) == 2

    await backend.offer(second.offer_to, device_of, COMMIT)
    late = at + timedelta(hours=2)
    fake.devices[device_of[second.offer_to[0]]]["is_online"] = False
    fake.devices[device_of[second.offer_to[1]]]["is_pinned_on__release"] = {"__id": 12}
    reports = await backend.outcomes(device_of, release_id, second.state.offered, late)
    assert reports[second.offer_to[0]].outcome is Outcome.FAILED
    assert "offline" in reports[second.offer_to[0]].detail
    assert "pinned to release 12 by someone else" in reports[second.offer_to[1]].detail


async def test_api_failures_become_balena_errors(balena_api: tuple[FakeBalena, str]) -> None:
    _fake, url = balena_api
    with pytest.raises(BalenaError, match="HTTP 401"):
        await BalenaBackend(BalenaSettings(api_key="wrong", api_url=url)).resolve_release(11)
    with pytest.raises(BalenaError, match="DeviceNotFound"):
        await _backend(url).pin(["f" * 32], COMMIT)
    with pytest.raises(BalenaError) as excinfo:
        await _backend(url).offer(["gw-9"], {}, COMMIT)
    assert excinfo.value.field == "device_of.gw-9"


async def test_an_unreachable_api_is_a_balena_error(balena_api: tuple[FakeBalena, str]) -> None:
    del balena_api  # only for NO_PROXY
    closed = "http://127.0.0.1:9"  # discard port: nothing listens on loopback
    with pytest.raises(BalenaError, match="ConnectionError"):
        await _backend(closed).resolve_release(11)


async def test_a_call_that_hangs_times_out() -> None:
    release = threading.Event()

    class Hanging:
        class models:  # mimics the SDK's attribute layout
            class release:
                @staticmethod
                def get(*_args: Any) -> dict[str, Any]:
                    release.wait(10)
                    return {"id": 1}

    backend = BalenaBackend(BalenaSettings(api_key=KEY, call_timeout=0.05), sdk=Hanging())
    try:
        with pytest.raises(BalenaError, match=r"no answer within 0\.05 s"):
            await backend.resolve_release(1)
    finally:
        release.set()


def test_balena_host_selects_cloud_or_openbalena() -> None:
    cloud = make_sdk(BalenaSettings(api_key=KEY))
    assert cloud.settings.get("api_endpoint") == "https://api.balena-cloud.com/"
    own = make_sdk(BalenaSettings(api_key=KEY, balena_host="balena.dijon-metropole.example"))
    assert own.settings.get("api_endpoint") == "https://api.balena.dijon-metropole.example/"
    assert own.settings.get("token") == KEY


def test_judge_device() -> None:
    offered = NOW
    deadline = timedelta(hours=1)
    ok = DeviceStatus("u", True, "operational", 11, 11)
    assert judge_device(ok, 11, offered, NOW, deadline) == GatewayReport(
        Outcome.COMMITTED, NOW, "running release 11"
    )
    idle_old = DeviceStatus("u", True, "idle", 11, None)
    assert judge_device(idle_old, 11, offered, NOW, deadline) is not None
    waiting = DeviceStatus("u", True, "operational", 10, 11)
    assert judge_device(waiting, 11, offered, NOW + timedelta(minutes=59), deadline) is None
    late = judge_device(waiting, 11, offered, NOW + deadline, deadline)
    assert late is not None and late.outcome is Outcome.FAILED
    offline = DeviceStatus("u", False, "disconnected", 11, 11)
    assert judge_device(offline, 11, offered, NOW, deadline) is None
