"""The console in a real browser (Debian's Chromium through Playwright), against a real
orchestrator over mutual TLS and a real agent: what a person at the control room sees."""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.async_api import expect

from domain.city.generator import COMMUNES
from domain.city.inventory import Asset, AssetKind, diff
from edge.agent import Agent
from edge.config import AgentConfig
from foundation.clock import SimulatedClock
from ondijon.admin import lamp_override
from ondijon.client import AdminClient
from orchestrator.console.outlines import OUTLINES
from orchestrator.store import assets as asset_sql
from orchestrator.store.database import Store
from protos.ondijon.v1 import control_pb2
from tests.console.conftest import PASSWORD, ConsoleCity, shoot
from tests.waiting import eventually

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def running(config: AgentConfig) -> AsyncIterator[Agent]:
    # Real time, as a clock the agent was handed (trusted: no NTP state to wait for).
    agent = Agent(config, SimulatedClock(start=datetime.now(UTC), speed=1.0))
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def new_page(browser: Any, console: ConsoleCity) -> tuple[Any, list[str]]:
    """A page whose CSP reports are collected (a blocked inline script would show here)."""
    context = await browser.new_context(ignore_https_errors=True, locale="fr-FR")
    page = await context.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    return page, problems


async def sign_in(page: Any, console: ConsoleCity, name: str, code: str) -> None:
    await page.goto(console.url + "/")
    await page.fill("#name", name)
    await page.fill("#password", PASSWORD)
    await page.fill("#code", code)
    await page.click("button[type=submit]")


async def test_sign_in_then_an_override_from_the_cabinet_page_reaches_the_agent_live(
    console: ConsoleCity, browser: Any, lamp_table: Callable[[int], str]
) -> None:
    config = await console.city.enrolled("dijon-darcy-01", lamps=lamp_table(3))
    console.account("alice", "operator", ["*"])
    async with running(config) as agent:
        page, problems = await new_page(browser, console)
        # A wrong code first: refused, said so, still on the sign-in page.
        right = console.code("alice")
        await sign_in(page, console, "alice", f"{(int(right) + 1) % 1_000_000:06d}")
        await page.wait_for_selector("p.error")
        assert "incorrect" in await page.inner_text("p.error")
        await sign_in(page, console, "alice", right)
        await page.wait_for_selector("#fleet")
        row = page.locator('tr[data-gateway="dijon-darcy-01"]')
        assert "En ligne" in await row.inner_text()
        await page.wait_for_selector("#map[data-ready='1']")
        await page.set_viewport_size({"width": 1280, "height": 900})

        await row.locator("a").click()
        await page.wait_for_selector("#devices")
        await eventually(lambda: len(agent.lamps) == 3)
        await page.wait_for_selector('tr[data-device="lamp-001"]')
        await page.wait_for_selector("body[data-live-open='yes']")
        await page.fill("#level", "70")
        await page.fill("#minutes", "30")
        await page.click("#override-form button[type=submit]")
        await page.wait_for_selector("#confirm")  # the confirmation step
        assert "70 %" in await page.inner_text(".summary")
        await page.click("#confirm")
        status = page.locator("#command-status")
        await status.wait_for()
        # (Playwright's wait_for_function evaluates a string: the page's CSP forbids that.)
        await expect(status).to_have_text("DONE", timeout=15_000)
        await eventually(lambda: all(lamp.controller.level == 70 for lamp in agent.lamps))

        # Live: with the cabinet page open, a change made elsewhere (the CLI) shows up
        # without a reload: the lamp's state and the agent's event.
        await page.goto(console.url + "/gateways/dijon-darcy-01")
        await page.wait_for_selector("body[data-live-open='yes']")
        await page.wait_for_selector('tr[data-device="lamp-001"]')
        await AdminClient(console.city.admin).send_command(
            control_pb2.SendCommandRequest(
                gateway_id="dijon-darcy-01", command=lamp_override(30, 20, 90, ["lamp-001"])
            ),
        )
        await eventually(lambda: agent.lamps[0].controller.level == 30)
        cell = page.locator('tr[data-device="lamp-001"] .device-state')
        await expect(cell).to_have_text(re.compile(r"^30 %"), timeout=10_000)
        await expect(page.locator("#live-events")).to_contain_text("override", timeout=10_000)
        await shoot(page, "console", readme=True)
        assert problems == []


async def test_a_viewer_sees_no_write_control_and_a_forged_post_is_refused_and_audited(
    console: ConsoleCity, browser: Any
) -> None:
    await console.city.register("dijon-darcy-01")
    console.account("vera", "viewer", ["*"])
    page, problems = await new_page(browser, console)
    await sign_in(page, console, "vera", console.code("vera"))
    await page.wait_for_selector("#fleet")
    await page.goto(console.url + "/gateways/dijon-darcy-01")
    await page.wait_for_selector(".read-only")
    main = page.locator("main")
    assert await main.locator("form").count() == 0
    assert await main.locator("button, input, select, textarea").count() == 0
    await page.goto(console.url + "/campaigns")
    assert await page.locator("main form").count() == 0
    # The viewer forges the write the page did not offer, with a valid session and token.
    csrf = await page.get_attribute('meta[name="csrf-token"]', "content")
    answer = await page.request.post(
        console.url + "/gateways/dijon-darcy-01/override",
        form={"csrf": csrf or "", "level": "0", "minutes": "60", "confirmed": "yes"},
        max_redirects=0,
    )
    assert answer.status == 403
    store = Store.open(console.city.config.store_url)
    try:
        with store.engine.connect() as conn:
            sent = [e for e in store.audit_entries(conn) if e["action"] == "command.send"]
    finally:
        store.close()
    assert [(e["actor"], e["result"]) for e in sent] == [
        ("spiffe://ondijon/operator/vera", "refused")
    ]
    assert problems == []


async def test_the_map_without_tiles_shows_the_bundled_commune_outlines(
    console: ConsoleCity, browser: Any
) -> None:
    # Cabinets at the métropole's edges: the map opens on every commune.
    for commune in COMMUNES:
        if commune.name in ("Ahuy", "Fénay", "Corcelles-les-Monts", "Bressey-sur-Tille"):
            await AdminClient(console.city.admin).add_gateway(
                control_pb2.AddGatewayRequest(
                    gateway_id=f"{commune.code}-01",
                    serial=f"SN-{commune.code}",
                    commune=commune.name,
                    latitude=commune.latitude,
                    longitude=commune.longitude,
                    time_zone="Europe/Paris",
                )
            )
    console.account("olga", "operator", ["*"])
    page, problems = await new_page(browser, console)
    loaded: list[tuple[str, int]] = []
    page.on(
        "response",
        lambda r: loaded.append((r.url, r.status)) if r.url.endswith(".geojson") else None,
    )
    await sign_in(page, console, "olga", console.code("olga"))
    await page.wait_for_selector("#fleet")
    assert await page.locator("#map").get_attribute("data-tiles") in (None, "")
    await expect(page.locator("#map")).to_have_attribute("data-communes", "23", timeout=15_000)
    outlines = page.locator("path.commune-outline")
    await expect(outlines).to_have_count(23)
    view = await page.locator("#map").bounding_box()
    assert view is not None
    shown = 0
    for n in range(23):
        box = await outlines.nth(n).bounding_box()
        assert box is not None and box["width"] > 5 and box["height"] > 5
        shown += (
            box["x"] < view["x"] + view["width"]
            and box["x"] + box["width"] > view["x"]
            and box["y"] < view["y"] + view["height"]
            and box["y"] + box["height"] > view["y"]
        )
    assert shown == 23  # every commune on screen, not only present in the page
    assert loaded == [(console.url + "/static/communes.geojson", 200)]
    served = await page.request.get(console.url + "/static/communes.geojson")
    assert await served.body() == OUTLINES.read_bytes()  # the package's file, as shipped
    await shoot(page, "console-map-outlines")
    assert problems == []


def pixel(png: bytes, x: int, y: int) -> tuple[int, int, int]:
    """The colour at ``(x, y)`` of a PNG screenshot (8-bit RGB or RGBA, as Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    at, data = 8, b""
    width = height = channels = 0
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, body = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            data += body
        at += 12 + length
    raw, stride = zlib.decompress(data), width * channels
    rows: list[bytearray] = []
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        above = rows[-1] if rows else bytearray(stride)
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = above[i], above[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                paeth = [(abs(p - v), n, v) for n, v in enumerate((left, up, corner))]
                line[i] = (line[i] + min(paeth)[2]) & 0xFF
        rows.append(line)
    r, g, b = rows[y][x * channels : x * channels + 3]
    return r, g, b


# The map's colours (console.js): lit, dimmed, off.
LIT, DIMMED, OFF = (0xBF, 0x87, 0x00), (0x0A, 0x7D, 0x74), (0x24, 0x29, 0x2F)


def nearest(colour: tuple[int, int, int]) -> str:
    named = {"lit": LIT, "dimmed": DIMMED, "off": OFF}

    def far(name: str) -> int:
        return sum((a - b) ** 2 for a, b in zip(colour, named[name], strict=True))

    return min(named, key=far)


async def test_a_lamp_changed_on_the_agent_changes_colour_on_the_open_map_without_reload(
    console: ConsoleCity, browser: Any, lamp_table: Callable[[int], str]
) -> None:
    gateway = "dijon-darcy-01"
    config = await console.city.enrolled(gateway, lamps=lamp_table(2))
    # The cabinet and its two lamps in the register, east and west of it.
    lat, lon = 47.322, 5.0415
    store = Store.open(console.city.config.store_url)
    try:
        with store.engine.begin() as conn:
            asset_sql.apply_diff(
                conn,
                diff(
                    {},
                    [
                        Asset(AssetKind.CABINET, gateway, gateway, "", "Dijon", lat, lon),
                        Asset(AssetKind.LAMP, "l1", gateway, "lamp-001", "Dijon", lat, lon + 2e-4),
                        Asset(AssetKind.LAMP, "l2", gateway, "lamp-002", "Dijon", lat, lon - 2e-4),
                    ],
                ),
                now=datetime.now(UTC),
            )
    finally:
        store.close()
    console.account("lea", "operator", ["*"])
    async with running(config) as agent:
        page, problems = await new_page(browser, console)
        await page.set_viewport_size({"width": 1280, "height": 900})
        await sign_in(page, console, "lea", console.code("lea"))
        await page.wait_for_selector("#fleet")
        await page.goto(f"{console.url}/?focus={gateway}")  # zoom 18 on the cabinet
        await page.wait_for_selector("#map[data-ready='3']")
        await page.wait_for_selector(f"#map[data-updated^='{gateway}:']")  # its first frame
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url))
        loads: list[str] = []
        page.on("load", lambda p: loads.append(p.url))
        # The lamps at zoom 18, 2e-4° of longitude from the map's centre.
        dx = round(256 * 2**18 * 2e-4 / 360)

        async def colour(offset: int) -> str:
            png = await page.locator("#map").screenshot()
            box = await page.locator("#map").bounding_box()
            assert box is not None
            return nearest(pixel(png, round(box["width"] / 2) + offset, round(box["height"] / 2)))

        admin = AdminClient(console.city.admin)
        for level, seen in ((50, "dimmed"), (100, "lit"), (0, "off")):
            await admin.send_command(
                control_pb2.SendCommandRequest(
                    gateway_id=gateway, command=lamp_override(level, 20, 90, ["lamp-001"])
                ),
            )
            await eventually(lambda level=level: agent.lamps[0].controller.level == level)
            deadline = asyncio.get_running_loop().time() + 10
            while await colour(dx) != seen:
                assert asyncio.get_running_loop().time() < deadline, f"lamp-001 never {seen}"
                await asyncio.sleep(0.1)
        # The other lamp kept its colour; nothing was reloaded, nothing polled.
        other = agent.lamps[1].controller.level
        assert await colour(-dx) == ("off" if other == 0 else "lit" if other >= 100 else "dimmed")
        assert loads == []
        assert [u for u in asked if "devices" in u] == []
        await shoot(page, "console-map-live")
        assert problems == []
