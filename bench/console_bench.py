"""Benchmark: the web console on the generated city, in headless Chromium.

    python bench/console_bench.py [--cabinets 1500] [--loads 5] [--changes 20] [--pause 1]

Starts a real orchestrator in this process (SQLite, its console on HTTPS), writes the
generated city into its register (domain.city.generator: 23 communes, 1,500 cabinets,
34,000 lamps, 113 crossings, 26 bollard sites; every cabinet registered, none connected)
and one more cabinet whose real agent (10 simulated lamps) is connected over mutual TLS.
Debian's Chromium (Playwright) signs in as an operator, then:

1. **Time to a usable map**: from asking for the fleet page to every asset of the city
   placed in the clustered map (``#map[data-ready]``), ``--loads`` times; beside it, the
   page's own HTML alone and ``/city.json`` alone (the server's part), measured in the same
   run.
2. **Live update**: with the map open on the connected cabinet (``/?focus=``), a lamp
   override is sent ``--changes`` times (100 % and 50 % in turn), ``--pause`` seconds
   after the previous change reached the map (0: at once; the console then coalesces
   changes closer than a quarter second into one frame); the time from the lamp changing
   on the agent to its colour changing on the map (the page stamps the change), p50/p99;
   peer in the same run: the time from the agent's change to the orchestrator answering
   it through the admin API (``ListDevices`` polled every 20 ms), which the console cannot
   beat.

Prints one line per figure. Needs Chromium at /usr/bin/chromium (or ``ONDIJON_CHROMIUM``).

3. ``--consoles 20 [--ingest-load 20000]``: instead of the above, the orchestrator's CPU
   with 20 consoles open while the ingest bench runs at a fixed load: runs
   ``bench/ingest_curve.py --loads 20000 --consoles 20`` (its own orchestrator process, 1,000
   gateways over mutual TLS), which measures a step with no console, then opens the
   consoles (each its own operator signed in with password and TOTP, its live feed
   ``/live`` following 20 cabinets under load, as a map zoomed on them does: their
   devices' changes and the city's events pushed; ``--console-watch 0``: the city-wide
   map, events only) and measures the same step again (:func:`_consoles`). The reported
   states never change unless ``--changing-states``: then every report flips its lamps
   between 50 and 100 %, and every followed device is in the consoles' frames.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domain.city.generator import generate
from domain.city.inventory import Asset, AssetKind, diff
from edge.agent import Agent
from foundation.clock import SimulatedClock
from ondijon.admin import lamp_override
from ondijon.client import AdminClient
from orchestrator.store import assets as asset_sql
from orchestrator.store.database import Store
from protos.ondijon.v1 import control_pb2
from provisioning.ca import CertificateAuthority
from tests.console.conftest import CHROMIUM, PASSWORD, started_console

LIVE = "dijon-live-01"
LAMPS = 10


async def _consoles(
    pipe: object, url: str, root: bytes, clients: list[tuple[tuple[str, str], list[str]]]
) -> None:
    """Consoles held open, one per ``((name, TOTP secret), cabinets followed)``: signed in,
    its ``/live`` feed read, until told to stop; sends ``opened`` once all stream, then the
    live updates received (run in a process of its own by ``ingest_curve.py --consoles``)."""
    import ssl

    import aiohttp

    from provisioning import totp
    from tests.console.conftest import sign_in_form

    context = ssl.create_default_context(cadata=root.decode())
    received = [0]
    opened = asyncio.Event()
    streaming = [0]

    async def one(name: str, secret: str, watched: list[str]) -> None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context), cookie_jar=aiohttp.CookieJar()
        )
        async with session:
            token = await sign_in_form(session, url)
            form = {"form_token": token, "name": name, "password": PASSWORD}
            form["code"] = totp.code_at(secret, time.time())
            async with session.post(f"{url}/sign-in", data=form, allow_redirects=False) as r:
                assert r.status == 303, await r.text()
            timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
            live = f"{url}/live?gateways={','.join(watched)}"
            async with session.get(live, timeout=timeout) as stream:
                streaming[0] += 1
                if streaming[0] == len(clients):
                    opened.set()
                async for line in stream.content:
                    if line.startswith(b"event:"):
                        received[0] += 1

    tasks = [asyncio.create_task(one(n, s, w)) for (n, s), w in clients]
    waiter = asyncio.create_task(opened.wait())
    done, _ = await asyncio.wait([waiter, *tasks], timeout=300, return_when="FIRST_COMPLETED")
    if waiter not in done:  # a console failed (or none opened in time): say why, stop
        failed = [t.exception() for t in done if t.exception() is not None]
        for task in [waiter, *tasks]:
            task.cancel()
        await asyncio.gather(waiter, *tasks, return_exceptions=True)
        pipe.send({"opened": streaming[0], "error": repr(failed[:1])[:300]})  # type: ignore[attr-defined]
        return
    pipe.send({"opened": streaming[0]})  # type: ignore[attr-defined]
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # type: ignore[attr-defined]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send({"events": received[0]})  # type: ignore[attr-defined]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def register_city(store_url: str, cabinets: int) -> int:
    scale = cabinets / 1500
    city = generate(
        cabinets=cabinets,
        lamps=round(34000 * scale),
        crossings=max(1, round(113 * scale)),
        bollard_sites=max(1, round(26 * scale)),
    )
    live = [
        Asset(AssetKind.CABINET, LIVE, LIVE, "", "Dijon", 47.3235, 5.0380),
        *(
            Asset(
                AssetKind.LAMP,
                f"{LIVE}-lamp-{i:03d}",
                LIVE,
                f"lamp-{i:03d}",
                "Dijon",
                47.3235 + 0.0001 * i,
                5.0380 + 0.0001 * i,
                power_w=60,
            )
            for i in range(1, LAMPS + 1)
        ),
    ]
    store = Store.open(store_url)
    try:
        with store.engine.begin() as conn:
            asset_sql.apply_diff(conn, diff({}, [*city.assets, *live]), now=datetime.now(UTC))
    finally:
        store.close()
    return len(city.assets) + len(live)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cabinets", type=int, default=1500)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument(
        "--pause", type=float, default=1.0, help="seconds between a change seen and the next"
    )
    parser.add_argument(
        "--screenshot", type=Path, help="save the city's map here (docs/console-map.png)"
    )
    parser.add_argument(
        "--consoles", type=int, default=0, help="CPU with this many consoles open under ingest"
    )
    parser.add_argument("--ingest-load", type=int, default=20_000, help="updates/s")
    parser.add_argument(
        "--console-watch", type=int, default=20, help="cabinets each console follows (0: none)"
    )
    parser.add_argument(
        "--changing-states",
        action="store_true",
        help="with --consoles: every report flips its lamps between 50 and 100 %%, so every "
        "followed device changes at every report (its frames carry them all)",
    )
    args = parser.parse_args()
    if args.consoles:
        ingest = Path(__file__).resolve().parent / "ingest_curve.py"
        command = [sys.executable, str(ingest), "--loads", str(args.ingest_load)]
        command += ["--consoles", str(args.consoles), "--no-ceiling"]
        command += ["--console-watch", str(args.console_watch)]
        if args.changing_states:
            command.append("--changing-states")
        sys.exit(subprocess.call(command))  # noqa: ASYNC221 - nothing else runs yet
    if not os.path.exists(CHROMIUM):
        sys.exit(f"Chromium is not installed at {CHROMIUM}")
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ca = CertificateAuthority.init(work / "ca", now=datetime.now(UTC))
        async with started_console(work, ca) as console:
            table = "\n".join(
                f'[[lamps]]\nid = "lamp-{i:03d}"\nbackend = "simulated"\nnominal_power_w = 60'
                for i in range(1, LAMPS + 1)
            )
            config = await console.city.enrolled(LIVE, lamps=table)
            assets = register_city(console.city.config.store_url, args.cabinets)
            console.account("bench", "operator", ["*"])
            agent = Agent(config, SimulatedClock(start=datetime.now(UTC), speed=1.0))
            task = asyncio.create_task(agent.run())
            try:
                await asyncio.wait_for(agent.link.status.connected.wait(), 15)
                print(f"city: {args.cabinets} cabinets, {assets} assets in the register")
                async with async_playwright() as p:
                    browser = await p.chromium.launch(
                        executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
                    )
                    context = await browser.new_context(ignore_https_errors=True)
                    page = await context.new_page()
                    await page.goto(console.url + "/sign-in")
                    await page.fill("#name", "bench")
                    await page.fill("#password", PASSWORD)
                    await page.fill("#code", console.code("bench"))
                    await page.click("button[type=submit]")
                    await page.wait_for_selector("#fleet", timeout=120_000)
                    await load_figures(console.url, page, args.loads)
                    if args.screenshot:
                        await page.set_viewport_size({"width": 1280, "height": 800})
                        await page.goto(console.url + "/")
                        await page.wait_for_selector("#map[data-ready]", timeout=120_000)
                        await page.wait_for_selector("#map[data-communes]", timeout=30_000)
                        await asyncio.sleep(2.0)  # the clusters' last chunks
                        await page.locator("#map").screenshot(path=str(args.screenshot))
                    await live_figures(console, agent, page, args.changes, args.pause)
                    await browser.close()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def load_figures(url: str, page: object, loads: int) -> None:
    html, data, usable = [], [], []
    for _ in range(loads):
        start = time.perf_counter()
        answer = await page.request.get(url + "/")  # type: ignore[attr-defined]
        await answer.body()
        html.append(time.perf_counter() - start)
        start = time.perf_counter()
        answer = await page.request.get(url + "/city.json")  # type: ignore[attr-defined]
        await answer.body()
        data.append(time.perf_counter() - start)
        start = time.perf_counter()
        await page.goto(url + "/")  # type: ignore[attr-defined]
        await page.wait_for_selector("#map[data-ready]", timeout=120_000)  # type: ignore[attr-defined]
        usable.append(time.perf_counter() - start)
    placed = await page.get_attribute("#map", "data-ready")  # type: ignore[attr-defined]
    print(
        f"time to a usable map ({placed} assets placed): p50 {statistics.median(usable):.2f} s,"
        f" max {max(usable):.2f} s over {loads} loads"
    )
    print(
        f"  of which the fleet page's HTML: p50 {statistics.median(html):.2f} s; "
        f"/city.json: p50 {statistics.median(data):.2f} s"
    )


async def live_figures(
    console: object, agent: Agent, page: object, changes: int, pause: float
) -> None:
    url = console.url  # type: ignore[attr-defined]
    admin = AdminClient(console.city.admin)  # type: ignore[attr-defined]
    await page.goto(f"{url}/?focus={LIVE}")  # type: ignore[attr-defined]
    await page.wait_for_selector("#map[data-ready]", timeout=120_000)  # type: ignore[attr-defined]
    await page.wait_for_selector(f"#map[data-updated^='{LIVE}:']", timeout=30_000)  # type: ignore[attr-defined]
    await asyncio.sleep(1.0)
    to_map, to_api = [], []
    for n in range(changes):
        await asyncio.sleep(pause)
        level = 50 if n % 2 == 0 else 100
        before = await page.get_attribute("#map", "data-updated")  # type: ignore[attr-defined]
        await admin.send_command(
            control_pb2.SendCommandRequest(
                gateway_id=LIVE, command=lamp_override(level, 30, 60 + n, ["lamp-001"])
            )
        )
        for _ in range(10_000):  # the agent applies it (polled every 2 ms, 20 s at most)
            if agent.lamps[0].controller.level == level:
                break
            await asyncio.sleep(0.002)
        changed_at = time.time()
        stored_at = None
        deadline = changed_at + 15
        while time.time() < deadline:
            if stored_at is None:
                listed = await admin.list_devices(control_pb2.ListDevicesRequest(gateway_id=LIVE))
                if any(d.device_id == "lamp-001" and d.lamp.level == level for d in listed.devices):
                    stored_at = time.time()
            now = await page.get_attribute("#map", "data-updated")  # type: ignore[attr-defined]
            if now != before and stored_at is not None:
                to_map.append(int(now.split(":")[1]) / 1000 - changed_at)
                to_api.append(stored_at - changed_at)
                break
            await asyncio.sleep(0.02)
        else:
            print(f"change {n}: not on the map within 15 s")
    if to_map:
        print(
            f"lamp change on the agent -> its colour on the map: p50 "
            f"{percentile(to_map, 0.5) * 1000:.0f} ms, p99 {percentile(to_map, 0.99) * 1000:.0f}"
            f" ms over {len(to_map)} changes, {pause:g} s apart"
        )
        print(
            f"  peer: -> the admin API answering it (ListDevices polled every 20 ms): p50 "
            f"{percentile(to_api, 0.5) * 1000:.0f} ms, p99 {percentile(to_api, 0.99) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
